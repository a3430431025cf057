//! Reads a `labnet test` file and prints what each target would run, without running
//! anything: `cargo run -p labnet-matrix --example plan -- matrix/examples/cephfs.toml`.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/examples/cephfs.toml").into());
    for t in labnet_matrix::file::load(&file)? {
        println!(
            "{} (timeout {} s, lab {})",
            t.name,
            t.timeout.as_secs(),
            t.lab.as_deref().unwrap_or("the one given")
        );
        println!("  kernel {}", t.kernel.display());
        for a in &t.add {
            println!("  add {a}");
        }
        match &t.command {
            labnet_matrix::file::Command::Shell(c) => {
                for l in c.lines() {
                    println!("  | {l}");
                }
            }
            labnet_matrix::file::Command::Script(s) => println!("  script {}", s.display()),
        }
    }
    Ok(())
}

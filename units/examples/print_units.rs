//! The systemd units `labnet units install` would write for the embedded default lab.
//! `cargo run -p units --example print_units`
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let opts = units::Options {
        labnet_bin: "/usr/local/bin/labnet".into(),
        config: None,
    };
    for f in units::generate(&model::Lab::embedded_default(), &opts)? {
        println!("# {}\n{}", f.path.display(), f.text);
    }
    Ok(())
}

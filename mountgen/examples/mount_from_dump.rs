//! Prints the kernel mount for a `ceph mon dump` file, new and old syntax.
//!
//!     cargo run -p mountgen --example mount_from_dump -- \
//!         mountgen/tests/fixtures/ceph-samples/3mon-v2v1-127.0.0.1-vstartports.mon_dump.json fs a
use mountgen::plan::{self, Auth, MountRequest, Syntax};
use mountgen::{monmap, render};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [file, name, fs] = args.as_slice() else {
        return Err("usage: mount_from_dump DUMP NAME FS".into());
    };
    let map = monmap::parse(&std::fs::read_to_string(file)?, file)?;
    for syntax in [Syntax::New, Syntax::Old] {
        let mut req = MountRequest::new(name, Some(fs), syntax);
        req.auth = Auth::Key; // the secret would be in the kernel keyring, as kmount does it
        let p = plan::build(&map, &req)?;
        println!("{}", render::mount_command(&p, "/mnt", false));
    }
    Ok(())
}

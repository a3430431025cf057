//! What `labnet image build` would make, without building it: the recipe's cache key, the
//! mmdebstrap command, and every file labnet writes into the root.
//! `cargo run -p image --example recipe [SUITE] [EXTRA_PACKAGE...]`
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let suite = args.next().unwrap_or_else(|| "bookworm".into());
    let extra: Vec<String> = args.collect();
    let recipe = image::recipe::Recipe::new(&suite, "http://deb.debian.org/debian", &extra)?;
    println!("key {}", recipe.key());
    println!("tarball {}", recipe.tarball().display());
    let out = std::path::Path::new("root.tar");
    println!("mmdebstrap {}", recipe.mmdebstrap_args(out).join(" "));
    print!("{}", image::guest::render(&image::guest::entries()));
    Ok(())
}

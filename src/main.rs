//! The `warpwire` command line.

fn main() {
    println!(
        "warpwire {} ({})",
        env!("CARGO_PKG_VERSION"),
        env!("WARPWIRE_GIT_REV")
    );
}

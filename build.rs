//! Records the git revision and the compiled-in backends (from the
//! transport crate's table of backend facts) so that
//! `warpwire --version` and `warpwire probe` can report them.

use std::process::Command;

fn main() {
    let rev = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    let rev = if dirty { format!("{rev}-dirty") } else { rev };
    println!("cargo:rustc-env=WARPWIRE_GIT_REV={rev}");

    // The backends this build has, from the one table of backend facts:
    // those without a feature always, the others when theirs is on.
    let backends: Vec<&str> = warpwire_transport::BackendKind::ALL
        .iter()
        .filter(|k| match k.feature() {
            None => true,
            Some(f) => {
                let var = format!("CARGO_FEATURE_{}", f.to_ascii_uppercase().replace('-', "_"));
                std::env::var_os(var).is_some()
            }
        })
        .map(|k| k.name())
        .collect();
    println!("cargo:rustc-env=WARPWIRE_BACKENDS={}", backends.join(","));

    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/index");
    println!("cargo:rerun-if-changed=build.rs");
}

//! Records the git revision and the compiled-in backends so that
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

    // The kernel-TCP backends are always in; the bypass ones by feature.
    let mut backends = vec!["socket", "uring"];
    for (feature, name) in [("XDP", "xdp"), ("DPDK", "dpdk"), ("RDMA", "rdma")] {
        if std::env::var_os(format!("CARGO_FEATURE_{feature}")).is_some() {
            backends.push(name);
        }
    }
    println!("cargo:rustc-env=WARPWIRE_BACKENDS={}", backends.join(","));

    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/index");
    println!("cargo:rerun-if-changed=build.rs");
}

//! `warpwire-dpdk-probe [EAL ARGS...]`: [`warpwire_dpdk::probe`] on its
//! own, as `warpwire probe --dpdk-args "EAL ARGS"` runs it, without the
//! rest of warpwire.
//!
//! ```text
//! $ sudo warpwire-dpdk-probe --no-huge --no-pci -m 256 -l 0 --vdev=net_null0
//! available: EAL ok; port 0 net_null0 (net_null, MAC ..., MTU 1500, link up ...)
//! ```
//!
//! The probe re-executes the calling binary as its child (EAL initialises
//! once per process), so the binary must call
//! [`warpwire_dpdk::probe_child_hook`] first in `main`. A libtest binary
//! cannot do that, so the crate's tests drive the probe through this one.
//!
//! Prints `available: DETAIL` or `unavailable: DETAIL` and exits 0 or 1; 2
//! if the probe initialised EAL in this process instead of its child (a
//! bug: the process could no longer use DPDK).

use std::process::ExitCode;

fn main() -> ExitCode {
    // A probe child (this binary re-executed by `probe` below) runs the
    // probe here and exits.
    warpwire_dpdk::probe_child_hook();
    // `probe` takes the EAL arguments as one whitespace-separated string.
    let args = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    let r = warpwire_dpdk::probe(Some(&args));
    println!(
        "{}: {}",
        if r.available {
            "available"
        } else {
            "unavailable"
        },
        r.detail
    );
    if warpwire_dpdk::Eal::was_initialised() {
        eprintln!("warpwire-dpdk-probe: the probe initialised EAL in the calling process");
        return ExitCode::from(2);
    }
    if r.available {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

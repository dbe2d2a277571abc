//! Can this machine run the uring backend, and if not, why not.

use io_uring::opcode;

use crate::bufring::BufRing;

const ENOSYS: i32 = 38;
const EPERM: i32 = 1;
const ENOMEM: i32 = 12;

/// Probes io_uring: `Ok(detail)` when `io_uring_setup` works, the opcodes
/// the backend submits are supported and a provided buffer ring can be
/// registered; `Err(reason)` otherwise, with the reason `warpwire probe`
/// should print.
///
/// Multishot receive and SEND_ZC both arrived in Linux 6.0 and the opcode
/// probe cannot see multishot flags, so SEND_ZC (which this backend does
/// not use) stands in as the marker of a 6.0 kernel.
///
/// The ring and the buffer ring are made at the sizes a worker uses
/// (`UringConfig::default()`), so a locked-memory limit too small for a
/// worker fails here, where selection can still fall back, rather than
/// when `serve` starts its workers.
pub fn probe_detail() -> Result<String, String> {
    let cfg = crate::UringConfig::default();
    let (ring, _) = crate::build_ring(&cfg).map_err(|e| {
        setup_failure(
            e.raw_os_error(),
            std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").ok(),
        )
    })?;
    let mut probe = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| format!("{LACKS}: cannot probe opcodes ({e})"))?;
    let needed = [
        (opcode::AcceptMulti::CODE, "accept"),
        (opcode::RecvMulti::CODE, "recv"),
        (opcode::Send::CODE, "send"),
        (opcode::Connect::CODE, "connect"),
        (opcode::Shutdown::CODE, "shutdown"),
        (opcode::AsyncCancel::CODE, "async_cancel"),
        (opcode::Read::CODE, "read"),
        (opcode::SendZc::CODE, "send_zc (the 6.0 marker)"),
    ];
    let missing: Vec<&str> = needed
        .iter()
        .filter(|(code, _)| !probe.is_supported(*code))
        .map(|&(_, name)| name)
        .collect();
    if !missing.is_empty() {
        return Err(format!("{LACKS}: missing {}", missing.join(", ")));
    }
    BufRing::new(&ring.submitter(), 0, cfg.buffers, 64)
        .map_err(|e| format!("{LACKS}: cannot register a buffer ring ({e})"))?;
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    Ok(format!(
        "kernel TCP via io_uring (multishot accept and receive, provided buffer ring) on Linux {}",
        release.trim()
    ))
}

const LACKS: &str = "kernel lacks multishot accept/recv or buffer rings (needs 6.0+)";

/// Why `io_uring_setup` failed, from its errno and the
/// `kernel.io_uring_disabled` sysctl.
fn setup_failure(errno: Option<i32>, disabled: Option<String>) -> String {
    match errno {
        Some(ENOSYS) => "kernel without io_uring".into(),
        Some(EPERM) => match disabled.as_deref().map(str::trim) {
            Some(n) if n != "0" => format!("io_uring disabled: kernel.io_uring_disabled={n}"),
            _ => "io_uring not permitted (a seccomp filter, e.g. a container's default profile)"
                .into(),
        },
        Some(ENOMEM) => "io_uring_setup failed: out of locked memory (RLIMIT_MEMLOCK)".into(),
        Some(e) => format!(
            "io_uring_setup failed: {}",
            std::io::Error::from_raw_os_error(e)
        ),
        None => "io_uring_setup failed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons() {
        assert_eq!(setup_failure(Some(ENOSYS), None), "kernel without io_uring");
        assert_eq!(
            setup_failure(Some(EPERM), Some("2\n".into())),
            "io_uring disabled: kernel.io_uring_disabled=2"
        );
        assert!(setup_failure(Some(EPERM), Some("0\n".into())).contains("seccomp"));
        assert!(setup_failure(Some(EPERM), None).contains("seccomp"));
    }

    /// CI runs on a 6.x kernel with io_uring enabled: the probe must say so.
    #[test]
    fn available_here() {
        let detail = probe_detail().expect("io_uring available on the CI kernel");
        println!("{detail}");
        assert!(detail.contains("io_uring"), "{detail}");
    }
}

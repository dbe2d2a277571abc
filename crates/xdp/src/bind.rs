//! Binding the socket: the mode fallbacks (native before generic,
//! zero-copy before copy), the `EBUSY` retry, and removing a stale program
//! before the first bind.

use std::time::{Duration, Instant};

use tracing::{debug, info, warn};
use xsk_rs::config::{BindFlags, LibxdpFlags, QueueSize, SocketConfig, XdpFlags};
use xsk_rs::{CompQueue, FillQueue, RxQueue, Socket, TxQueue, Umem};

use crate::XdpError;
use crate::config::{Attach, XdpConfig, ZeroCopy};
use crate::device::XdpMode;
use crate::prog::{self, AttachMode};
use crate::sys;

/// How long `open` retries a bind that fails with `EBUSY`. A closed socket
/// releases its queue only after an RCU grace period (20-50 ms measured on
/// the CI machines), so reopening right after a close (a restart, a test)
/// meets `EBUSY`; a queue still busy after a second is held by a live
/// socket.
const BIND_BUSY_WAIT: Duration = Duration::from_secs(1);

/// The modes `cfg` allows, best first.
pub(crate) fn attempts(cfg: &XdpConfig) -> Vec<(AttachMode, bool)> {
    let attach: &[AttachMode] = match cfg.attach {
        Attach::Auto => &[AttachMode::Native, AttachMode::Generic],
        Attach::Native => &[AttachMode::Native],
        Attach::Generic => &[AttachMode::Generic],
    };
    let zero_copy: &[bool] = match cfg.zero_copy {
        ZeroCopy::Auto => &[true, false],
        ZeroCopy::Force => &[true],
        ZeroCopy::Off => &[false],
    };
    let mut out = Vec::new();
    for &a in attach {
        for &zc in zero_copy {
            // Generic mode works on SKBs: there is nothing to map.
            if !(zc && a == AttachMode::Generic) {
                out.push((a, zc));
            }
        }
    }
    out
}

/// What a successful `Socket::new` returns.
pub(crate) type Bound = (TxQueue, RxQueue, Option<(FillQueue, CompQueue)>);

/// Binds a socket on `cfg`'s queue in the best mode `cfg` allows (see
/// [`attempts`]); returns it with the attach mode that was asked for.
pub(crate) fn bind(cfg: &XdpConfig, umem: &Umem) -> Result<(Bound, AttachMode), XdpError> {
    let ifname = &cfg.ifname;
    let name = sys::c_ifname(ifname).map_err(|_| XdpError::InvalidInterfaceName {
        name: ifname.clone(),
    })?;
    let iface = xsk_rs::config::Interface::new(name);
    let modes = attempts(cfg);
    let mut busy_since = None;
    let mut last = None;
    for &(attach, zero_copy) in &modes {
        let bind_flags = BindFlags::XDP_USE_NEED_WAKEUP
            | if zero_copy {
                BindFlags::XDP_ZEROCOPY
            } else {
                BindFlags::XDP_COPY
            };
        let xdp_flags = match attach {
            AttachMode::Native => XdpFlags::XDP_FLAGS_DRV_MODE,
            _ => XdpFlags::XDP_FLAGS_SKB_MODE,
        };
        let sock_cfg = SocketConfig::builder()
            .rx_queue_size(ring_size("RX ring", cfg.rx_ring_size)?)
            .tx_queue_size(ring_size("TX ring", cfg.tx_ring_size)?)
            .bind_flags(bind_flags)
            .xdp_flags(xdp_flags)
            .libxdp_flags(LibxdpFlags::empty())
            .build();
        let mut backoff = Duration::from_millis(1);
        let created = loop {
            // SAFETY: this UMEM is new and used by this one socket only, so
            // the (interface, queue) pair is not already bound through it:
            // the shared-UMEM caveat (INHIBIT_PROG_LOAD) does not apply. A
            // failed attempt leaves the UMEM ready for a retry (xsk-rs).
            match unsafe { Socket::new(sock_cfg, umem, &iface, cfg.queue_id) } {
                Err(e) if errno_of(&e) == Some(libc::EBUSY) => {
                    let deadline = *busy_since.get_or_insert_with(Instant::now) + BIND_BUSY_WAIT;
                    if Instant::now() >= deadline {
                        break Err(e);
                    }
                    debug!(%ifname, queue = cfg.queue_id, "queue busy (a socket closed moments ago?); retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(50));
                }
                other => break other,
            }
        };
        match created {
            Ok(bound) => return Ok((bound, attach)),
            Err(e) => {
                let why =
                    std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string());
                info!(
                    %ifname, queue = cfg.queue_id, attach = %attach, zero_copy, error = %why,
                    "AF_XDP bind/attach refused in this mode"
                );
                last = Some((e, attach, zero_copy));
            }
        }
    }
    match last {
        Some((source, attach, zero_copy)) => Err(XdpError::Bind {
            ifname: ifname.clone(),
            queue_id: cfg.queue_id,
            attempts: modes.len(),
            last: XdpMode {
                attach,
                zero_copy,
                need_wakeup: true,
                busy_poll: cfg.busy_poll,
            },
            source,
        }),
        None => Err(XdpError::InvalidConfig {
            field: "zero_copy",
            reason: "and attach leave no mode to try",
        }),
    }
}

/// The errno behind an xsk-rs socket error.
fn errno_of(e: &xsk_rs::socket::SocketCreateError) -> Option<i32> {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .and_then(std::io::Error::raw_os_error)
}

pub(crate) fn ring_size(ring: &'static str, size: u32) -> Result<QueueSize, XdpError> {
    QueueSize::new(size).map_err(|source| XdpError::RingSize { ring, source })
}

/// Removes an XDP program found on the interface before the first bind:
/// a stale AF_XDP program always, a foreign one only when allowed.
pub(crate) fn remove_stale_program(cfg: &XdpConfig, ifindex: u32) -> Result<(), XdpError> {
    let ifname = &cfg.ifname;
    let found = prog::program_on(ifindex).map_err(|source| XdpError::ProgramQuery {
        ifname: ifname.clone(),
        source,
    })?;
    let Some(p) = found else {
        return Ok(());
    };
    let name = p.name.clone().unwrap_or_else(|| "?".to_owned());
    if p.af_xdp {
        warn!(
            %ifname, prog_id = p.id, prog = %name, mode = %p.mode,
            "removing a stale AF_XDP program (left by a run that did not close its device)"
        );
    } else if cfg.replace_foreign_program {
        warn!(%ifname, prog_id = p.id, prog = %name, mode = %p.mode, "replacing a foreign XDP program as configured");
    } else {
        return Err(XdpError::ForeignProgram {
            ifname: ifname.clone(),
            id: p.id,
            name,
        });
    }
    prog::detach(ifindex, &p).map_err(|source| XdpError::ProgramDetach {
        ifname: ifname.clone(),
        id: p.id,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_go_native_before_generic_and_zero_copy_before_copy() {
        let mut c = XdpConfig::new("eth0", 0);
        assert_eq!(
            attempts(&c),
            vec![
                (AttachMode::Native, true),
                (AttachMode::Native, false),
                (AttachMode::Generic, false)
            ]
        );
        c.zero_copy = ZeroCopy::Off;
        assert_eq!(
            attempts(&c),
            vec![(AttachMode::Native, false), (AttachMode::Generic, false)]
        );
        c.zero_copy = ZeroCopy::Force;
        assert_eq!(attempts(&c), vec![(AttachMode::Native, true)]);
        c.zero_copy = ZeroCopy::Auto;
        c.attach = Attach::Generic;
        assert_eq!(attempts(&c), vec![(AttachMode::Generic, false)]);
    }
}

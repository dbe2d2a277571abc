//! [`Eal`]: DPDK's Environment Abstraction Layer, initialised once per
//! process.

use std::ffi::{CStr, CString, c_char};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tracing::{debug, info, warn};
use warpwire_dpdk_sys as sys;

use crate::error::{DpdkError, RteErrno};

/// EAL has never been initialised in this process.
const NEVER: u8 = 0;
/// An initialisation is running or succeeded and is live.
const LIVE: u8 = 1;
/// EAL was initialised (or tried and failed) and cleaned up: DPDK cannot
/// initialise again in this process.
const SPENT: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(NEVER);
/// The live EAL, for [`Eal::current`] (probe reports ports of a live EAL
/// instead of trying to initialise a second one).
static CURRENT: Mutex<Weak<EalInner>> = Mutex::new(Weak::new());

/// DPDK's EAL, initialised for this process.
///
/// A cheap handle (an `Arc`): mempools, ports and devices each keep one, so
/// `rte_eal_cleanup` runs only after the last of them is gone, whatever
/// order the caller drops things in. DPDK allows one initialisation per
/// process, ever: a second [`Eal::init`] is [`DpdkError::AlreadyInitialised`]
/// (before or after cleanup), never undefined behaviour.
#[derive(Clone)]
pub struct Eal {
    inner: Arc<EalInner>,
}

struct EalInner {
    /// `rte_eal_get_runtime_dir()`: `/var/run/dpdk/<prefix>` for root.
    runtime_dir: PathBuf,
    /// The `--file-prefix` given, if any. The runtime directory is removed
    /// at cleanup only then: the default prefix (`rte`) may be shared with
    /// another DPDK process.
    prefix: Option<String>,
    /// Arguments after the EAL ones (after `--`).
    app_args: Vec<String>,
}

impl std::fmt::Debug for Eal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Eal")
            .field("runtime_dir", &self.inner.runtime_dir)
            .field("prefix", &self.inner.prefix)
            .finish()
    }
}

impl Eal {
    /// Initialises EAL with argv-style `args` (`args[0]` is the program
    /// name, as in `main`'s argv), e.g. `["warpwire", "--no-huge",
    /// "--no-pci", "-m", "256", "--no-shconf", "--file-prefix", "ww1",
    /// "-l", "0", "--vdev=net_null0"]`.
    ///
    /// Use a unique `--file-prefix` per process: at cleanup this removes
    /// `<runtime dir>/<prefix>`. Without hugepages pass `--no-huge` (and
    /// not `--in-memory`, which EAL refuses together with it). The calling
    /// thread becomes EAL's main lcore.
    ///
    /// EAL pins the calling thread to the main lcore's CPUs, and every
    /// thread it spawns afterwards would inherit that: application workers
    /// and file sinks would share one CPU with a busy-polling worker (a
    /// memif transfer into `--data-dir` ran 14x slower). So the thread's
    /// CPU set from before is restored here; the threads that poll pin
    /// themselves ([`Eal::register_thread`], [`Eal::pin_to_main_lcore`]).
    ///
    /// # Errors
    /// [`DpdkError::AlreadyInitialised`] on any second call in the process;
    /// [`DpdkError::EalInit`] when EAL refuses the arguments or the
    /// environment; [`DpdkError::NulInArgument`].
    pub fn init(args: &[String]) -> Result<Eal, DpdkError> {
        let cargs = args
            .iter()
            .map(|a| {
                CString::new(a.as_str()).map_err(|_| DpdkError::NulInArgument { arg: a.clone() })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if STATE
            .compare_exchange(NEVER, LIVE, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(DpdkError::AlreadyInitialised);
        }
        let prefix = file_prefix(args);
        // EAL keeps pointers into argv (it permutes the array and some
        // option values are referenced later), so the strings live for
        // the rest of the process: leaked once, bounded by the one-init rule.
        let cargs: &'static [CString] = Vec::leak(cargs);
        let argv: &'static mut [*mut c_char] = Vec::leak(
            cargs
                .iter()
                .map(|c| c.as_ptr().cast_mut())
                .chain(std::iter::once(std::ptr::null_mut()))
                .collect(),
        );
        let argc = i32::try_from(cargs.len()).unwrap_or(i32::MAX);
        let t0 = std::time::Instant::now();
        let affinity = thread_affinity();
        // SAFETY: argv holds argc valid NUL-terminated strings followed by
        // NULL, alive for the rest of the process; STATE guarantees this is
        // the only rte_eal_init call in the process.
        let rc = unsafe { sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        if rc < 0 {
            let err = RteErrno::last();
            STATE.store(SPENT, Ordering::Release);
            // EAL may have created its runtime directory before failing.
            if let Some(p) = &prefix {
                for base in runtime_bases() {
                    let _ = std::fs::remove_dir_all(base.join(p));
                }
            }
            return Err(DpdkError::EalInit(err));
        }
        if let Some(set) = &affinity
            && let Err(e) = set_thread_affinity(set)
        {
            warn!(error = %e, "cannot restore the thread's CPU set after EAL pinned it");
        }
        let consumed = usize::try_from(rc).unwrap_or(0);
        let app_args = args
            .iter()
            .skip(consumed.max(1))
            .skip_while(|a| a.as_str() == "--")
            .cloned()
            .collect();
        // SAFETY: EAL is initialised; the returned string is static for the
        // life of EAL and copied here.
        let runtime_dir = unsafe {
            let p = sys::rte_eal_get_runtime_dir();
            if p.is_null() {
                PathBuf::new()
            } else {
                PathBuf::from(CStr::from_ptr(p).to_string_lossy().into_owned())
            }
        };
        info!(elapsed = ?t0.elapsed(), runtime_dir = %runtime_dir.display(), "DPDK EAL initialised");
        let inner = Arc::new(EalInner {
            runtime_dir,
            prefix,
            app_args,
        });
        *CURRENT.lock().unwrap_or_else(PoisonError::into_inner) = Arc::downgrade(&inner);
        Ok(Eal { inner })
    }

    /// The live EAL of this process, if one is initialised and not yet
    /// cleaned up.
    pub fn current() -> Option<Eal> {
        CURRENT
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .upgrade()
            .map(|inner| Eal { inner })
    }

    /// Whether EAL was ever initialised (or tried) in this process: if so,
    /// [`Eal::init`] will refuse.
    pub fn was_initialised() -> bool {
        STATE.load(Ordering::Acquire) != NEVER
    }

    /// The arguments after EAL's own (after `--`).
    pub fn app_args(&self) -> &[String] {
        &self.inner.app_args
    }

    /// EAL's runtime directory (`/var/run/dpdk/<prefix>` for root).
    pub fn runtime_dir(&self) -> &std::path::Path {
        &self.inner.runtime_dir
    }

    /// Gives up this handle. EAL is cleaned up (`rte_eal_cleanup`, runtime
    /// directory removed) when the last handle, mempool, port and device is
    /// gone; the process can never initialise EAL again.
    pub fn cleanup(self) {
        drop(self);
    }
}

impl Drop for EalInner {
    fn drop(&mut self) {
        // SAFETY: the last handle is gone, and every port, mempool and
        // device holds one, so nothing uses EAL any more.
        let rc = unsafe { sys::rte_eal_cleanup() };
        if rc != 0 {
            warn!(error = %RteErrno::from_code(rc), "rte_eal_cleanup failed");
        }
        STATE.store(SPENT, Ordering::Release);
        if let Some(prefix) = &self.prefix
            && self
                .runtime_dir
                .file_name()
                .is_some_and(|n| n == prefix.as_str())
        {
            match std::fs::remove_dir_all(&self.runtime_dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    warn!(dir = %self.runtime_dir.display(), error = %e, "cannot remove EAL's runtime directory")
                }
            }
        }
        debug!("DPDK EAL cleaned up");
    }
}

/// The `--file-prefix` value in EAL arguments (`--file-prefix x` or
/// `--file-prefix=x`), stopping at `--`.
pub(crate) fn file_prefix(args: &[String]) -> Option<String> {
    let mut it = args.iter().take_while(|a| a.as_str() != "--");
    while let Some(a) = it.next() {
        if a == "--file-prefix" {
            return it.next().cloned();
        }
        if let Some(v) = a.strip_prefix("--file-prefix=") {
            return Some(v.to_owned());
        }
    }
    None
}

/// Where EAL puts runtime directories: `/var/run/dpdk` for root,
/// `$XDG_RUNTIME_DIR/dpdk` or `/tmp/dpdk` otherwise.
fn runtime_bases() -> Vec<PathBuf> {
    let mut v = vec![PathBuf::from("/var/run/dpdk")];
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR") {
        v.push(PathBuf::from(x).join("dpdk"));
    }
    v.push(PathBuf::from("/tmp/dpdk"));
    v
}

/// The calling thread's CPU set, or `None` if it cannot be read.
fn thread_affinity() -> Option<libc::cpu_set_t> {
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is an empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed; pid
    // 0 is the calling thread.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    (rc == 0).then_some(set)
}

/// Sets the calling thread's CPU set (not DPDK's record of any lcore's).
fn set_thread_affinity(set: &libc::cpu_set_t) -> std::io::Result<()> {
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is the
    // calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(set), set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn file_prefix_is_found_in_both_spellings_and_not_after_the_separator() {
        assert_eq!(
            file_prefix(&s(&["p", "--no-huge", "--file-prefix", "ww1"])),
            Some("ww1".to_owned())
        );
        assert_eq!(
            file_prefix(&s(&["p", "--file-prefix=ww2"])),
            Some("ww2".to_owned())
        );
        assert_eq!(file_prefix(&s(&["p", "--", "--file-prefix=app"])), None);
        assert_eq!(file_prefix(&s(&["p"])), None);
    }

    #[test]
    fn nul_in_an_argument_is_an_error_and_does_not_use_up_the_init() {
        let e = Eal::init(&s(&["p", "bad\0arg"])).unwrap_err();
        assert!(matches!(e, DpdkError::NulInArgument { .. }), "{e:?}");
        assert!(!Eal::was_initialised());
    }
}

//! Routes libbpf's and libxdp's own messages into `tracing` (target
//! `warpwire_xdp::native`) instead of stderr: warnings at INFO (the errors
//! that matter come back as [`XdpError`](crate::XdpError)s; most warnings
//! are context such as "no bpffs, loading the program without the
//! dispatcher"), info at DEBUG, debug at TRACE.
//!
//! Formatting a C `va_list` needs its ABI, so this is done on x86-64 only;
//! elsewhere the libraries keep printing to stderr.

use std::sync::Once;

static INSTALL: Once = Once::new();

/// Installs the print hooks once per process (both libraries keep one
/// process-wide hook).
pub(crate) fn install() {
    INSTALL.call_once(imp::install);
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use std::ffi::{CStr, c_char, c_int, c_uint};

    use libxdp_sys::__va_list_tag;

    /// libbpf's `libbpf_print_fn_t` (libbpf.h), with `va_list` as the
    /// x86-64 ABI passes it: a pointer to its one `__va_list_tag`.
    type PrintFn = Option<unsafe extern "C" fn(c_uint, *const c_char, *mut __va_list_tag) -> c_int>;

    unsafe extern "C" {
        /// libbpf.h; in the static libbpf that libxdp-sys links.
        fn libbpf_set_print(f: PrintFn) -> PrintFn;
        /// stdio.h.
        fn vsnprintf(
            buf: *mut c_char,
            n: usize,
            fmt: *const c_char,
            ap: *mut __va_list_tag,
        ) -> c_int;
    }

    /// Longest message kept; longer ones are cut (vsnprintf truncates).
    const MAX_MESSAGE: usize = 512;

    pub(super) fn install() {
        // SAFETY: both setters only store the function pointer; the
        // callbacks below match the libraries' print-function types.
        unsafe {
            libxdp_sys::libxdp_set_print(Some(libxdp_print));
            libbpf_set_print(Some(libbpf_print));
        }
    }

    unsafe extern "C" fn libbpf_print(
        level: c_uint,
        fmt: *const c_char,
        ap: *mut __va_list_tag,
    ) -> c_int {
        // SAFETY: libbpf passes a valid format string and its arguments.
        unsafe { forward("libbpf", level, fmt, ap) }
    }

    unsafe extern "C" fn libxdp_print(
        level: c_uint,
        fmt: *const c_char,
        ap: *mut __va_list_tag,
    ) -> c_int {
        // SAFETY: libxdp passes a valid format string and its arguments.
        unsafe { forward("libxdp", level, fmt, ap) }
    }

    /// # Safety
    ///
    /// `fmt` and `ap` must be a printf format string and the matching
    /// argument list, as the libraries' print hooks receive them.
    unsafe fn forward(
        lib: &'static str,
        level: c_uint,
        fmt: *const c_char,
        ap: *mut __va_list_tag,
    ) -> c_int {
        if fmt.is_null() {
            return 0;
        }
        let mut buf = [0 as c_char; MAX_MESSAGE];
        // SAFETY: `buf` is writable for its length, which is passed;
        // `fmt`/`ap` are valid per this function's contract.
        let n = unsafe { vsnprintf(buf.as_mut_ptr(), buf.len(), fmt, ap) };
        if n < 0 {
            return 0;
        }
        // SAFETY: vsnprintf NUL-terminates within `buf`.
        let msg = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy();
        let msg = msg.trim_end();
        // Never unwind into C (a subscriber could panic).
        let _ = std::panic::catch_unwind(|| match level {
            0 => tracing::info!(target: "warpwire_xdp::native", lib, "{msg}"),
            1 => tracing::debug!(target: "warpwire_xdp::native", lib, "{msg}"),
            _ => tracing::trace!(target: "warpwire_xdp::native", lib, "{msg}"),
        });
        n
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod imp {
    pub(super) fn install() {}
}

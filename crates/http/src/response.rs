//! Writing responses: the status line, the headers every response carries
//! (Server, Date, Content-Length, Connection), the body. And the Date
//! header's text, formatted once a second per worker.

use std::time::{Duration, Instant, SystemTime};

use bytes::{BufMut, BytesMut};

/// An HTTP status code with its reason phrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u16, pub &'static str);

impl Status {
    /// 100 Continue.
    pub const CONTINUE: Self = Self(100, "Continue");
    /// 200 OK.
    pub const OK: Self = Self(200, "OK");
    /// 204 No Content.
    pub const NO_CONTENT: Self = Self(204, "No Content");
    /// 400 Bad Request.
    pub const BAD_REQUEST: Self = Self(400, "Bad Request");
    /// 403 Forbidden.
    pub const FORBIDDEN: Self = Self(403, "Forbidden");
    /// 404 Not Found.
    pub const NOT_FOUND: Self = Self(404, "Not Found");
    /// 405 Method Not Allowed.
    pub const METHOD_NOT_ALLOWED: Self = Self(405, "Method Not Allowed");
    /// 408 Request Timeout.
    pub const REQUEST_TIMEOUT: Self = Self(408, "Request Timeout");
    /// 413 Content Too Large.
    pub const PAYLOAD_TOO_LARGE: Self = Self(413, "Content Too Large");
    /// 414 URI Too Long.
    pub const URI_TOO_LONG: Self = Self(414, "URI Too Long");
    /// 417 Expectation Failed.
    pub const EXPECTATION_FAILED: Self = Self(417, "Expectation Failed");
    /// 431 Request Header Fields Too Large.
    pub const HEADERS_TOO_LARGE: Self = Self(431, "Request Header Fields Too Large");
    /// 500 Internal Server Error.
    pub const INTERNAL: Self = Self(500, "Internal Server Error");
    /// 501 Not Implemented.
    pub const NOT_IMPLEMENTED: Self = Self(501, "Not Implemented");
    /// 503 Service Unavailable.
    pub const UNAVAILABLE: Self = Self(503, "Service Unavailable");
    /// 505 HTTP Version Not Supported.
    pub const VERSION_NOT_SUPPORTED: Self = Self(505, "HTTP Version Not Supported");
}

/// The Date header's value, reformatted when the second changes. Time
/// comes in as the worker's `now`; the wall clock is read once, when the
/// worker starts, and advanced by `now` from there (the protocol reads no
/// clock per request).
#[derive(Debug)]
pub(crate) struct DateCache {
    anchor: Instant,
    anchor_wall: SystemTime,
    text: String,
    valid_until: Instant,
}

impl DateCache {
    pub fn new(now: Instant) -> Self {
        let mut d = Self {
            anchor: now,
            anchor_wall: SystemTime::now(),
            text: String::new(),
            valid_until: now,
        };
        d.refresh(now);
        d
    }

    fn refresh(&mut self, now: Instant) {
        let wall = self.anchor_wall + now.saturating_duration_since(self.anchor);
        self.text = httpdate::fmt_http_date(wall);
        let into_second = wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(Duration::ZERO, |d| {
                Duration::from_nanos(u64::from(d.subsec_nanos()))
            });
        self.valid_until = now + (Duration::from_secs(1) - into_second);
    }

    /// The value for a response written at `now`.
    pub fn get(&mut self, now: Instant) -> &str {
        if now >= self.valid_until {
            self.refresh(now);
        }
        &self.text
    }
}

/// How the connection goes on after a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Persist {
    /// HTTP/1.1 keep-alive: nothing to say.
    Keep,
    /// HTTP/1.0 keep-alive: say so.
    Keep10,
    /// `Connection: close`, then close.
    Close,
}

/// Writes one response. `head_only`: HEAD, the headers of the GET
/// response without its body.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write(
    out: &mut BytesMut,
    date: &str,
    status: Status,
    content_type: Option<&str>,
    extra: &[(&str, &str)],
    body: &[u8],
    head_only: bool,
    persist: Persist,
) {
    out.reserve(160 + body.len());
    out.put_slice(b"HTTP/1.1 ");
    put_u64(out, u64::from(status.0));
    out.put_u8(b' ');
    out.put_slice(status.1.as_bytes());
    out.put_slice(b"\r\nServer: warpwire\r\nDate: ");
    out.put_slice(date.as_bytes());
    out.put_slice(b"\r\nContent-Length: ");
    put_u64(out, body.len() as u64);
    if let Some(ct) = content_type {
        out.put_slice(b"\r\nContent-Type: ");
        out.put_slice(ct.as_bytes());
    }
    for (k, v) in extra {
        out.put_slice(b"\r\n");
        out.put_slice(k.as_bytes());
        out.put_slice(b": ");
        out.put_slice(v.as_bytes());
    }
    match persist {
        Persist::Keep => {}
        Persist::Keep10 => out.put_slice(b"\r\nConnection: keep-alive"),
        Persist::Close => out.put_slice(b"\r\nConnection: close"),
    }
    out.put_slice(b"\r\n\r\n");
    if !head_only {
        out.put_slice(body);
    }
}

/// An error response: the status as a one-line text body, then close.
pub(crate) fn error(out: &mut BytesMut, date: &str, status: Status) {
    let body = format!("{} {}\n", status.0, status.1);
    write(
        out,
        date,
        status,
        Some("text/plain"),
        &[],
        body.as_bytes(),
        false,
        Persist::Close,
    );
}

fn put_u64(out: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_is_well_formed() {
        let mut out = BytesMut::new();
        write(
            &mut out,
            "Mon, 30 Nov 2026 22:00:00 GMT",
            Status::OK,
            Some("text/plain"),
            &[("Allow", "GET")],
            b"pong\n",
            false,
            Persist::Keep10,
        );
        assert_eq!(
            &out[..],
            b"HTTP/1.1 200 OK\r\nServer: warpwire\r\nDate: Mon, 30 Nov 2026 22:00:00 GMT\r\n\
              Content-Length: 5\r\nContent-Type: text/plain\r\nAllow: GET\r\n\
              Connection: keep-alive\r\n\r\npong\n"
        );
        let mut out = BytesMut::new();
        write(
            &mut out,
            "d",
            Status::OK,
            None,
            &[],
            b"body",
            true,
            Persist::Keep,
        );
        assert!(
            out.ends_with(b"Content-Length: 4\r\n\r\n"),
            "HEAD: length, no body"
        );
    }

    #[test]
    fn the_date_changes_with_the_second_only() {
        let t0 = Instant::now();
        let mut d = DateCache::new(t0);
        let first = d.get(t0).to_owned();
        assert_eq!(first.len(), 29, "{first}");
        assert!(first.ends_with(" GMT"));
        let later = d.get(t0 + Duration::from_secs(2)).to_owned();
        assert_ne!(first, later);
        assert!(httpdate::parse_http_date(&later).is_ok());
    }
}

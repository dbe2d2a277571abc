//! Request framing: where a request's head ends, what its headers say about
//! its body (RFC 9112 §6), and the chunked decoder. Sans-IO and
//! allocation-free: it works on the connection's input buffer in place.
//!
//! The rules that stop request smuggling (a request whose end two parsers
//! could disagree on) are all answered 400 and a close: Content-Length
//! together with Transfer-Encoding, Content-Length values that differ or
//! are not plain digits, a Transfer-Encoding whose last coding is not
//! `chunked`, bare LF or other whitespace where CRLF belongs in chunk
//! framing, and obsolete line folding (httparse refuses it in requests).

use httparse::Header;

use crate::Status;

/// How the body of a request is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body.
    None,
    /// `Content-Length` bytes.
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// What the head says, beyond routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeadInfo {
    pub framing: Framing,
    /// The connection stays open after the response.
    pub keep_alive: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request with a body.
    pub expect_continue: bool,
    /// HTTP/1.0 (the response says `Connection: keep-alive` when it keeps).
    pub http10: bool,
}

/// Whether `value`, a comma-separated header list, holds `token`
/// (case-insensitive).
pub(crate) fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Reads the headers that decide framing and persistence; an error is the
/// status to answer (then close).
pub(crate) fn head_info(
    version: u8,
    headers: &[Header<'_>],
    max_body: usize,
) -> Result<HeadInfo, Status> {
    let http10 = version == 0;
    let mut length: Option<usize> = None;
    let mut te: Option<&[u8]> = None;
    let mut hosts = 0;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut expect: Option<&[u8]> = None;
    for h in headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            // A list of equal values is one value (RFC 9110 §8.6); anything
            // else (differing values, signs, spaces inside) is refused.
            for v in h.value.split(|&b| b == b',') {
                let v = v.trim_ascii();
                if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
                    return Err(Status::BAD_REQUEST);
                }
                let n: usize = std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or(Status::BAD_REQUEST)?;
                match length {
                    Some(l) if l != n => return Err(Status::BAD_REQUEST),
                    _ => length = Some(n),
                }
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if te.is_some() {
                // Two Transfer-Encoding headers: a list split in two is
                // legal but nothing sends it; refusing is the safe reading.
                return Err(Status::BAD_REQUEST);
            }
            te = Some(h.value);
        } else if name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case("connection") {
            close |= has_token(h.value, "close");
            keep_alive_token |= has_token(h.value, "keep-alive");
        } else if name.eq_ignore_ascii_case("expect") {
            expect = Some(h.value);
        }
    }
    // RFC 9112 §3.2: an HTTP/1.1 request without exactly one Host is 400.
    if (!http10 && hosts != 1) || hosts > 1 {
        return Err(Status::BAD_REQUEST);
    }
    let framing = match (te, length) {
        (Some(_), Some(_)) => return Err(Status::BAD_REQUEST),
        (Some(_), None) if http10 => return Err(Status::BAD_REQUEST),
        (Some(te), None) => {
            let codings: Vec<&[u8]> = te.split(|&b| b == b',').map(<[u8]>::trim_ascii).collect();
            match codings.as_slice() {
                [c] if c.eq_ignore_ascii_case(b"chunked") => Framing::Chunked,
                // The last coding is not chunked: the length is unknowable.
                [.., last] if !last.eq_ignore_ascii_case(b"chunked") => {
                    return Err(Status::BAD_REQUEST);
                }
                // gzip, chunked and the like: no content codings here.
                _ => return Err(Status::NOT_IMPLEMENTED),
            }
        }
        (None, Some(0)) | (None, None) => Framing::None,
        (None, Some(n)) if n > max_body => return Err(Status::PAYLOAD_TOO_LARGE),
        (None, Some(n)) => Framing::Length(n),
    };
    let expect_continue = match expect {
        None => false,
        Some(v) if v.trim_ascii().eq_ignore_ascii_case(b"100-continue") => {
            !http10 && framing != Framing::None
        }
        Some(_) => return Err(Status::EXPECTATION_FAILED),
    };
    Ok(HeadInfo {
        framing,
        keep_alive: if http10 { keep_alive_token } else { !close },
        expect_continue,
        http10,
    })
}

/// Where the chunked decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// At a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(usize),
    /// After a chunk's data: CRLF expected.
    DataEnd,
    /// After the last (zero) chunk: trailer lines until an empty one.
    Trailers,
}

/// A chunked body decoded in place: the data of each chunk is moved down
/// to `body_end`, right after the head, so the decoded body is contiguous
/// in the input buffer and nothing is copied elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Chunked {
    /// End of the decoded body (buffer offset).
    pub body_end: usize,
    /// First raw byte not yet decoded (buffer offset).
    pub scan: usize,
    state: ChunkState,
    /// Trailer bytes seen (bounded like a head).
    trailer: usize,
}

/// What one decoding pass found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChunkProgress {
    /// More input needed.
    More,
    /// The body is complete; the request ends at `scan`.
    Done,
}

impl Chunked {
    /// A decoder whose body starts at `start` (the end of the head).
    pub fn new(start: usize) -> Self {
        Self {
            body_end: start,
            scan: start,
            state: ChunkState::Size,
            trailer: 0,
        }
    }

    /// Decodes what `buf[..end]` holds past `scan`. Errors are the status
    /// to answer: 400 for broken framing, 413 past `max_body`, 431 for
    /// trailers past `max_trailer`.
    pub fn advance(
        &mut self,
        buf: &mut [u8],
        end: usize,
        body_start: usize,
        max_body: usize,
        max_trailer: usize,
    ) -> Result<ChunkProgress, Status> {
        loop {
            match self.state {
                ChunkState::Size => {
                    let avail = &buf[self.scan..end];
                    match httparse::parse_chunk_size(avail) {
                        Ok(httparse::Status::Complete((used, size))) => {
                            self.scan += used;
                            let size =
                                usize::try_from(size).map_err(|_| Status::PAYLOAD_TOO_LARGE)?;
                            if size == 0 {
                                self.state = ChunkState::Trailers;
                            } else if (self.body_end - body_start).saturating_add(size) > max_body {
                                return Err(Status::PAYLOAD_TOO_LARGE);
                            } else {
                                self.state = ChunkState::Data(size);
                            }
                        }
                        Ok(httparse::Status::Partial) => {
                            // A size line (with extensions) has no business
                            // being long: 1 KiB is generous.
                            if avail.len() > 1024 {
                                return Err(Status::BAD_REQUEST);
                            }
                            return Ok(ChunkProgress::More);
                        }
                        Err(_) => return Err(Status::BAD_REQUEST),
                    }
                }
                ChunkState::Data(left) => {
                    let n = left.min(end - self.scan);
                    if n == 0 {
                        return Ok(ChunkProgress::More);
                    }
                    buf.copy_within(self.scan..self.scan + n, self.body_end);
                    self.body_end += n;
                    self.scan += n;
                    self.state = if n == left {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - n)
                    };
                }
                ChunkState::DataEnd => {
                    if end - self.scan < 2 {
                        return Ok(ChunkProgress::More);
                    }
                    if &buf[self.scan..self.scan + 2] != b"\r\n" {
                        return Err(Status::BAD_REQUEST);
                    }
                    self.scan += 2;
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    // Trailer fields are read and dropped (none is acted on).
                    let avail = &buf[self.scan..end];
                    let Some(nl) = avail.iter().position(|&b| b == b'\n') else {
                        if self.trailer + avail.len() > max_trailer {
                            return Err(Status::HEADERS_TOO_LARGE);
                        }
                        return Ok(ChunkProgress::More);
                    };
                    if nl == 0 || avail[nl - 1] != b'\r' {
                        return Err(Status::BAD_REQUEST);
                    }
                    self.scan += nl + 1;
                    self.trailer += nl + 1;
                    if self.trailer > max_trailer {
                        return Err(Status::HEADERS_TOO_LARGE);
                    }
                    if nl == 1 {
                        return Ok(ChunkProgress::Done);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<'a>(name: &'a str, value: &'a str) -> Header<'a> {
        Header {
            name,
            value: value.as_bytes(),
        }
    }

    #[test]
    fn framing_rules() {
        let host = h("Host", "x");
        let f = |hs: &[Header<'_>]| head_info(1, hs, 100).map(|i| i.framing);
        assert_eq!(f(&[host]), Ok(Framing::None));
        assert_eq!(f(&[host, h("Content-Length", "5")]), Ok(Framing::Length(5)));
        assert_eq!(
            f(&[host, h("Content-Length", "5, 5")]),
            Ok(Framing::Length(5))
        );
        for bad in [
            "5, 6",
            "+5",
            "-1",
            "5 5",
            "",
            "0x10",
            "99999999999999999999",
        ] {
            assert_eq!(
                f(&[host, h("Content-Length", bad)]),
                Err(Status::BAD_REQUEST),
                "{bad}"
            );
        }
        assert_eq!(
            f(&[host, h("Content-Length", "5"), h("Content-Length", "6")]),
            Err(Status::BAD_REQUEST)
        );
        assert_eq!(
            f(&[host, h("Content-Length", "101")]),
            Err(Status::PAYLOAD_TOO_LARGE)
        );
        assert_eq!(
            f(&[host, h("Transfer-Encoding", "chunked")]),
            Ok(Framing::Chunked)
        );
        assert_eq!(
            f(&[host, h("Transfer-Encoding", "Chunked ")]),
            Ok(Framing::Chunked)
        );
        assert_eq!(
            f(&[
                host,
                h("Transfer-Encoding", "chunked"),
                h("Content-Length", "3")
            ]),
            Err(Status::BAD_REQUEST)
        );
        assert_eq!(
            f(&[host, h("Transfer-Encoding", "chunked, gzip")]),
            Err(Status::BAD_REQUEST)
        );
        assert_eq!(
            f(&[host, h("Transfer-Encoding", "gzip, chunked")]),
            Err(Status::NOT_IMPLEMENTED)
        );
        assert_eq!(f(&[]), Err(Status::BAD_REQUEST), "no Host");
        assert_eq!(f(&[host, host]), Err(Status::BAD_REQUEST), "two Hosts");
        // HTTP/1.0: no Host needed, no chunked.
        assert!(head_info(0, &[], 100).is_ok());
        assert_eq!(
            head_info(0, &[h("Transfer-Encoding", "chunked")], 100),
            Err(Status::BAD_REQUEST)
        );
    }

    #[test]
    fn persistence_and_expect() {
        let host = h("Host", "x");
        assert!(head_info(1, &[host], 9).unwrap().keep_alive);
        assert!(
            !head_info(1, &[host, h("Connection", "Keep-Alive, close")], 9)
                .unwrap()
                .keep_alive
        );
        assert!(!head_info(0, &[], 9).unwrap().keep_alive);
        assert!(
            head_info(0, &[h("connection", "keep-alive")], 9)
                .unwrap()
                .keep_alive
        );
        let cl = h("Content-Length", "3");
        assert!(
            head_info(1, &[host, cl, h("Expect", "100-Continue")], 9)
                .unwrap()
                .expect_continue
        );
        assert!(
            !head_info(1, &[host, h("Expect", "100-continue")], 9)
                .unwrap()
                .expect_continue,
            "nothing to continue to without a body"
        );
        assert_eq!(
            head_info(1, &[host, cl, h("Expect", "200-ok")], 9),
            Err(Status::EXPECTATION_FAILED)
        );
    }

    fn dechunk(raw: &[u8], max_body: usize) -> Result<(Vec<u8>, usize), Status> {
        let mut buf = raw.to_vec();
        let mut c = Chunked::new(0);
        // Fed one byte at a time: every split point is exercised.
        for end in 1..=buf.len() {
            if c.advance(&mut buf, end, 0, max_body, 64)? == ChunkProgress::Done {
                return Ok((buf[..c.body_end].to_vec(), c.scan));
            }
        }
        Err(Status::REQUEST_TIMEOUT)
    }

    #[test]
    fn chunked_decoding() {
        let raw = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let (body, used) = dechunk(raw, 100).unwrap();
        assert_eq!(body, b"hello, world");
        assert_eq!(&raw[used..], b"NEXT");
        assert_eq!(dechunk(b"0\r\n\r\n", 100).unwrap().0, b"");
        assert_eq!(
            dechunk(b"5\r\nhelloXX0\r\n\r\n", 100),
            Err(Status::BAD_REQUEST)
        );
        assert_eq!(dechunk(b"zz\r\n", 100), Err(Status::BAD_REQUEST));
        assert_eq!(
            dechunk(b"5\nhello\r\n0\r\n\r\n", 100),
            Err(Status::BAD_REQUEST)
        );
        assert_eq!(
            dechunk(b"65\r\n", 100),
            Err(Status::PAYLOAD_TOO_LARGE),
            "0x65 = 101 bytes over a limit of 100"
        );
        assert_eq!(
            dechunk(b"ffffffffffffffffff\r\n", 100),
            Err(Status::BAD_REQUEST)
        );
        let long_trailer = format!("0\r\nX: {}\r\n\r\n", "a".repeat(100));
        assert_eq!(
            dechunk(long_trailer.as_bytes(), 100),
            Err(Status::HEADERS_TOO_LARGE)
        );
    }
}

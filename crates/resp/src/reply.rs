//! Reply encoding, RESP2 or RESP3 by what the connection negotiated
//! (`HELLO 3`): nulls, maps, pushes and verbatim strings differ; the rest
//! is the same bytes.

use bytes::{BufMut, BytesMut};

/// A connection's reply writer.
#[derive(Debug)]
pub struct Out<'a> {
    buf: &'a mut BytesMut,
    resp3: bool,
}

impl<'a> Out<'a> {
    /// Writes into `buf` for a RESP3 (`true`) or RESP2 connection.
    pub fn new(buf: &'a mut BytesMut, resp3: bool) -> Self {
        Self { buf, resp3 }
    }

    /// The buffer itself (for bytes encoded elsewhere).
    pub fn raw(&mut self) -> &mut BytesMut {
        self.buf
    }

    fn line(&mut self, kind: u8, n: i64) {
        self.buf.put_u8(kind);
        let mut b = itoa(n);
        b.extend_from_slice(b"\r\n");
        self.buf.extend_from_slice(&b);
    }

    /// `+OK`.
    pub fn ok(&mut self) {
        self.buf.extend_from_slice(b"+OK\r\n");
    }

    /// A simple string (`+PONG`).
    pub fn simple(&mut self, s: &str) {
        self.buf.put_u8(b'+');
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.extend_from_slice(b"\r\n");
    }

    /// An error; `msg` starts with its code (`ERR ...`, `WRONGTYPE ...`).
    /// Newlines in it become spaces, as Redis does.
    pub fn error(&mut self, msg: &[u8]) {
        self.buf.put_u8(b'-');
        for &b in msg {
            self.buf
                .put_u8(if matches!(b, b'\r' | b'\n') { b' ' } else { b });
        }
        self.buf.extend_from_slice(b"\r\n");
    }

    /// `-ERR msg`.
    pub fn err(&mut self, msg: &str) {
        let mut m = b"ERR ".to_vec();
        m.extend_from_slice(msg.as_bytes());
        self.error(&m);
    }

    /// An integer.
    pub fn int(&mut self, n: i64) {
        self.line(b':', n);
    }

    /// A bulk string.
    pub fn bulk(&mut self, b: &[u8]) {
        self.line(b'$', b.len() as i64);
        self.buf.extend_from_slice(b);
        self.buf.extend_from_slice(b"\r\n");
    }

    /// The null bulk string (`$-1`, RESP3 `_`).
    pub fn null(&mut self) {
        self.buf
            .extend_from_slice(if self.resp3 { b"_\r\n" } else { b"$-1\r\n" });
    }

    /// The null array (`*-1`, RESP3 `_`).
    pub fn null_array(&mut self) {
        self.buf
            .extend_from_slice(if self.resp3 { b"_\r\n" } else { b"*-1\r\n" });
    }

    /// An array header of `n` elements.
    pub fn array(&mut self, n: usize) {
        self.line(b'*', n as i64);
    }

    /// A map header of `n` pairs (RESP2: an array of `2n`).
    pub fn map(&mut self, n: usize) {
        if self.resp3 {
            self.line(b'%', n as i64);
        } else {
            self.array(2 * n);
        }
    }

    /// A push header of `n` elements (RESP2: an array).
    pub fn push(&mut self, n: usize) {
        if self.resp3 {
            self.line(b'>', n as i64);
        } else {
            self.array(n);
        }
    }

    /// Text as a verbatim string (RESP3 `=N\r\ntxt:...`; RESP2 a bulk).
    pub fn verbatim(&mut self, text: &[u8]) {
        if self.resp3 {
            self.line(b'=', text.len() as i64 + 4);
            self.buf.extend_from_slice(b"txt:");
            self.buf.extend_from_slice(text);
            self.buf.extend_from_slice(b"\r\n");
        } else {
            self.bulk(text);
        }
    }
}

/// `n` in decimal.
pub fn itoa(n: i64) -> Vec<u8> {
    n.to_string().into_bytes()
}

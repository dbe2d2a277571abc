//! RESP2 (the Redis serialization protocol) as a [`ClientProtocol`]:
//! commands pipelined on one connection, replies matched in request order.
//!
//! Three requests, as `redis-benchmark -t set,get,ping_mbulk` sends them
//! (arrays of bulk strings), plus any command for the general client:
//!
//! - `SET key:<n> <value>` ([`RespRequest::Set`]): the answer must be
//!   `+OK`. The value of request `id` is `size` bytes made like the echo
//!   protocol's content (the id as 8 little-endian bytes, then an
//!   id-dependent pattern, see [`Echo`](super::Echo)).
//! - `GET key:<n>` ([`RespRequest::Get`]): the answer must be a nil (the
//!   key was never set) or a value some `SET` of ours wrote to that key:
//!   `size` bytes, whose id maps to the same key and whose pattern is that
//!   id's. So [`ClientProtocol::check`] sees a corrupted value
//!   ([`Mismatch::Content`]), another key's value ([`Mismatch::OtherRequest`]:
//!   reordered replies) and a value of another size ([`Mismatch::Length`],
//!   also what a run with another `size` over the same keys gets).
//! - `PING` ([`RespRequest::Ping`]): the answer must be `+PONG`.
//! - Any command ([`RespRequest::Command`]): any reply but an error.
//!
//! The key of request `id` is `key:<n>`, `n` a hash of the id modulo
//! [`Resp::keyspace`]: a key depends on the id only, so every connection
//! (each numbering its requests 1, 2, 3, ...) walks the same scrambled
//! sequence of keys, and a `GET` can tell which values belong to its key.
//!
//! ```text
//!  received bytes ─► type byte (+ - : $ *) ─► line up to CRLF (≤ 64 KiB)
//!                         │ $n: bulk of n bytes + CRLF (≤ max_reply)
//!                         │ *n: an array of n values (depth ≤ max_depth,
//!                         ▼      elements ≤ max_elements per reply)
//!                    whole value ─► Reply(Oldest, RespValue)
//! ```
//!
//! The parser is incremental: an array's elements are taken off the
//! buffer as each arrives, so the buffer holds one element at most (plus
//! what is pipelined behind it), and one reply holds at most
//! [`Resp::max_reply`] bytes of strings and [`Resp::max_elements`]
//! elements, whatever the server sends. An error reply (`-ERR ...`,
//! `-OOM ...`) is a well-framed reply: the stream goes on, and `check`
//! counts it as [`Mismatch::ErrorReply`].
//!
//! What the parser refuses, as a sticky [`RespError`] (the connection is
//! then given up, its requests in flight lost): a type byte that is not
//! RESP2's (RESP3's `%`, `_`, `>`...: this client never sends `HELLO 3`),
//! a line without CRLF or over 64 KiB, a number that is not one, a bulk
//! without its CRLF, and the limits above. Not supported: subscribe mode
//! (its messages would be taken for replies; a message with no request in
//! flight fails the stream, [`RespError::Unsolicited`]).

use bytes::{Bytes, BytesMut};

use super::echo::{check_content, write_content};
use super::recv::{READ_CHUNK, RecvBuf};
use super::{ClientHooks, ClientProtocol, Correlation, Incoming, Mismatch, ReplyTo};

/// Longest simple string, error or number line, bytes without the CRLF.
/// Redis's own lines are short (an error message, a length); 64 KiB is
/// Redis's limit on an inline request's line (`PROTO_INLINE_MAX_SIZE`).
const MAX_LINE: usize = 64 * 1024;

/// Bytes of the id at the front of a value (as in the echo content).
const ID_LEN: usize = 8;

/// Elements reserved up front for an array: its announced length is the
/// server's word, so memory grows with elements that actually arrive.
const ARRAY_RESERVE: usize = 16;

/// The RESP2 client protocol. See the module docs.
#[derive(Debug, Clone, Copy)]
pub struct Resp {
    /// Most bytes of strings in one reply (a bulk string, or all of an
    /// array's); also the largest `SET` value [`ClientProtocol::encode`]
    /// accepts.
    pub max_reply: usize,
    /// Most array elements in one reply, counted over every level.
    pub max_elements: usize,
    /// Deepest nesting of arrays in a reply (1: arrays of scalars).
    pub max_depth: usize,
    /// Keys the `SET` and `GET` requests spread over (`key:0` ...);
    /// 0 is taken as 1.
    pub keyspace: u64,
    /// The command a load run repeats ([`LoadProtocol`](crate::loadgen::LoadProtocol)).
    pub command: RespCommand,
}

impl Resp {
    /// Default [`Resp::max_reply`]: 1 MiB, like the other protocols' body
    /// limits.
    pub const DEFAULT_MAX_REPLY: usize = 1 << 20;
    /// Default [`Resp::max_elements`]: 64 Ki, far above a benchmark's
    /// replies, and at most a few MiB of parsed elements.
    pub const DEFAULT_MAX_ELEMENTS: usize = 64 * 1024;
    /// Default [`Resp::max_depth`]: Redis's deepest replies (`COMMAND
    /// DOCS`, `XREADGROUP`) nest four or five arrays.
    pub const DEFAULT_MAX_DEPTH: usize = 16;
    /// Default [`Resp::keyspace`]: redis-benchmark's `-r 10000` style.
    pub const DEFAULT_KEYSPACE: u64 = 10_000;
}

impl Default for Resp {
    fn default() -> Self {
        Self {
            max_reply: Self::DEFAULT_MAX_REPLY,
            max_elements: Self::DEFAULT_MAX_ELEMENTS,
            max_depth: Self::DEFAULT_MAX_DEPTH,
            keyspace: Self::DEFAULT_KEYSPACE,
            command: RespCommand::Set,
        }
    }
}

/// The command of a load run: `warpwire bench --protocol resp --command`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespCommand {
    /// `SET key value` of the run's size.
    Set,
    /// `GET key`, expecting values of the run's size (or nil).
    Get,
    /// `PING`.
    Ping,
}

/// A request. The key and value of `Set` and `Get` come from the id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RespRequest {
    /// `PING`; the answer must be `+PONG`.
    Ping,
    /// `SET key:<n> <value of size bytes>`; the answer must be `+OK`.
    Set {
        /// Value bytes.
        size: usize,
    },
    /// `GET key:<n>`; the answer must be nil or a value of ours of `size`
    /// bytes for that key.
    Get {
        /// Value bytes expected.
        size: usize,
    },
    /// Any command, its arguments as given (`["INCR", "counter"]`); any
    /// reply but an error is right.
    Command(Vec<Bytes>),
}

/// A RESP2 value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RespValue {
    /// `+OK`: a simple string.
    Simple(Bytes),
    /// `-ERR message`: an error reply, its whole line (`ERR message`).
    Error(Bytes),
    /// `:42`: an integer.
    Integer(i64),
    /// `$3 foo`: a bulk string.
    Bulk(Bytes),
    /// `$-1` or `*-1`: the nil bulk string or nil array.
    Nil,
    /// `*2 ...`: an array.
    Array(Vec<RespValue>),
}

/// What can go wrong with RESP, on either side of the stream. Small and
/// `Copy`: a decode error is sticky, returned again on every later call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RespError {
    /// A value starts with a byte that is not a RESP2 type.
    #[error("unexpected type byte 0x{byte:02x} (not RESP2)")]
    UnknownType {
        /// The byte.
        byte: u8,
    },
    /// A line does not end in CRLF, or has a CR inside.
    #[error("malformed line (a bare CR or LF)")]
    BadLine,
    /// A line is longer than 64 KiB without ending.
    #[error("line longer than {max} bytes")]
    LineTooLong {
        /// The limit.
        max: usize,
    },
    /// An integer, bulk length or array length is not a number in range
    /// (a length below -1).
    #[error("invalid integer or length")]
    BadNumber,
    /// A bulk string is not followed by CRLF.
    #[error("bulk string not followed by CRLF")]
    BulkUnterminated,
    /// The reply's strings exceed [`Resp::max_reply`] bytes.
    #[error("reply of more than {max} bytes of strings")]
    ReplyTooLarge {
        /// The limit.
        max: usize,
    },
    /// The reply has more than [`Resp::max_elements`] array elements.
    #[error("reply of more than {max} array elements")]
    TooManyElements {
        /// The limit.
        max: usize,
    },
    /// Arrays nest deeper than [`Resp::max_depth`].
    #[error("arrays nested deeper than {max}")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// A reply arrived with no request in flight.
    #[error("a reply with no request in flight")]
    Unsolicited,
    /// A `SET` value exceeds [`Resp::max_reply`] (nothing was sent).
    #[error("value of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The value size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A [`RespRequest::Command`] without arguments (nothing was sent).
    #[error("a command needs at least one argument")]
    EmptyCommand,
}

/// An array being filled.
#[derive(Debug)]
struct Partial {
    items: Vec<RespValue>,
    len: usize,
}

/// Per-connection state of [`Resp`]: received bytes, the reply being
/// parsed, and how many requests wait for a reply.
#[derive(Debug)]
pub struct RespConn {
    /// Holds at most `max(max_reply + 2, 64 KiB + 3) + 16 KiB`.
    recv: RecvBuf,
    /// Bytes of the current line already searched for its LF.
    scanned: usize,
    /// A bulk string of this length is being received.
    bulk: Option<usize>,
    /// Arrays being filled, outermost first (at most `max_depth`).
    stack: Vec<Partial>,
    /// Array elements announced in the current reply.
    elements: usize,
    /// Bytes of strings in the current reply.
    bytes: usize,
    in_flight: usize,
    error: Option<RespError>,
}

impl RespConn {
    /// Requests sent and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Bytes of memory the receive buffer holds (at most twice its limit,
    /// see the module docs).
    pub fn allocated(&self) -> usize {
        self.recv.allocated()
    }

    fn fail(&mut self, e: RespError) -> RespError {
        self.error = Some(e);
        self.recv.release();
        self.stack = Vec::new();
        e
    }

    /// Counts `n` string bytes against the reply's limit.
    fn add_bytes(&mut self, n: usize, max: usize) -> Result<(), RespError> {
        self.bytes = self.bytes.saturating_add(n);
        if self.bytes > max {
            return Err(RespError::ReplyTooLarge { max });
        }
        Ok(())
    }

    /// The first `n` received bytes, then drops the CRLF behind them.
    /// Inside an array the bytes are copied: a slice would keep the whole
    /// receive buffer alive for as long as the reply is being parsed.
    fn take_string(&mut self, n: usize) -> Bytes {
        let s = if self.stack.is_empty() {
            self.recv.take(n)
        } else {
            let s = Bytes::copy_from_slice(&self.recv.received()[..n]);
            self.recv.discard(n);
            s
        };
        self.recv.discard(2);
        s
    }

    /// The length of the line after the type byte, if its CRLF arrived.
    fn line(&mut self) -> Result<Option<usize>, RespError> {
        let buf = self.recv.received();
        let from = self.scanned.max(1);
        let Some(i) = buf[from..].iter().position(|&b| b == b'\n') else {
            if buf.len() > MAX_LINE + 2 {
                return Err(RespError::LineTooLong { max: MAX_LINE });
            }
            self.scanned = buf.len();
            return Ok(None);
        };
        self.scanned = 0;
        let lf = from + i;
        // The byte before LF is CR (not the type byte), and no CR is inside.
        if lf < 2 || buf[lf - 1] != b'\r' {
            return Err(RespError::BadLine);
        }
        if lf - 2 > MAX_LINE {
            return Err(RespError::LineTooLong { max: MAX_LINE });
        }
        if buf[1..lf - 1].contains(&b'\r') {
            return Err(RespError::BadLine);
        }
        Ok(Some(lf - 2))
    }

    /// Puts a whole value in its array, closing the arrays it completes;
    /// the reply when the outermost is done.
    fn place(&mut self, mut value: RespValue) -> Option<RespValue> {
        loop {
            let top = match self.stack.last_mut() {
                None => return Some(value),
                Some(top) => top,
            };
            top.items.push(value);
            if top.items.len() < top.len {
                return None;
            }
            // Not empty: `top` is its last element.
            let done = self.stack.pop()?;
            value = RespValue::Array(done.items);
        }
    }
}

/// A number line: an optional `-`, then digits, within `i64`.
fn parse_number(line: &[u8]) -> Option<i64> {
    let (neg, digits) = match line.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, line),
    };
    if digits.is_empty() {
        return None;
    }
    // Accumulated with the sign, so that i64::MIN parses too.
    digits.iter().try_fold(0i64, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        let d = i64::from(b - b'0');
        let n = n.checked_mul(10)?;
        if neg {
            n.checked_sub(d)
        } else {
            n.checked_add(d)
        }
    })
}

/// A bulk or array length: -1 (nil) or a count.
fn parse_length(line: &[u8]) -> Result<Option<usize>, RespError> {
    match parse_number(line) {
        Some(-1) => Ok(None),
        Some(n) => usize::try_from(n)
            .map(Some)
            .map_err(|_| RespError::BadNumber),
        None => Err(RespError::BadNumber),
    }
}

/// The key number of request `id` (splitmix64's finaliser, then modulo):
/// consecutive ids land on scattered keys.
fn key_of(id: u64, keyspace: u64) -> u64 {
    let mut z = id;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    z % keyspace.max(1)
}

/// Appends `n` in decimal.
fn put_decimal(out: &mut BytesMut, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends a `prefix` line with `n` (`*3\r\n`, `$5\r\n`).
fn put_header(out: &mut BytesMut, prefix: u8, n: u64) {
    out.extend_from_slice(&[prefix]);
    put_decimal(out, n);
    out.extend_from_slice(b"\r\n");
}

/// Appends the bulk string `key:<n>`.
fn put_key(out: &mut BytesMut, n: u64) {
    let mut key = BytesMut::with_capacity(24);
    key.extend_from_slice(b"key:");
    put_decimal(&mut key, n);
    put_header(out, b'$', key.len() as u64);
    out.extend_from_slice(&key);
    out.extend_from_slice(b"\r\n");
}

impl Resp {
    /// The key of request `id`: `key:<n>`, `n` below [`Resp::keyspace`].
    pub fn key(&self, id: u64) -> String {
        format!("key:{}", key_of(id, self.keyspace))
    }

    /// The `size`-byte value `SET` request `id` writes.
    pub fn value(id: u64, size: usize) -> Bytes {
        let mut out = BytesMut::with_capacity(size);
        write_content(id, size, &mut out);
        out.freeze()
    }

    /// The next whole reply, or `Ok(None)`; errors are not yet sticky.
    fn next(&self, conn: &mut RespConn) -> Result<Option<RespValue>, RespError> {
        loop {
            let value = if let Some(len) = conn.bulk {
                if conn.recv.len() < len + 2 {
                    return Ok(None);
                }
                if &conn.recv.received()[len..len + 2] != b"\r\n" {
                    return Err(RespError::BulkUnterminated);
                }
                conn.bulk = None;
                RespValue::Bulk(conn.take_string(len))
            } else {
                let Some(&kind) = conn.recv.received().first() else {
                    return Ok(None);
                };
                if conn.in_flight == 0 && conn.stack.is_empty() {
                    return Err(RespError::Unsolicited);
                }
                if !matches!(kind, b'+' | b'-' | b':' | b'$' | b'*') {
                    return Err(RespError::UnknownType { byte: kind });
                }
                let Some(len) = conn.line()? else {
                    return Ok(None);
                };
                match kind {
                    b'+' | b'-' => {
                        conn.add_bytes(len, self.max_reply)?;
                        conn.recv.discard(1);
                        let s = conn.take_string(len);
                        if kind == b'+' {
                            RespValue::Simple(s)
                        } else {
                            RespValue::Error(s)
                        }
                    }
                    b':' => {
                        let n = parse_number(&conn.recv.received()[1..=len])
                            .ok_or(RespError::BadNumber)?;
                        conn.recv.discard(len + 3);
                        RespValue::Integer(n)
                    }
                    b'$' => {
                        let n = parse_length(&conn.recv.received()[1..=len])?;
                        conn.recv.discard(len + 3);
                        match n {
                            None => RespValue::Nil,
                            Some(n) => {
                                conn.add_bytes(n, self.max_reply)?;
                                conn.bulk = Some(n);
                                continue;
                            }
                        }
                    }
                    _ => {
                        let n = parse_length(&conn.recv.received()[1..=len])?;
                        conn.recv.discard(len + 3);
                        match n {
                            None => RespValue::Nil,
                            Some(0) => RespValue::Array(Vec::new()),
                            Some(n) => {
                                if conn.stack.len() >= self.max_depth {
                                    return Err(RespError::TooDeep {
                                        max: self.max_depth,
                                    });
                                }
                                conn.elements = conn.elements.saturating_add(n);
                                if conn.elements > self.max_elements {
                                    return Err(RespError::TooManyElements {
                                        max: self.max_elements,
                                    });
                                }
                                conn.stack.push(Partial {
                                    items: Vec::with_capacity(n.min(ARRAY_RESERVE)),
                                    len: n,
                                });
                                continue;
                            }
                        }
                    }
                }
            };
            if let Some(reply) = conn.place(value) {
                conn.in_flight -= 1;
                conn.elements = 0;
                conn.bytes = 0;
                return Ok(Some(reply));
            }
        }
    }

    /// Whether `value` is a `size`-byte value some `SET` of ours wrote to
    /// the key of request `id`.
    fn check_value(&self, id: u64, size: usize, value: &[u8]) -> Result<(), Mismatch> {
        if value.len() != size {
            return Err(Mismatch::Length);
        }
        let Some(head) = value.first_chunk::<ID_LEN>() else {
            // Too short to carry an id: the length is all there is.
            return Ok(());
        };
        let writer = u64::from_le_bytes(*head);
        if writer == 0 || key_of(writer, self.keyspace) != key_of(id, self.keyspace) {
            return Err(Mismatch::OtherRequest);
        }
        check_content(writer, size, value)
    }
}

impl ClientProtocol for Resp {
    type Conn = RespConn;
    type Request = RespRequest;
    type Reply = RespValue;
    type EncodeError = RespError;
    type DecodeError = RespError;

    const CORRELATION: Correlation = Correlation::InOrder;

    fn name(&self) -> &'static str {
        "resp"
    }

    fn open(&self) -> RespConn {
        let one = self.max_reply.saturating_add(2).max(MAX_LINE + 3);
        RespConn {
            recv: RecvBuf::new(one.saturating_add(READ_CHUNK)),
            scanned: 0,
            bulk: None,
            stack: Vec::new(),
            elements: 0,
            bytes: 0,
            in_flight: 0,
            error: None,
        }
    }

    fn encode(
        &self,
        conn: &mut RespConn,
        id: u64,
        request: &RespRequest,
        out: &mut BytesMut,
    ) -> Result<(), RespError> {
        match request {
            RespRequest::Ping => out.extend_from_slice(b"*1\r\n$4\r\nPING\r\n"),
            &RespRequest::Set { size } => {
                if size > self.max_reply {
                    return Err(RespError::TooLarge {
                        size,
                        max: self.max_reply,
                    });
                }
                out.reserve(64 + size);
                out.extend_from_slice(b"*3\r\n$3\r\nSET\r\n");
                put_key(out, key_of(id, self.keyspace));
                put_header(out, b'$', size as u64);
                write_content(id, size, out);
                out.extend_from_slice(b"\r\n");
            }
            RespRequest::Get { .. } => {
                out.extend_from_slice(b"*2\r\n$3\r\nGET\r\n");
                put_key(out, key_of(id, self.keyspace));
            }
            RespRequest::Command(args) => {
                if args.is_empty() {
                    return Err(RespError::EmptyCommand);
                }
                put_header(out, b'*', args.len() as u64);
                for a in args {
                    put_header(out, b'$', a.len() as u64);
                    out.extend_from_slice(a);
                    out.extend_from_slice(b"\r\n");
                }
            }
        }
        conn.in_flight += 1;
        Ok(())
    }

    fn read_buf<'c>(&self, conn: &'c mut RespConn) -> &'c mut [u8] {
        if conn.error.is_some() {
            return &mut [];
        }
        // The rest of a bulk string being received in one region, or a chunk.
        let rest = conn
            .bulk
            .map_or(0, |len| (len + 2).saturating_sub(conn.recv.len()));
        conn.recv.offer(rest)
    }

    fn commit(&self, conn: &mut RespConn, n: usize) {
        conn.recv.commit(n);
    }

    fn decode(&self, conn: &mut RespConn) -> Result<Option<Incoming<RespValue>>, RespError> {
        if let Some(e) = conn.error {
            return Err(e);
        }
        match self.next(conn) {
            Ok(r) => Ok(r.map(|r| Incoming::Reply(ReplyTo::Oldest, r))),
            Err(e) => Err(conn.fail(e)),
        }
    }

    /// Not an error reply, and what the request calls for: `+PONG`, `+OK`,
    /// nil or a value of ours for the key (see the module docs); anything
    /// for a [`RespRequest::Command`].
    fn check(&self, id: u64, request: &RespRequest, reply: &RespValue) -> Result<(), Mismatch> {
        let simple = |want: &[u8]| match reply {
            RespValue::Simple(s) if s == want => Ok(()),
            RespValue::Simple(_) => Err(Mismatch::Content),
            _ => Err(Mismatch::Type),
        };
        match (request, reply) {
            (_, RespValue::Error(_)) => Err(Mismatch::ErrorReply),
            (RespRequest::Ping, _) => simple(b"PONG"),
            (RespRequest::Set { .. }, _) => simple(b"OK"),
            (RespRequest::Get { .. }, RespValue::Nil) => Ok(()),
            (&RespRequest::Get { size }, RespValue::Bulk(v)) => self.check_value(id, size, v),
            (RespRequest::Get { .. }, _) => Err(Mismatch::Type),
            (RespRequest::Command(_), _) => Ok(()),
        }
    }
}

/// RESP takes the defaults: no handshake, no heartbeat (the client never
/// sends `AUTH` or `HELLO`), and an error reply reaches its caller as
/// [`RespValue::Error`].
impl ClientHooks for Resp {}

#[cfg(test)]
mod tests;

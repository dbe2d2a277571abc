//! The request parser: RESP multibulk (`*N\r\n$L\r\n...`) and inline
//! commands (`SET k "v w"\n`), incrementally, over the connection's input
//! buffer.
//!
//! It follows Redis 7's `processMultibulkBuffer` and
//! `processInlineBuffer` (networking.c) in what a client can observe: the
//! same protocol errors for the same bytes, the line terminator found the
//! way Redis finds it (the first `\r`, the byte after it not checked; the
//! two bytes after a bulk skipped unchecked), `*0`/`*-1` ignored, an empty
//! inline line ignored. A multibulk request is parsed once: its header
//! and each bulk's header are consumed as they arrive, so a request
//! trickling in byte by byte costs linear, not quadratic, time.
//!
//! Hand-written rather than taken from a RESP crate: the parsers on
//! crates.io decode replies (client side) or accept more than Redis does,
//! and matching Redis's error for each malformed input is the point here.

use std::ops::Range;

/// Longest line (inline request, or a `*`/`$` header) Redis buffers while
/// waiting for its terminator: its `PROTO_INLINE_MAX_SIZE`.
pub const MAX_INLINE: usize = 64 * 1024;

/// The multibulk count an unauthenticated connection may send, and the
/// bulk length (Redis 7 refuses more before AUTH, so a stranger cannot
/// make the server buffer much).
const UNAUTH_MULTIBULK: i64 = 10;
const UNAUTH_BULK: i64 = 16 * 1024;

/// A protocol error: Redis answers `-ERR Protocol error: ...` and closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtoError {
    /// An inline line longer than [`MAX_INLINE`] without its `\n`.
    TooBigInline,
    /// A `*` header longer than [`MAX_INLINE`] without its `\r`.
    TooBigMbulkCount,
    /// A `$` header longer than [`MAX_INLINE`] without its `\r`.
    TooBigBulkCount,
    /// The `*` count is not an integer or above the limit.
    InvalidMultibulkLength,
    /// The `$` length is not an integer, negative or above the limit.
    InvalidBulkLength,
    /// A bulk header did not start with `$` (the byte found).
    ExpectedDollar(u8),
    /// Quotes of an inline command do not close (or a closing quote is
    /// followed by something other than a space).
    UnbalancedQuotes,
    /// More than 10 arguments before AUTH.
    UnauthMultibulk,
    /// A bulk longer than 16 KiB before AUTH.
    UnauthBulk,
}

impl ProtoError {
    /// The error reply's text after `ERR `.
    pub fn message(self) -> Vec<u8> {
        let m: &str = match self {
            Self::TooBigInline => "too big inline request",
            Self::TooBigMbulkCount => "too big mbulk count string",
            Self::TooBigBulkCount => "too big bulk count string",
            Self::InvalidMultibulkLength => "invalid multibulk length",
            Self::InvalidBulkLength => "invalid bulk length",
            Self::UnbalancedQuotes => "unbalanced quotes in request",
            Self::UnauthMultibulk => "unauthenticated multibulk length",
            Self::UnauthBulk => "unauthenticated bulk length",
            Self::ExpectedDollar(b) => {
                let mut v = b"Protocol error: expected '$', got '".to_vec();
                // Redis strips newlines from error replies.
                v.push(if matches!(b, b'\r' | b'\n') { b' ' } else { b });
                v.push(b'\'');
                return v;
            }
        };
        format!("Protocol error: {m}").into_bytes()
    }
}

/// Limits the parser enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest `$` length.
    pub max_bulk: usize,
    /// Largest `*` count.
    pub max_multibulk: usize,
    /// Whether the connection has authenticated (or needs not).
    pub authed: bool,
}

/// What [`Parser::parse`] found at the front of `data`.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole command of `used` bytes; its arguments are
    /// [`Parser::args`] (ranges of `data`), or [`Parser::inline`].
    Command {
        /// Bytes it took.
        used: usize,
    },
    /// Nothing to run (`*0`, an empty line): skip `used` bytes.
    Skip {
        /// Bytes to skip.
        used: usize,
    },
    /// More input is needed; at least this many bytes in all.
    Incomplete {
        /// The request needs `data` to hold at least this many bytes
        /// (0: unknown, one more read).
        want: usize,
    },
    /// The input breaks the protocol.
    Error(ProtoError),
}

/// Incremental parser state of one connection. Offsets are relative to
/// the start of the unread input, so the owner may move that input.
#[derive(Debug, Default)]
pub struct Parser {
    /// The `*` count of the request being parsed (0: none yet).
    argc: usize,
    /// Where parsing continues.
    pos: usize,
    /// The bulk whose header has been read: its length.
    bulk: Option<usize>,
    /// Arguments of the multibulk request, ranges of the input.
    args: Vec<Range<usize>>,
    /// Arguments of the inline request (unquoted, so owned).
    inline: Vec<Vec<u8>>,
}

/// Redis's `strchr` over the query buffer: the first `needle` before any
/// NUL byte (a NUL ends the search as it ends a C string).
fn find(data: &[u8], needle: u8) -> Option<usize> {
    for (i, &b) in data.iter().enumerate() {
        if b == needle {
            return Some(i);
        }
        if b == 0 {
            return None;
        }
    }
    None
}

/// Redis's `string2ll`: an optional `-`, then digits without a leading
/// zero (a lone `0` aside), no sign `+`, no spaces, within i64.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s {
        [] => return None,
        [b'0'] => return Some(0),
        [b'-', rest @ ..] => (true, rest),
        _ => (false, s),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if neg {
        if v > i64::MAX as u64 + 1 {
            return None;
        }
        Some((v as i64).wrapping_neg())
    } else {
        i64::try_from(v).ok()
    }
}

impl Parser {
    /// The multibulk arguments of the last [`Parsed::Command`] (empty for
    /// an inline one), as ranges of the `data` it was parsed from.
    pub fn args(&self) -> &[Range<usize>] {
        &self.args
    }

    /// The inline arguments of the last [`Parsed::Command`] (empty for a
    /// multibulk one).
    pub fn inline(&self) -> &[Vec<u8>] {
        &self.inline
    }

    /// Takes the inline arguments of the last [`Parsed::Command`].
    pub fn take_inline(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.inline)
    }

    /// Forgets everything (after a command ran, or the input was dropped).
    pub fn reset(&mut self) {
        self.argc = 0;
        self.pos = 0;
        self.bulk = None;
        self.args.clear();
        self.inline.clear();
    }

    /// Parses the request at the front of `data` (the unread input).
    pub fn parse(&mut self, data: &[u8], limits: Limits) -> Parsed {
        if self.argc == 0 {
            self.args.clear();
            self.inline.clear();
            match data.first() {
                None => return Parsed::Incomplete { want: 0 },
                Some(b'*') => {}
                Some(_) => return self.parse_inline(data),
            }
            let Some(cr) = find(data, b'\r') else {
                return if data.len() > MAX_INLINE {
                    Parsed::Error(ProtoError::TooBigMbulkCount)
                } else {
                    Parsed::Incomplete { want: 0 }
                };
            };
            // The byte after `\r` must have arrived (it is not checked).
            if cr + 2 > data.len() {
                return Parsed::Incomplete { want: cr + 2 };
            }
            let n = match parse_i64(&data[1..cr]) {
                Some(n) if n <= limits.max_multibulk as i64 => n,
                _ => return Parsed::Error(ProtoError::InvalidMultibulkLength),
            };
            if !limits.authed && n > UNAUTH_MULTIBULK {
                return Parsed::Error(ProtoError::UnauthMultibulk);
            }
            if n <= 0 {
                return Parsed::Skip { used: cr + 2 };
            }
            self.argc = n as usize;
            self.pos = cr + 2;
            self.bulk = None;
        }
        while self.args.len() < self.argc {
            let len = match self.bulk {
                Some(len) => len,
                None => {
                    let rest = &data[self.pos.min(data.len())..];
                    let Some(cr) = find(rest, b'\r') else {
                        return if rest.len() > MAX_INLINE {
                            Parsed::Error(ProtoError::TooBigBulkCount)
                        } else {
                            Parsed::Incomplete { want: 0 }
                        };
                    };
                    if cr + 2 > rest.len() {
                        return Parsed::Incomplete {
                            want: self.pos + cr + 2,
                        };
                    }
                    if rest[0] != b'$' {
                        return Parsed::Error(ProtoError::ExpectedDollar(rest[0]));
                    }
                    let len = match parse_i64(&rest[1..cr]) {
                        Some(n) if n >= 0 && n as u64 <= limits.max_bulk as u64 => n,
                        _ => return Parsed::Error(ProtoError::InvalidBulkLength),
                    };
                    if !limits.authed && len > UNAUTH_BULK {
                        return Parsed::Error(ProtoError::UnauthBulk);
                    }
                    self.pos += cr + 2;
                    self.bulk = Some(len as usize);
                    len as usize
                }
            };
            let want = self.pos + len + 2;
            if data.len() < want {
                return Parsed::Incomplete { want };
            }
            self.args.push(self.pos..self.pos + len);
            self.pos = want;
            self.bulk = None;
        }
        let used = self.pos;
        self.argc = 0;
        self.pos = 0;
        Parsed::Command { used }
    }

    fn parse_inline(&mut self, data: &[u8]) -> Parsed {
        let Some(nl) = find(data, b'\n') else {
            return if data.len() > MAX_INLINE {
                Parsed::Error(ProtoError::TooBigInline)
            } else {
                Parsed::Incomplete { want: 0 }
            };
        };
        let mut line = &data[..nl];
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
        match split_args(line) {
            None => Parsed::Error(ProtoError::UnbalancedQuotes),
            Some(args) if args.is_empty() => Parsed::Skip { used: nl + 1 },
            Some(args) => {
                self.inline = args;
                Parsed::Command { used: nl + 1 }
            }
        }
    }
}

/// Redis's `sdssplitargs`: words separated by spaces, `"..."` with C
/// escapes (`\n \r \t \b \a \\ \" \xHH`), `'...'` with `\'` only; a closing
/// quote must be followed by a space or the end. The line ends at a NUL
/// byte, as a C string does. `None`: unbalanced quotes.
pub fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let line = match line.iter().position(|&b| b == 0) {
        Some(i) => &line[..i],
        None => line,
    };
    let is_space = |b: u8| matches!(b, b' ' | b'\n' | b'\r' | b'\t' | 0x0b | 0x0c);
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && is_space(line[i]) {
            i += 1;
        }
        if i >= line.len() {
            return Some(args);
        }
        let mut cur = Vec::new();
        let (mut inq, mut insq) = (false, false);
        loop {
            let c = line.get(i).copied();
            if inq {
                match c {
                    None => return None,
                    Some(b'\\')
                        if line.get(i + 1) == Some(&b'x')
                            && line.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
                            && line.get(i + 3).is_some_and(u8::is_ascii_hexdigit) =>
                    {
                        let hex = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
                        cur.push(hex(line[i + 2]) * 16 + hex(line[i + 3]));
                        i += 3;
                    }
                    Some(b'\\') if i + 1 < line.len() => {
                        i += 1;
                        cur.push(match line[i] {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                    }
                    Some(b'"') => {
                        // The closing quote must be followed by a space or nothing.
                        if line.get(i + 1).is_some_and(|&b| !is_space(b)) {
                            return None;
                        }
                        i += 1;
                        break;
                    }
                    Some(b) => cur.push(b),
                }
            } else if insq {
                match c {
                    None => return None,
                    Some(b'\\') if line.get(i + 1) == Some(&b'\'') => {
                        i += 1;
                        cur.push(b'\'');
                    }
                    Some(b'\'') => {
                        if line.get(i + 1).is_some_and(|&b| !is_space(b)) {
                            return None;
                        }
                        i += 1;
                        break;
                    }
                    Some(b) => cur.push(b),
                }
            } else {
                match c {
                    None => break,
                    Some(b) if is_space(b) => break,
                    Some(b'"') => inq = true,
                    Some(b'\'') => insq = true,
                    Some(b) => cur.push(b),
                }
            }
            i += 1;
        }
        args.push(cur);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        max_bulk: 1 << 20,
        max_multibulk: 1 << 20,
        authed: true,
    };

    #[test]
    fn integers_as_redis_reads_them() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-12"), Some(-12));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"+1",
            b"01",
            b"-0",
            b" 1",
            b"1 ",
            b"9223372036854775808",
            b"-",
        ] {
            assert_eq!(parse_i64(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn split_args_quotes_and_escapes() {
        let v = split_args(br#"set "a b" 'c\'d' "\x41\n""#).unwrap();
        assert_eq!(
            v,
            vec![
                b"set".to_vec(),
                b"a b".to_vec(),
                b"c'd".to_vec(),
                b"A\n".to_vec()
            ]
        );
        assert_eq!(split_args(b"set \"a"), None);
        assert_eq!(split_args(b"set \"a\"b"), None);
        assert_eq!(split_args(b"  "), Some(vec![]));
    }

    #[test]
    fn multibulk_byte_by_byte() {
        let req = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        let mut p = Parser::default();
        for n in 0..req.len() {
            assert!(
                matches!(p.parse(&req[..n], L), Parsed::Incomplete { .. }),
                "{n}"
            );
        }
        assert_eq!(p.parse(req, L), Parsed::Command { used: req.len() });
        assert_eq!(p.args(), &[8..11, 17..18]);
    }
}

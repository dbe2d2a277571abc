//! The toy line protocol that shows the seam is real: each
//! newline-terminated line is answered upper-cased, "bye" closes, a line
//! over 1 KiB is the protocol's own error. A greeting ("hello") is sent on
//! accept. The whole protocol is this file: tests serve it over every
//! transport (crates/engine/tests/line_protocol.rs, and over AF_XDP as
//! root in crates/xdp/tests/engine.rs) with none of warpwire's framing.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use warpwire_transport::CloseReason;

use crate::protocol::{ConnInfo, Ctx, InputHeld, Protocol, Refusal, Step};

/// Lines in, upper-cased lines out; at most 1 KiB a line.
#[derive(Debug, Default, Clone, Copy)]
pub struct Upper;

/// A connection: received bytes, `filled` of them valid.
#[derive(Debug, Default)]
pub struct Line {
    buf: Vec<u8>,
    filled: usize,
}

const MAX_LINE: usize = 1024;

impl Protocol for Upper {
    type Conn = Line;
    type Local = ();

    fn name(&self) -> &'static str {
        "upper"
    }
    fn local(&self, _: usize, _: usize, _: Instant) {}
    fn open(&self, _: &mut (), _: &ConnInfo, ctx: &mut Ctx<'_>) -> Line {
        ctx.out().extend_from_slice(b"hello\n");
        Line::default()
    }
    fn read_buf<'c>(&self, l: &'c mut Line) -> &'c mut [u8] {
        let want = (l.filled + 256).min(MAX_LINE);
        if l.buf.len() < want {
            l.buf.resize(want, 0);
        }
        &mut l.buf[l.filled..want]
    }
    fn commit(&self, l: &mut Line, n: usize) {
        l.filled += n;
    }
    fn step(&self, _: &mut (), l: &mut Line, ctx: &mut Ctx<'_>) -> Step {
        let Some(end) = l.buf[..l.filled].iter().position(|&b| b == b'\n') else {
            if l.filled >= MAX_LINE {
                ctx.out().extend_from_slice(b"error: line too long\n");
                ctx.close();
                return Step::Request;
            }
            return Step::NeedInput;
        };
        let line: Vec<u8> = l.buf.drain(..=end).collect();
        l.filled -= line.len();
        if line == b"bye\n" {
            ctx.close();
        } else {
            ctx.out().extend_from_slice(&line.to_ascii_uppercase());
        }
        Step::Request
    }
    fn refuse(&self, _: &mut Line, why: Refusal, ctx: &mut Ctx<'_>) {
        ctx.out()
            .extend_from_slice(format!("error: {why:?}\n").as_bytes());
    }
    fn input_held(&self, l: &Line) -> InputHeld {
        InputHeld {
            allocated: l.buf.capacity(),
            partial: l.filled > 0,
        }
    }
    fn drop_input(&self, l: &mut Line) {
        *l = Line::default();
    }
    fn closed(&self, _: &mut (), _: Line, _: &ConnInfo, _: Option<CloseReason>) {}
}

/// What a kernel-TCP peer checks of `Upper` served at `addr`: pipelined
/// lines split anywhere and a half-close, the protocol's own close, and its
/// error for an over-long line. Each read waits at most 10 s.
pub fn check_upper_peer(addr: SocketAddr) -> Result<(), String> {
    fn session(addr: SocketAddr, writes: &[&[u8]], half_close: bool) -> Result<String, String> {
        let e = |what: &str, err: std::io::Error| format!("{addr}: {what}: {err}");
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .map_err(|err| e("connect", err))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|err| e("timeout", err))?;
        for w in writes {
            s.write_all(w).map_err(|err| e("write", err))?;
        }
        if half_close {
            s.shutdown(Shutdown::Write)
                .map_err(|err| e("shutdown", err))?;
        }
        let mut got = Vec::new();
        // The server may reset after its error (unread input): what came
        // before the reset is what counts.
        if let Err(err) = s.read_to_end(&mut got)
            && err.kind() != std::io::ErrorKind::ConnectionReset
        {
            return Err(e("read", err));
        }
        Ok(String::from_utf8_lossy(&got).into_owned())
    }
    let cases: [(&[&[u8]], bool, &str); 3] = [
        (
            &[b"one\ntw", b"o\nthree\n"],
            true,
            "hello\nONE\nTWO\nTHREE\n",
        ),
        (&[b"x\nbye\nnot answered\n"], false, "hello\nX\n"),
        (&[&[b'a'; 2000]], false, "hello\nerror: line too long\n"),
    ];
    for (writes, half_close, want) in cases {
        let got = session(addr, writes, half_close)?;
        if got != want {
            return Err(format!("sent {writes:?}: got {got:?}, want {want:?}"));
        }
    }
    Ok(())
}

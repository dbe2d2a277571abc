//! The toy line protocol that shows the seam is real: each
//! newline-terminated line is answered upper-cased, "bye" closes, a line
//! over 1 KiB is the protocol's own error. A greeting ("hello") is sent on
//! accept. The whole protocol is this file: tests serve it over every
//! transport (crates/engine/tests/line_protocol.rs, and over AF_XDP as
//! root in crates/xdp/tests/engine.rs) with none of warpwire's framing.

use std::time::Instant;

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

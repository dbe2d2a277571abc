//! The echo protocol (RFC 862 over TCP): every byte received is sent back,
//! in order, and nothing else.
//!
//! It is the smallest protocol the engine serves, and a useful one: any
//! TCP client (nc, socat, a kernel socket) is its peer, and it measures the
//! engine's data path (read budget, output cap, pausing on a slow reader,
//! half-close) without any parsing in the way. `warpwire bench --protocol
//! echo` loads it.
//!
//! Limits come from the engine: a peer that sends without reading fills its
//! output cap (`max_output`), then reading from it pauses until it reads,
//! so memory per connection stays bounded. RFC 862 has no error messages:
//! a refusal (server busy, idle timeout, input budget) is a plain close.

use std::time::Instant;

use warpwire_transport::CloseReason;

use crate::input::{InputBuffer, READ_CHUNK};
use crate::metrics::WorkerCounters;
use crate::protocol::{ConnInfo, Ctx, InputHeld, Protocol, Refusal, Step};

/// The echo protocol; see the module docs.
#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

/// An echo connection: what was received and not yet echoed. The buffer
/// is allocated when the peer first sends, so idle connections cost none.
#[derive(Debug, Default)]
pub struct EchoConn {
    input: InputBuffer,
}

impl Protocol for Echo {
    type Conn = EchoConn;
    type Local = ();

    fn name(&self) -> &'static str {
        "echo"
    }

    fn local(&self, _: usize, _: usize, _: Instant) {}

    fn open(&self, _: &mut (), _: &ConnInfo, _: &mut Ctx<'_>) -> EchoConn {
        EchoConn::default()
    }

    fn read_buf<'c>(&self, c: &'c mut EchoConn) -> &'c mut [u8] {
        // One chunk at a time: everything read is echoed at the next step.
        c.input.read_buf(0, READ_CHUNK)
    }

    fn commit(&self, c: &mut EchoConn, n: usize) {
        c.input.commit(n);
    }

    fn step(&self, _: &mut (), c: &mut EchoConn, ctx: &mut Ctx<'_>) -> Step {
        if c.input.is_empty() {
            return Step::NeedInput;
        }
        let n = c.input.len() as u64;
        ctx.out().extend_from_slice(c.input.unread());
        c.input.consume(c.input.len());
        let counters = ctx.counters();
        WorkerCounters::add(&counters.bytes_in, n);
        WorkerCounters::add(&counters.bytes_out, n);
        Step::Request
    }

    fn refuse(&self, _: &mut EchoConn, _: Refusal, _: &mut Ctx<'_>) {}

    fn input_held(&self, c: &EchoConn) -> InputHeld {
        InputHeld {
            allocated: c.input.allocated(),
            partial: false,
        }
    }

    fn drop_input(&self, c: &mut EchoConn) {
        c.input.clear();
    }

    fn closed(&self, _: &mut (), _: EchoConn, _: &ConnInfo, _: Option<CloseReason>) {}
}

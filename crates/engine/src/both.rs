//! Two protocols served by the same workers, each connection routed by the
//! protocol its listener serves.
//!
//! ```text
//!   listen 127.0.0.1:7077 (warpwire) ─┐                     ┌─► Warpwire
//!   listen 127.0.0.1:7007 (echo) ─────┼─► Accepted ─► Both ─┤
//!                                     │   (ConnInfo.protocol) └─► Echo
//! ```
//!
//! `Both<A, B>` is itself a [`Protocol`], so three or more nest
//! (`Both<A, Both<B, C>>`). The per-connection state is an enum of the two
//! sides', the per-worker state a pair: each call is one match, no `dyn`.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use warpwire_transport::{CloseReason, ConnId, Transport, TransportError};

use crate::protocol::{ConnInfo, Ctx, InputHeld, Outcome, Protocol, Refusal, Relay, Step};

/// Serves `A`'s protocols and `B`'s; see the module docs. A connection
/// whose listener names one of `B`'s protocols goes to `B`, every other to
/// `A` (the first protocol, served on `ServerConfig::listen`).
#[derive(Debug)]
pub struct Both<A, B> {
    a: A,
    b: B,
    b_names: Vec<&'static str>,
}

impl<A: Protocol, B: Protocol> Both<A, B> {
    /// Serves `a` (the first protocol) and `b`.
    pub fn new(a: A, b: B) -> Self {
        let a_names = a.names();
        // A name both sides claim stays with `a`.
        let b_names = b
            .names()
            .into_iter()
            .filter(|n| !a_names.contains(n))
            .collect();
        Self { a, b, b_names }
    }

    /// The first protocol.
    pub fn first(&self) -> &A {
        &self.a
    }

    /// The second protocol.
    pub fn second(&self) -> &B {
        &self.b
    }
}

/// A connection of [`Both`]: one side's state.
#[derive(Debug)]
pub enum Either<X, Y> {
    /// Served by the first protocol.
    First(X),
    /// Served by the second protocol.
    Second(Y),
}

impl<A: Protocol, B: Protocol> Protocol for Both<A, B> {
    type Conn = Either<A::Conn, B::Conn>;
    type Local = (A::Local, B::Local);

    fn name(&self) -> &'static str {
        self.a.name()
    }

    fn names(&self) -> Vec<&'static str> {
        let mut n = self.a.names();
        n.extend(&self.b_names);
        n
    }

    fn local(&self, worker: usize, workers: usize, now: Instant) -> Self::Local {
        (
            self.a.local(worker, workers, now),
            self.b.local(worker, workers, now),
        )
    }

    fn open(&self, local: &mut Self::Local, info: &ConnInfo, ctx: &mut Ctx<'_>) -> Self::Conn {
        if self.b_names.contains(&info.protocol) {
            Either::Second(self.b.open(&mut local.1, info, ctx))
        } else {
            Either::First(self.a.open(&mut local.0, info, ctx))
        }
    }

    fn read_buf<'c>(&self, conn: &'c mut Self::Conn) -> &'c mut [u8] {
        match conn {
            Either::First(c) => self.a.read_buf(c),
            Either::Second(c) => self.b.read_buf(c),
        }
    }

    fn commit(&self, conn: &mut Self::Conn, n: usize) {
        match conn {
            Either::First(c) => self.a.commit(c, n),
            Either::Second(c) => self.b.commit(c, n),
        }
    }

    fn receive<T: Transport>(
        &self,
        conn: &mut Self::Conn,
        t: &mut T,
        id: ConnId,
    ) -> Option<Result<usize, TransportError>> {
        match conn {
            Either::First(c) => self.a.receive(c, t, id),
            Either::Second(c) => self.b.receive(c, t, id),
        }
    }

    fn step(&self, local: &mut Self::Local, conn: &mut Self::Conn, ctx: &mut Ctx<'_>) -> Step {
        match conn {
            Either::First(c) => self.a.step(&mut local.0, c, ctx),
            Either::Second(c) => self.b.step(&mut local.1, c, ctx),
        }
    }

    fn refuse(&self, conn: &mut Self::Conn, why: Refusal, ctx: &mut Ctx<'_>) {
        match conn {
            Either::First(c) => self.a.refuse(c, why, ctx),
            Either::Second(c) => self.b.refuse(c, why, ctx),
        }
    }

    fn input_held(&self, conn: &Self::Conn) -> InputHeld {
        match conn {
            Either::First(c) => self.a.input_held(c),
            Either::Second(c) => self.b.input_held(c),
        }
    }

    fn drop_input(&self, conn: &mut Self::Conn) {
        match conn {
            Either::First(c) => self.a.drop_input(c),
            Either::Second(c) => self.b.drop_input(c),
        }
    }

    fn closed(
        &self,
        local: &mut Self::Local,
        conn: Self::Conn,
        info: &ConnInfo,
        reason: Option<CloseReason>,
    ) {
        match conn {
            Either::First(c) => self.a.closed(&mut local.0, c, info, reason),
            Either::Second(c) => self.b.closed(&mut local.1, c, info, reason),
        }
    }

    fn complete(
        &self,
        local: &mut Self::Local,
        conn: &mut Self::Conn,
        outcome: Outcome,
        ctx: &mut Ctx<'_>,
    ) {
        match conn {
            Either::First(c) => self.a.complete(&mut local.0, c, outcome, ctx),
            Either::Second(c) => self.b.complete(&mut local.1, c, outcome, ctx),
        }
    }

    fn housekeeping(&self, local: &mut Self::Local, now: Instant) {
        self.a.housekeeping(&mut local.0, now);
        self.b.housekeeping(&mut local.1, now);
    }

    fn idle_exempt(&self, conn: &Self::Conn) -> bool {
        match conn {
            Either::First(c) => self.a.idle_exempt(c),
            Either::Second(c) => self.b.idle_exempt(c),
        }
    }

    fn relay(&self, conn: &mut Self::Conn, msg: &Bytes, out: &mut BytesMut) -> Relay {
        match conn {
            Either::First(c) => self.a.relay(c, msg, out),
            Either::Second(c) => self.b.relay(c, msg, out),
        }
    }
}

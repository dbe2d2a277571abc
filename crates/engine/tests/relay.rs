//! `Protocol::relay`: each recipient's protocol decides whether and how a
//! published message reaches it. A toy topic protocol on the deterministic
//! harness: `sub T` subscribes to topic T, `pub T words` publishes; a
//! subscriber of T gets `[T] words`, others nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use warpwire_engine::testing::Harness;
use warpwire_engine::{ConnInfo, Ctx, InputHeld, Protocol, Refusal, Relay, ServerConfig, Step};
use warpwire_transport::CloseReason;

struct Topics;

#[derive(Default)]
struct Sub {
    buf: Vec<u8>,
    filled: usize,
    topic: Option<Vec<u8>>,
}

impl Protocol for Topics {
    type Conn = Sub;
    type Local = ();
    fn name(&self) -> &'static str {
        "topics"
    }
    fn local(&self, _: usize, _: usize, _: Instant) {}
    fn open(&self, _: &mut (), _: &ConnInfo, _: &mut Ctx<'_>) -> Sub {
        Sub {
            buf: vec![0; 256],
            ..Sub::default()
        }
    }
    fn read_buf<'c>(&self, c: &'c mut Sub) -> &'c mut [u8] {
        &mut c.buf[c.filled..]
    }
    fn commit(&self, c: &mut Sub, n: usize) {
        c.filled += n;
    }
    fn step(&self, _: &mut (), c: &mut Sub, ctx: &mut Ctx<'_>) -> Step {
        let Some(end) = c.buf[..c.filled].iter().position(|&b| b == b'\n') else {
            return Step::NeedInput;
        };
        let line = c.buf[..end].to_vec();
        c.buf.copy_within(end + 1..c.filled, 0);
        c.filled -= end + 1;
        if let Some(t) = line.strip_prefix(b"sub ") {
            c.topic = Some(t.to_vec());
            ctx.set_eligible(true);
        } else if let Some(rest) = line.strip_prefix(b"pub ") {
            let offered = ctx.publish(Bytes::copy_from_slice(rest));
            ctx.out()
                .extend_from_slice(format!("offered {offered}\n").as_bytes());
        }
        Step::Request
    }
    fn refuse(&self, _: &mut Sub, _: Refusal, _: &mut Ctx<'_>) {}
    fn input_held(&self, c: &Sub) -> InputHeld {
        InputHeld {
            allocated: c.buf.len(),
            partial: c.filled > 0,
        }
    }
    fn drop_input(&self, c: &mut Sub) {
        c.filled = 0;
    }
    fn closed(&self, _: &mut (), _: Sub, _: &ConnInfo, _: Option<CloseReason>) {}
    fn relay(&self, c: &mut Sub, msg: &Bytes, out: &mut BytesMut) -> Relay {
        let Some(t) = &c.topic else {
            return Relay::Skip;
        };
        match msg.strip_prefix(&t[..]).and_then(|r| r.strip_prefix(b" ")) {
            Some(words) => {
                out.extend_from_slice(b"[");
                out.extend_from_slice(t);
                out.extend_from_slice(b"] ");
                out.extend_from_slice(words);
                out.extend_from_slice(b"\n");
                Relay::Rewritten
            }
            None => Relay::Skip,
        }
    }
}

#[test]
fn each_recipient_rewrites_or_skips() {
    let mut h = Harness::new(ServerConfig::default(), |_| Topics);
    let (news, sport, publisher) = (h.connect(), h.connect(), h.connect());
    h.settle();
    h.send(news, b"sub news\n");
    h.send(sport, b"sub sport\n");
    h.settle();
    h.send(
        publisher,
        b"pub news rain today\npub sport 2-1\npub weather none\n",
    );
    h.settle();
    // One worker: the count is of the connections that took it.
    assert_eq!(h.received(publisher), b"offered 1\noffered 1\noffered 0\n");
    assert_eq!(h.received(news), b"[news] rain today\n");
    assert_eq!(h.received(sport), b"[sport] 2-1\n");
}

//! The application's connection hooks: it sees every connection arrive and
//! leave, may refuse one, and hears of protocol errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use warpwire_engine::{ConnInfo, Hooks};
use warpwire_frame::{ErrorCode, Ping};
use warpwire_transport::CloseReason;

#[derive(Default)]
struct Seen {
    refuse: AtomicBool,
    connects: AtomicU64,
    disconnects: Mutex<Vec<Option<CloseReason>>>,
    errors: Mutex<Vec<String>>,
}

struct Watch(Arc<Seen>);

impl Hooks for Watch {
    fn on_connect(&self, _: &ConnInfo) -> bool {
        self.0.connects.fetch_add(1, Ordering::SeqCst);
        !self.0.refuse.load(Ordering::SeqCst)
    }
    fn on_disconnect(&self, _: &ConnInfo, reason: Option<CloseReason>) {
        self.0.disconnects.lock().unwrap().push(reason);
    }
    fn on_protocol_error(&self, _: &ConnInfo, error: &str) {
        self.0.errors.lock().unwrap().push(error.to_owned());
    }
}

#[test]
fn hooks_see_connects_refusals_disconnects_and_protocol_errors() {
    let seen = Arc::new(Seen::default());
    let h = start_with(config(), {
        let seen = seen.clone();
        move |s| {
            s.hooks(Watch(seen));
        }
    });
    // Accepted, served, closed by the peer.
    let mut c = Conn::connect(h.local_addr());
    c.call(&Ping { timestamp_ns: 1 }.request(1));
    drop(c);
    assert!(eventually(|| seen.disconnects.lock().unwrap().len() == 1));
    // A protocol error: the protocol answers, the hook hears of it.
    let mut c = Conn::connect(h.local_addr());
    c.send_raw(b"GET / HTTP/1.1\r\n\r\n");
    let (code, _) = c.recv_error();
    assert_eq!(code, ErrorCode::BadMagic);
    assert!(eventually(|| !seen.errors.lock().unwrap().is_empty()));
    assert!(
        seen.errors.lock().unwrap()[0].contains("magic"),
        "{:?}",
        seen.errors
    );
    // Refused by the application: SERVER_BUSY, closed, never "disconnected".
    seen.refuse.store(true, Ordering::SeqCst);
    let mut c = Conn::connect(h.local_addr());
    let (code, _) = c.recv_error();
    assert_eq!(code, ErrorCode::ServerBusy);
    assert!(c.closed());
    assert_eq!(seen.connects.load(Ordering::SeqCst), 3);
    assert!(eventually(|| seen.disconnects.lock().unwrap().len() == 2));
    h.stop().unwrap();
}

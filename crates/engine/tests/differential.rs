//! Differential test of the protocol seam: scripted byte streams
//! (scripts/differential-streams.py, built with the independent encoder of
//! scripts/golden.py) are written to the server, the sending side shut
//! down, and every reply byte compared with what the server answered
//! before the warpwire protocol moved behind the seam (commit 3a4fdc0,
//! recorded with `scripts/differential-streams.py record ADDR`). Requests,
//! every error code a byte stream can reach, and half-close: byte for
//! byte the same.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::time::Duration;

use common::*;
use warpwire_engine::ServerConfig;

#[test]
fn replies_are_byte_for_byte_those_of_the_server_before_the_seam() {
    let h = start(ServerConfig {
        workers: 1,
        ..config()
    });
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/differential");
    let mut n = 0;
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "in"))
        .collect();
    names.sort();
    for input in names {
        let want = std::fs::read(input.with_extension("out")).unwrap();
        let mut s = TcpStream::connect(h.local_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&std::fs::read(&input).unwrap()).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        // A reset after the replies (the server closed with our input
        // unread) ends the stream like EOF.
        let _ = s.read_to_end(&mut got);
        assert!(
            got == want,
            "{}: {} bytes, recorded {}\n got  {}\n want {}",
            input.display(),
            got.len(),
            want.len(),
            hex(&got),
            hex(&want)
        );
        n += 1;
    }
    assert!(n >= 12, "only {n} streams");
    h.stop().unwrap();
}

fn hex(b: &[u8]) -> String {
    b.iter().take(200).map(|x| format!("{x:02x}")).collect()
}

//! TLS handshakes per second into one server worker, full and resumed.
//!
//! One server `TlsTransport` over the socket backend on its own thread,
//! one client thread opening connections one after another: each sends a
//! byte, reads the echo (by which time it holds the server's session
//! tickets) and closes. Printed: connections per second, and the server
//! thread's CPU time per connection (from /proc/thread-self/stat, 10 ms
//! ticks), which is what one worker can sustain when the client is not the
//! bottleneck: 1 s / that = handshakes per second per core.
//!
//! ```text
//! cargo run --release -p warpwire-tls --example handshakes -- [CONNECTIONS]
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use warpwire_socket::SocketTransport;
use warpwire_tls::certs::{DevCa, Validity};
use warpwire_tls::{ClientOptions, ClientTls, ServerOptions, ServerTls, TlsTransport, rustls};
use warpwire_transport::{Event, Events, Transport};

/// This thread's user + system CPU time.
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // Fields after the command name (which is in parentheses).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 12 and 13 here.
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

fn main() {
    let n: usize = std::env::args().nth(1).map_or(2000, |s| s.parse().unwrap());
    let dir = std::env::temp_dir().join(format!("ww-hs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = DevCa::new("bench CA", Validity::days(1)).unwrap();
    let leaf = ca.server(&["127.0.0.1".into()], Validity::days(1)).unwrap();
    std::fs::write(dir.join("ca.pem"), &ca.pem.cert).unwrap();
    std::fs::write(dir.join("s.pem"), &leaf.cert).unwrap();
    std::fs::write(dir.join("s-key.pem"), &leaf.key).unwrap();
    let shared = ServerTls::new(&ServerOptions {
        cert: dir.join("s.pem"),
        key: dir.join("s-key.pem"),
        ..ServerOptions::default()
    })
    .unwrap();
    // A server thread per phase (sharing the ticket key, so the second
    // phase's connections can resume what the first was given).
    let spawn_server = || {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut server = TlsTransport::new(SocketTransport::new().unwrap()).serve_tls(
            any,
            shared.config(&[]).unwrap(),
            Duration::from_secs(10),
        );
        let addr = server.listen(any).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s_stop = stop.clone();
        let h = std::thread::spawn(move || {
            let mut ev = Events::default();
            let cpu0 = thread_cpu();
            while !s_stop.load(Ordering::Relaxed) {
                server.poll(Instant::now(), &mut ev).unwrap();
                for e in ev.iter() {
                    match *e {
                        Event::Readable(c) => {
                            let mut buf = [0u8; 64];
                            if let Ok(k) = server.recv(c, &mut buf)
                                && k > 0
                            {
                                let _ = server.send(c, &buf[..k]);
                            }
                        }
                        Event::PeerFinished(c) => server.close(c),
                        _ => {}
                    }
                }
                if ev.is_empty() {
                    server.wait(Some(Duration::from_millis(1))).unwrap();
                }
            }
            (thread_cpu() - cpu0, server.stats())
        });
        (addr, stop, h)
    };

    let client_opts = ClientOptions {
        ca: Some(dir.join("ca.pem")),
        ..ClientOptions::default()
    };
    let full = ClientTls::new(&client_opts, "127.0.0.1").unwrap();
    let mut no_resume = (*full.config).clone();
    no_resume.resumption = rustls::client::Resumption::disabled();
    let full = ClientTls {
        config: Arc::new(no_resume),
        ..full
    };
    let resumed = ClientTls::new(&client_opts, "127.0.0.1").unwrap();
    // A first connection gives the resumption cache its tickets.
    let mut results = Vec::new();
    for (name, tls) in [("full", full), ("resumed", resumed)] {
        let (addr, stop, srv) = spawn_server();
        let mut c = TlsTransport::new(SocketTransport::new().unwrap()).with_client(tls);
        let mut ev = Events::default();
        let start = Instant::now();
        for _ in 0..n {
            let id = c.connect(addr, Instant::now()).unwrap();
            let mut done = false;
            while !done {
                c.poll(Instant::now(), &mut ev).unwrap();
                for e in ev.iter() {
                    match *e {
                        Event::Connected(x) if x == id => {
                            c.send(id, b"x").unwrap();
                        }
                        Event::Readable(x) if x == id => {
                            let mut buf = [0u8; 16];
                            if c.recv(id, &mut buf).unwrap() > 0 {
                                done = true;
                            }
                        }
                        Event::Closed(x, why) if x == id => panic!("closed: {why:?}"),
                        _ => {}
                    }
                }
                if ev.is_empty() {
                    c.wait(Some(Duration::from_millis(1))).unwrap();
                }
            }
            c.close(id);
        }
        // Let the closes finish.
        let until = Instant::now() + Duration::from_millis(200);
        while Instant::now() < until {
            c.poll(Instant::now(), &mut ev).unwrap();
        }
        let took = start.elapsed();
        stop.store(true, Ordering::Relaxed);
        let (cpu, stats) = srv.join().unwrap();
        results.push((name, took, cpu, stats));
    }
    let _ = std::fs::remove_dir_all(&dir);
    for (name, took, cpu, stats) in &results {
        let per = cpu.as_secs_f64() / n as f64;
        println!(
            "{name:>8}: {n} connections in {took:.2?}: {:.0} conn/s (one client thread); \
             server: {} full, {} resumed, worker CPU {:.0} us per connection = {:.0} per second per core",
            n as f64 / took.as_secs_f64(),
            stats.handshakes,
            stats.resumed,
            per * 1e6,
            1.0 / per
        );
    }
}

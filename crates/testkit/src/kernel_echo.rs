//! An RFC 862 echo server on kernel TCP (std::net, a thread per
//! connection), as an independent peer for the echo client protocol: it
//! sends back every byte it receives, in order, and nothing else, or, when
//! asked to, corrupts the stream so that tests see the client count errors.
//!
//! Loopback only, and bounded: connection threads look at a stop flag every
//! [`POLL`], and [`KernelEcho`]'s drop stops them and joins the acceptor.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often blocked threads look at the stop flag.
const POLL: Duration = Duration::from_millis(50);

/// What the server does to the bytes it echoes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Nothing: a faithful echo.
    None,
    /// Flips the low bit of every `n`-th byte of each connection's stream
    /// (bytes `n`, `2n`, ... counting from 1).
    FlipEvery(u64),
}

/// A running echo server on a free loopback port; stops when dropped.
#[derive(Debug)]
pub struct KernelEcho {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    echoed: Arc<AtomicU64>,
    acceptor: Option<JoinHandle<()>>,
}

impl KernelEcho {
    /// A faithful echo server.
    pub fn start() -> io::Result<Self> {
        Self::with_fault(Fault::None)
    }

    /// An echo server that applies `fault` to every connection.
    pub fn with_fault(fault: Fault) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let echoed = Arc::new(AtomicU64::new(0));
        let acceptor = {
            let (stop, accepted, echoed) = (stop.clone(), accepted.clone(), echoed.clone());
            std::thread::Builder::new()
                .name("kernel-echo".into())
                .spawn(move || accept_loop(&listener, fault, &stop, &accepted, &echoed))?
        };
        Ok(Self {
            addr,
            stop,
            accepted,
            echoed,
            acceptor: Some(acceptor),
        })
    }

    /// The listening address (127.0.0.1, a free port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Bytes received (and being echoed) so far, over all connections.
    pub fn echoed(&self) -> u64 {
        self.echoed.load(Ordering::Relaxed)
    }
}

impl Drop for KernelEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.acceptor.take() {
            // The acceptor joins its connection threads; a panic there has
            // been reported by the test harness already.
            let _ = t.join();
        }
    }
}

fn accept_loop(
    listener: &TcpListener,
    fault: Fault,
    stop: &Arc<AtomicBool>,
    accepted: &AtomicU64,
    echoed: &Arc<AtomicU64>,
) {
    let mut conns = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((s, _)) => {
                accepted.fetch_add(1, Ordering::Relaxed);
                let (stop, echoed) = (stop.clone(), echoed.clone());
                let spawned = std::thread::Builder::new()
                    .name("kernel-echo-conn".into())
                    .spawn(move || {
                        // An I/O error ends this connection only.
                        let _ = echo(s, fault, &stop, &echoed);
                    });
                if let Ok(h) = spawned {
                    conns.push(h);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(POLL / 5),
            Err(_) => std::thread::sleep(POLL / 5),
        }
    }
    for h in conns {
        let _ = h.join();
    }
}

fn echo(mut s: TcpStream, fault: Fault, stop: &AtomicBool, echoed: &AtomicU64) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(POLL))?;
    s.set_write_timeout(Some(POLL))?;
    let mut buf = vec![0u8; 64 * 1024];
    // Bytes of the stream before `buf`'s first.
    let mut offset = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let n = match s.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if is_retry(&e) => continue,
            Err(e) => return Err(e),
        };
        if let Fault::FlipEvery(every) = fault
            && every > 0
        {
            for (i, b) in buf[..n].iter_mut().enumerate() {
                if (offset + i as u64 + 1).is_multiple_of(every) {
                    *b ^= 1;
                }
            }
        }
        offset += n as u64;
        echoed.fetch_add(n as u64, Ordering::Relaxed);
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            if stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            match s.write(rest) {
                Ok(0) => return Ok(()),
                Ok(w) => rest = &rest[w..],
                Err(e) if is_retry(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// A timed-out or interrupted call: look at the stop flag and retry.
fn is_retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_and_corrupts_on_request() -> io::Result<()> {
        for (fault, want) in [(Fault::None, *b"abcdef"), (Fault::FlipEvery(3), *b"abbdeg")] {
            let srv = KernelEcho::with_fault(fault)?;
            let mut c = TcpStream::connect(srv.addr())?;
            c.set_read_timeout(Some(Duration::from_secs(5)))?;
            c.write_all(b"abcdef")?;
            let mut got = [0u8; 6];
            c.read_exact(&mut got)?;
            assert_eq!(got, want);
            assert_eq!((srv.accepted(), srv.echoed()), (1, 6));
        }
        Ok(())
    }
}

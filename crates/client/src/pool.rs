//! [`Pool`]: several clients to one server, handed out round-robin.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use warpwire_transport::{Transport, TransportError};

use crate::{Client, ClientConfig, ClientError};

/// `n` [`Client`]s (n connections, n I/O threads) to the same address.
///
/// One connection is one ordered byte stream: a large reply delays every
/// reply pipelined behind it, and one I/O thread caps what one connection
/// can push. A pool spreads requests over several.
#[derive(Debug)]
pub struct Pool {
    clients: Vec<Client>,
    next: AtomicUsize,
}

impl Pool {
    /// Connects `size` clients, each building its own transport with
    /// `factory`. Fails (closing those already connected) if any fails.
    pub fn connect<T, F>(
        factory: F,
        addr: SocketAddr,
        cfg: ClientConfig,
        size: usize,
    ) -> Result<Self, ClientError>
    where
        T: Transport,
        F: Fn() -> Result<T, TransportError> + Send + Sync + 'static,
    {
        if size == 0 {
            return Err(ClientError::InvalidConfig(
                "a pool needs at least one client",
            ));
        }
        let factory = Arc::new(factory);
        let clients = (0..size)
            .map(|_| {
                let f = Arc::clone(&factory);
                Client::connect(move || f(), addr, cfg.clone())
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            clients,
            next: AtomicUsize::new(0),
        })
    }

    /// The next client, round-robin.
    pub fn get(&self) -> &Client {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        &self.clients[i]
    }

    /// All clients, in connection order.
    pub fn clients(&self) -> &[Client] {
        &self.clients
    }

    /// Number of clients.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Always false: a pool has at least one client.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Closes every client.
    pub fn close(self) {
        for c in self.clients {
            c.close();
        }
    }
}

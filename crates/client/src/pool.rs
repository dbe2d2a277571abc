//! [`Pool`]: several clients to one server, handed out round-robin.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use warpwire_transport::{Transport, TransportError};

use crate::protocol::{ClientHooks, Warpwire};
use crate::{ClientConfig, ClientError, GenericClient};

/// `n` clients (n connections, n I/O threads) to the same address; of
/// warpwire ([`crate::Client`]) unless `P` says otherwise.
///
/// One connection is one ordered byte stream: a large reply delays every
/// reply pipelined behind it, and one I/O thread caps what one connection
/// can push. A pool spreads requests over several.
pub struct Pool<P: ClientHooks = Warpwire> {
    clients: Vec<GenericClient<P>>,
    next: AtomicUsize,
}

impl<P: ClientHooks> std::fmt::Debug for Pool<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("clients", &self.clients)
            .finish_non_exhaustive()
    }
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
        Self::connect_with(Warpwire::for_client(&cfg), factory, addr, cfg, size)
    }
}

impl<P: ClientHooks + Clone> Pool<P> {
    /// [`Pool::connect`] for any protocol: each client speaks a clone of
    /// `protocol` (see [`GenericClient::connect_with`]).
    pub fn connect_with<T, F>(
        protocol: P,
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
                GenericClient::connect_with(protocol.clone(), move || f(), addr, cfg.clone())
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            clients,
            next: AtomicUsize::new(0),
        })
    }
}

impl<P: ClientHooks> Pool<P> {
    /// The next client, round-robin.
    pub fn get(&self) -> &GenericClient<P> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        &self.clients[i]
    }

    /// All clients, in connection order.
    pub fn clients(&self) -> &[GenericClient<P>] {
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

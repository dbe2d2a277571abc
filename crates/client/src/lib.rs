//! # warpwire-client: talk to a warpwire server over any transport
//!
//! Two ways in, for two jobs:
//!
//! - [`Client`]: a general-purpose client. One connection, owned by one I/O
//!   thread; any number of caller threads submit requests that pipeline onto
//!   it. Each request comes back as a [`Pending`] that can be waited on
//!   (blocking) or `.await`ed (any executor). `Client` speaks warpwire; it
//!   is [`GenericClient`]`<`[`Warpwire`]`>`, and the same I/O loop speaks
//!   any [`ClientHooks`] protocol: `GenericClient<Echo>`,
//!   `GenericClient<Http>`, `GenericClient<Resp>`.
//! - [`loadgen::run`]: the load generator behind `warpwire bench`. No I/O
//!   thread and no channel: worker threads drive their transports directly
//!   and keep `pipeline_depth` requests in flight per connection. It is
//!   generic over the application protocol ([`loadgen::run_with`]): any
//!   [`ClientProtocol`], warpwire's framing ([`Warpwire`]), RFC 862 echo
//!   ([`Echo`]), HTTP/1.1 ([`Http`]) or Redis's RESP2 ([`Resp`]).
//!
//! ```text
//!   caller threads                         client I/O thread (one per GenericClient<P>)
//!   ───────────────                        ──────────────────────────────────────────────
//!   client.echo(b)                          ┌────────────────────────────────────────────┐
//!   client.request(r) ─► Submit ─► channel ─┤ assign id (1, 2, 3, ...)                   │
//!        │  (bounded)      + waker.wake()   │ P::encode ─► output ─► Transport::send     │─► wire
//!        │                 if it sleeps     │ in flight: id ─► oneshot, deadline heap    │
//!        ▼                                  │ P::decode ◄─ Transport::recv               │◄─ wire
//!   Pending ◄──────── oneshot ◄──── reply ──┤ correlate: by id (warpwire) or FIFO        │
//!   .wait() / .await                        │   (echo, http, resp); P::reply_result      │
//!                                           │   (warpwire: ERROR ─► Err)                 │
//!                                           │ timeouts (FIFO: one in flight resets the   │
//!                                           │   connection), reconnect + backoff         │
//!                                           │ hooks: handshake after each (re)connect    │
//!                                           │   (AUTH), heartbeat (PING), answer_server  │
//!   client.subscribe() ◄── bounded channel ─┤ server-initiated messages (BROADCAST, ...) │
//!                                           └────────────────────────────────────────────┘
//! ```
//!
//! A protocol's side is sans-IO, like the frame crate: bytes in, replies
//! and bytes out, no socket, no clock ([`ClientProtocol`], shared by the
//! load generator and the client; [`ClientHooks`] adds the client's
//! optional behaviours, all defaulted).
//!
//! ```text
//!   loadgen worker (per thread: one Transport, its connections)
//!   ───────────────────────────────────────────────────────────────────────────────
//!   fill: id = next_id ──► P::encode(conn, id, &request, out) ──► Transport::send ──► wire
//!         ring[id % depth] = send time
//!   read: Transport::recv ──► P::read_buf / P::commit ◄───────────────────────────── wire
//!         P::decode ──► Reply(Id(n))   : warpwire, the request_id on the wire
//!                   ──► Reply(Oldest)  : echo, http and resp, in order (FIFO)
//!                   ──► ServerInitiated: ignored (a relayed BROADCAST)
//!                   ──► Err            : the stream is lost, so is the connection
//!         P::check(id, &request, &reply) ──► latency histogram, or an error counted
//! ```
//!
//! The client is generic over [`warpwire_transport::Transport`]: kernel TCP
//! (`warpwire-socket`), smoltcp over DPDK or AF_XDP, RDMA. The transport is
//! built by a factory closure *on the I/O thread* (backends hold
//! thread-bound resources), and the data path has no `dyn` in it.
//!
//! Guarantees:
//! - request_ids are assigned by the I/O thread, start at 1, never repeat on
//!   a client, and are never 0 (0 is the server's "not a reply" id).
//! - Every [`Pending`] completes: with the reply, a server ERROR
//!   ([`ClientError::Server`]), [`ClientError::Timeout`] at its deadline,
//!   [`ClientError::Disconnected`] if the connection drops while it is in
//!   flight, [`ClientError::PipelineReset`] if an in-order protocol's
//!   connection is reset because a request ahead of it timed out, or
//!   [`ClientError::Closed`] when the client closes.
//! - The I/O thread never blocks on a caller: replies go through oneshot
//!   channels, subscriptions drop frames (and count them) when full.
//! - Backpressure: when the connection is down, the output buffer is full
//!   or `max_in_flight` requests are outstanding, new requests wait in the
//!   I/O thread's bounded local queue (their deadlines still enforced), then
//!   in the bounded submission channel; when both are full, submitting
//!   blocks, at most until the request's deadline.
//!
//! What this crate does not do by design: retry requests (a request in flight when
//! the connection drops may or may not have been processed, so only the
//! caller can decide), load-balance over several servers, or parse
//! application payloads.
//!
//! ```no_run
//! use warpwire_client::{Client, ClientConfig};
//! use warpwire_socket::SocketTransport;
//!
//! let addr = "127.0.0.1:7070".parse().unwrap();
//! let client = Client::connect(SocketTransport::new, addr, ClientConfig::default())?;
//! let rtt = client.ping()?;
//! let reply = client.echo(&b"hello"[..])?;
//! assert_eq!(&reply[..], b"hello");
//! println!("rtt {rtt:?}");
//! # Ok::<(), warpwire_client::ClientError>(())
//! ```
//!
//! The same client over HTTP/1.1, pipelined and in order:
//!
//! ```no_run
//! use warpwire_client::protocol::{HttpRequest, HttpTarget};
//! use warpwire_client::{ClientConfig, GenericClient, Http};
//! use warpwire_socket::SocketTransport;
//!
//! let addr = "127.0.0.1:8080".parse().unwrap();
//! let cfg = ClientConfig::default();
//! let client = GenericClient::connect_with(Http::default(), SocketTransport::new, addr, cfg)?;
//! let ping = HttpRequest::new("127.0.0.1:8080", HttpTarget::Ping).expect("a valid host");
//! let replies: Vec<_> = (0..10).map(|_| client.request(ping.clone())).collect();
//! for r in replies {
//!     assert_eq!(r.wait()?.status, 200);
//! }
//! # Ok::<(), warpwire_client::ClientError>(())
//! ```

#![forbid(unsafe_code)]

mod client;
mod config;
mod error;
mod io;
pub mod loadgen;
mod pending;
mod pool;
pub mod protocol;
mod report;
mod timers;

pub use client::{Client, GenericClient};
pub use config::{Backoff, ClientConfig};
pub use error::ClientError;
pub use loadgen::LoadConfig;
pub use pending::{Pending, Request};
pub use pool::Pool;
pub use protocol::{ClientHooks, ClientProtocol, Echo, Http, Resp, Warpwire};
pub use report::{LoadReport, Progress};

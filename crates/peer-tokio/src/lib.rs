//! # warpwire-peer-tokio: the benchmark peer
//!
//! The yardstick of the testing matrix in docs/architecture.md: a tokio
//! server speaking the same protocol (tokio + tokio-util codec over the frame
//! crate), driven by the same load generator. It is written the way a
//! competent tokio user would write it, not tuned to lose: a multi-thread
//! runtime, one task per connection, a `tokio_util::codec::Framed` over a
//! [`WarpwireCodec`] that decodes in place (bodies are slices of the read
//! buffer) and encodes with the frame crate, TCP_NODELAY, and replies
//! written once per batch of pipelined requests. Numbers for warpwire mean
//! something only next to this peer's on the same machine, same load
//! generator, same settings (`scripts/bench-loopback.sh` runs the two side
//! by side).
//!
//! ```text
//!  TcpListener ──accept──► task per connection
//!                            Framed<TcpStream, WarpwireCodec>
//!   socket ─read─► read buffer ─decode (in place)─► Frame ─► answer
//!   socket ◄─write (flush per batch)─ write buffer ◄─encode─ FrameRef ◄┘
//! ```
//!
//! It answers PING with PONG, ECHO with ECHO_REPLY, DATA with ACK_REQUESTED
//! with DATA_ACK (the whole body accepted), ignores PONG, ERROR and DATA
//! without ACK_REQUESTED, and answers everything else (other built-in
//! types, application types, stray responses) with ERROR UNKNOWN_TYPE.
//! Bytes that are not a frame get the ERROR for their protocol error code
//! (docs/protocol.md), and the connection is closed.
//!
//! What it deliberately does not do: authentication, rate limits,
//! broadcast, STATS, idle timeouts, connection limits or metrics. It is a
//! measuring stick for the data path, not a second server.

#![forbid(unsafe_code)]

mod codec;
mod server;

pub use codec::{CodecError, WarpwireCodec};
pub use server::{run, serve_connection};

//! # warpwire-frame: the warpwire wire protocol as a sans-IO codec
//!
//! This crate is the whole of the wire protocol, version 1
//! (docs/protocol.md), and nothing else. It contains no networking code,
//! reads no clock and spawns nothing: bytes go in, frames and errors come
//! out; frames go in, bytes come out. Every transport (kernel TCP, smoltcp
//! over DPDK or AF_XDP, RDMA), the server engine and the client share it,
//! so they agree to the byte.
//!
//! ```text
//!            ┌─────────────── receive ───────────────┐
//!  bytes ──► │ Decoder: header check (from 2 bytes on),│──► Frame { type, flags, id,
//!            │ size limit, CRC-32, metadata, body rule │          meta: Bytes, body: Bytes }
//!            └─────────────────────────────────────────┘          (zero-copy slices)
//!            ┌─────────────── send ───────────────────┐
//!  Frame ──► │ FrameRef::encode / encode_to_slice /    │──► bytes, or [header, meta, body, crc]
//!            │ encode_vectored (body never copied)     │     for a vectored write
//!            └─────────────────────────────────────────┘
//! ```
//!
//! Frame layout (big-endian): a 20-byte [`Header`], `meta_len` bytes of
//! metadata, `body_len` bytes of body, and a CRC-32 over all of it.
//!
//! Guarantees:
//! - Decoding is total: any byte string yields frames, "need more bytes"
//!   (`Ok(None)`) or a [`DecodeError`] carrying its protocol
//!   [`ErrorCode`] (docs/protocol.md); never a panic.
//! - Decoding is incremental: any split of a stream yields the same frames.
//! - A decoder never buffers more than [`DecoderConfig::buffer_limit`]; an
//!   oversized frame is refused from its header, before its body arrives.
//! - A decoder's memory follows the bytes received, not the lengths headers
//!   announce ([`Decoder::allocated`]): a header declaring the largest frame
//!   costs one read chunk until the frame's bytes actually come.
//! - Errors are sticky: a byte stream cannot be resynchronised.
//!
//! What it deliberately does not do: I/O, timers, session state
//! (authentication, rate limits) or dispatch. Those live in the engine.
//!
//! ```
//! use warpwire_frame::{Decoder, Frame, MessageType};
//!
//! let wire = Frame::new(MessageType::ECHO, 7, &b"hi"[..]).to_bytes().unwrap();
//! let mut dec = Decoder::default();
//! dec.feed(&wire);
//! let frame = dec.decode().unwrap().unwrap();
//! assert_eq!((frame.msg_type, frame.request_id, &frame.body[..]), (MessageType::ECHO, 7, &b"hi"[..]));
//! ```

#![forbid(unsafe_code)]

pub mod body;
mod decode;
mod error;
mod frame;
#[doc(hidden)]
pub mod fuzzing;
mod header;
pub mod meta;
mod types;

pub use body::{Auth, AuthReply, BroadcastAck, DataAck, ErrorBody, Ping, Stats};
pub use decode::{DEFAULT_MAX_PAYLOAD, DEFAULT_READ_CHUNK, Decoder, DecoderConfig, PartialFrame};
pub use error::{DecodeError, EncodeError, FrameError, MetaError};
pub use frame::{BodyCrc, Frame, FrameRef, VectoredFrame};
pub use header::{FrameHeader, HEADER_LEN, Header, MAGIC, OVERHEAD, TRAILER_LEN, VERSION};
pub use meta::{MetaBuilder, Metadata};
pub use types::{ErrorCode, Flags, MessageType};

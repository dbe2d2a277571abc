//! warpwire's binary framing (`warpwire-frame`) as a [`ClientProtocol`].

use std::time::Duration;

use bytes::BytesMut;
use warpwire_frame::{
    Auth, AuthReply, DecodeError, Decoder, DecoderConfig, EncodeError, ErrorBody, Flags, Frame,
    FrameRef, MessageType, Ping,
};
use warpwire_transport::{ConnId, Transport, TransportError};

use super::{ClientHooks, ClientProtocol, Correlation, Incoming, Mismatch, ReplyTo};
use crate::{ClientConfig, ClientError, Request};

/// The warpwire framing: requests are frames carrying the loop's id as
/// their request_id; replies are correlated by it (any order).
///
/// A frame without the RESPONSE flag and with request_id 0 is
/// server-initiated (a relayed BROADCAST, an unsolicited ERROR). Any other
/// frame claims to answer the request with its id, and
/// [`ClientProtocol::check`] refuses it if it lacks the RESPONSE flag: a
/// server that answers without it is wrong, and counted so.
///
/// The general-purpose client ([`crate::Client`]) sees frames differently
/// ([`ClientHooks::classify_for_client`]): every frame without the
/// RESPONSE flag is server-initiated there (a PING to answer, a frame for
/// the subscribers), whatever its request_id.
///
/// Memory per connection: the frame decoder's, at most
/// [`DecoderConfig::buffer_limit`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Warpwire {
    /// Settings of each connection's frame decoder (the largest reply).
    pub decoder: DecoderConfig,
}

impl Warpwire {
    /// The protocol as a client with `cfg` speaks it: replies up to
    /// [`ClientConfig::max_payload`].
    pub fn for_client(cfg: &ClientConfig) -> Self {
        Self {
            decoder: DecoderConfig {
                max_payload: cfg.max_payload,
                ..DecoderConfig::default()
            },
        }
    }

    /// What a decoded frame is to the load generator (see the type's docs).
    pub(crate) fn classify(frame: Frame) -> Incoming<Frame> {
        if !frame.flags.is_response() && frame.request_id == 0 {
            Incoming::ServerInitiated(frame)
        } else {
            let id = frame.request_id;
            Incoming::Reply(ReplyTo::Id(id), frame)
        }
    }
}

impl ClientProtocol for Warpwire {
    type Conn = Decoder;
    type Request = Request;
    type Reply = Frame;
    type EncodeError = EncodeError;
    type DecodeError = DecodeError;

    const CORRELATION: Correlation = Correlation::ById;

    fn name(&self) -> &'static str {
        "warpwire"
    }

    fn open(&self) -> Decoder {
        Decoder::new(self.decoder)
    }

    fn encode(
        &self,
        _conn: &mut Decoder,
        id: u64,
        request: &Request,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        FrameRef {
            msg_type: request.msg_type,
            flags: request.flags,
            request_id: id,
            meta: &request.meta,
            body: &request.body,
        }
        .encode(out)
    }

    /// A body of [`SHARE_MIN`](super::SHARE_MIN) bytes or more is queued
    /// as the request's own `Bytes`: header and metadata copied, the CRC
    /// computed over the body where it lies (or combined with the one the
    /// caller computed, [`Request::with_body_crc`]), the trailer copied.
    fn encode_into(
        &self,
        conn: &mut Decoder,
        id: u64,
        request: &Request,
        out: &mut super::Out,
    ) -> Result<(), EncodeError> {
        if request.body.len() < super::SHARE_MIN {
            return self.encode(conn, id, request, out.buf());
        }
        let frame = FrameRef {
            msg_type: request.msg_type,
            flags: request.flags,
            request_id: id,
            meta: &request.meta,
            body: &request.body,
        }
        .encode_vectored_with(request.body_crc)?;
        let [header, meta, _, trailer] = frame.slices();
        out.buf().extend_from_slice(header);
        out.buf().extend_from_slice(meta);
        out.put_shared(&request.body);
        out.buf().extend_from_slice(trailer);
        Ok(())
    }

    fn read_buf<'c>(&self, conn: &'c mut Decoder) -> &'c mut [u8] {
        conn.read_buf()
    }

    fn commit(&self, conn: &mut Decoder, n: usize) {
        conn.commit(n);
    }

    fn receive<T: Transport>(
        &self,
        conn: &mut Decoder,
        t: &mut T,
        id: ConnId,
    ) -> Option<Result<usize, TransportError>> {
        // Into the decoder's spare room, not zeroed first.
        conn.fill_with(|buf, max| t.recv_buf(id, buf, max))
    }

    fn decode(&self, conn: &mut Decoder) -> Result<Option<Incoming<Frame>>, DecodeError> {
        Ok(conn.decode()?.map(Self::classify))
    }

    /// The reply must be flagged RESPONSE, not be an ERROR, and have the
    /// type the request calls for: ECHO_REPLY with the ECHO's body, PONG and
    /// DATA_ACK with their 8-byte bodies, BROADCAST_ACK, STATS_REPLY,
    /// AUTH_REPLY. An application handler may answer with any type other
    /// than those three fixed-body replies (ECHO_REPLY, PONG, DATA_ACK).
    fn check(&self, _id: u64, request: &Request, reply: &Frame) -> Result<(), Mismatch> {
        if !reply.flags.is_response() {
            return Err(Mismatch::NotAReply);
        }
        let got = reply.msg_type;
        if got == MessageType::ERROR {
            return Err(Mismatch::ErrorReply);
        }
        let fixed_len = |ty: MessageType, len: usize| {
            if got != ty {
                Err(Mismatch::Type)
            } else if reply.body.len() != len {
                Err(Mismatch::Length)
            } else {
                Ok(())
            }
        };
        let of_type = |ty: MessageType| {
            if got == ty {
                Ok(())
            } else {
                Err(Mismatch::Type)
            }
        };
        match request.msg_type {
            MessageType::ECHO => {
                fixed_len(MessageType::ECHO_REPLY, request.body.len())?;
                if reply.body == request.body {
                    Ok(())
                } else {
                    Err(Mismatch::Content)
                }
            }
            MessageType::PING => fixed_len(MessageType::PONG, 8),
            MessageType::DATA => fixed_len(MessageType::DATA_ACK, 8),
            MessageType::BROADCAST => of_type(MessageType::BROADCAST_ACK),
            MessageType::STATS => of_type(MessageType::STATS_REPLY),
            MessageType::AUTH => of_type(MessageType::AUTH_REPLY),
            t if t.is_application() => match got {
                MessageType::ECHO_REPLY | MessageType::PONG | MessageType::DATA_ACK => {
                    Err(Mismatch::Type)
                }
                _ => Ok(()),
            },
            _ => Err(Mismatch::Type),
        }
    }
}

/// The client of warpwire: AUTH after each (re)connect when
/// [`ClientConfig::auth`] is set, PING heartbeats, PONGs to the server's
/// PINGs, ERROR replies as [`ClientError::Server`], unmatched ERRORs to the
/// subscribers.
impl ClientHooks for Warpwire {
    /// Refuses lengths that do not fit the header, before queueing.
    fn check_request(&self, req: &Request) -> Result<(), ClientError> {
        FrameRef {
            msg_type: req.msg_type,
            flags: req.flags,
            request_id: 0,
            meta: &req.meta,
            body: &req.body,
        }
        .header()
        .map(|_| ())
        .map_err(ClientError::Encode)
    }

    fn request_timeout(&self, req: &Request) -> Option<Duration> {
        req.timeout
    }

    fn handshake(&self, cfg: &ClientConfig) -> Result<Option<Request>, ClientError> {
        let Some((user, token)) = &cfg.auth else {
            return Ok(None);
        };
        let mut body = BytesMut::with_capacity(1 + user.len() + token.len());
        // ClientConfig::validate bounds the user name, so this only fails
        // for a config that skipped it.
        Auth { user, token }
            .encode(&mut body)
            .map_err(ClientError::Body)?;
        Ok(Some(Request::new(MessageType::AUTH, body.freeze())))
    }

    fn handshake_accepted(&self, reply: &Frame) -> bool {
        reply.msg_type == MessageType::AUTH_REPLY
            && AuthReply::decode(&reply.body).is_ok_and(|r| r.ok)
    }

    fn heartbeat(&self, now_ns: u64) -> Option<Request> {
        let body = Ping {
            timestamp_ns: now_ns,
        }
        .encode();
        Some(Request::new(MessageType::PING, body.to_vec()))
    }

    fn classify_for_client(&self, message: Incoming<Frame>) -> Incoming<Frame> {
        match message {
            Incoming::Reply(_, f) if !f.flags.is_response() => Incoming::ServerInitiated(f),
            m => m,
        }
    }

    /// A server's PING gets a PONG with its request_id and body.
    fn answer_server(&self, frame: &Frame, out: &mut BytesMut) -> bool {
        if frame.msg_type != MessageType::PING {
            return false;
        }
        out.reserve(frame.encoded_len());
        let pong = FrameRef {
            msg_type: MessageType::PONG,
            flags: Flags::RESPONSE,
            request_id: frame.request_id,
            meta: &[],
            body: &frame.body,
        };
        // A PING body is 8 bytes (the decoder checked), so it encodes.
        let _ = pong.encode(out);
        true
    }

    fn reply_result(&self, reply: Frame) -> Result<Frame, ClientError> {
        if reply.msg_type != MessageType::ERROR {
            return Ok(reply);
        }
        Err(match ErrorBody::decode(&reply.body) {
            Ok(b) => ClientError::Server {
                code: b.code,
                message: b.message.to_owned(),
            },
            Err(e) => ClientError::Body(e),
        })
    }

    /// The error of a fire-and-forget request, or of one that timed out:
    /// subscribers are the only ones who can see it.
    fn deliver_unmatched(&self, reply: &Frame) -> bool {
        reply.msg_type == MessageType::ERROR
    }

    fn encode_error(&self, e: EncodeError) -> ClientError {
        ClientError::Encode(e)
    }

    fn decode_error(&self, e: DecodeError) -> ClientError {
        ClientError::Decode(e)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_shared_body_encodes_the_same_bytes_as_a_copied_one() {
        let p = Warpwire::default();
        let mut conn = p.open();
        for len in [
            0,
            1,
            super::super::SHARE_MIN - 1,
            super::super::SHARE_MIN,
            65_536,
        ] {
            let body =
                bytes::Bytes::from((0..len).map(|i| (i * 31 % 251) as u8).collect::<Vec<u8>>());
            let req = Request::new(MessageType::DATA, body.clone())
                .with_meta(bytes::Bytes::from_static(&[0, 1, 1, b'k', 0, 1, b'v']));
            let mut copied = BytesMut::new();
            p.encode(&mut conn, 9, &req, &mut copied).unwrap();
            let mut out = super::super::Out::default();
            out.buf().extend_from_slice(b"before");
            p.encode_into(&mut conn, 9, &req, &mut out).unwrap();
            let mut s = [&[][..]; super::super::MAX_SLICES];
            let n = out.slices(&mut s);
            assert_eq!(s[..n].concat()[6..], copied[..], "body of {len} bytes");
            // From SHARE_MIN on, the body is the request's own bytes.
            let shared = s[..n]
                .iter()
                .any(|x| x.as_ptr() == body.as_ptr() && !body.is_empty());
            assert_eq!(
                shared,
                len >= super::super::SHARE_MIN,
                "body of {len} bytes"
            );
        }
    }

    #[test]
    fn frames_round_trip_with_the_loops_id() {
        let p = Warpwire::default();
        let mut conn = p.open();
        let mut out = BytesMut::new();
        let req = Request::new(MessageType::ECHO, &b"abc"[..]);
        p.encode(&mut conn, 7, &req, &mut out).unwrap();
        let mut d = Decoder::default();
        d.feed(&out);
        let f = d.decode().unwrap().unwrap();
        assert_eq!(
            (f.msg_type, f.request_id, &f.body[..]),
            (MessageType::ECHO, 7, &b"abc"[..])
        );

        // The reply, split at every byte, decodes to one reply to id 7.
        let reply = Frame::response(MessageType::ECHO_REPLY, 7, &b"abc"[..])
            .to_bytes()
            .unwrap();
        let mut got = Vec::new();
        for b in reply.iter() {
            p.read_buf(&mut conn)[0] = *b;
            p.commit(&mut conn, 1);
            while let Some(m) = p.decode(&mut conn).unwrap() {
                got.push(m);
            }
        }
        let [Incoming::Reply(ReplyTo::Id(7), f)] = &got[..] else {
            panic!("{got:?}")
        };
        assert_eq!(p.check(7, &req, f), Ok(()));
    }

    #[test]
    fn checks_and_server_initiated_frames() {
        let p = Warpwire::default();
        let echo = Request::new(MessageType::ECHO, &b"abc"[..]);
        let bad = [
            (
                Frame::response(MessageType::ECHO_REPLY, 1, &b"abd"[..]),
                Mismatch::Content,
            ),
            (
                Frame::response(MessageType::ECHO_REPLY, 1, &b"ab"[..]),
                Mismatch::Length,
            ),
            (
                Frame::response(MessageType::PONG, 1, &b"abc"[..]),
                Mismatch::Type,
            ),
            (
                Frame::response(MessageType::ERROR, 1, &b""[..]),
                Mismatch::ErrorReply,
            ),
            (
                Frame::new(MessageType::ECHO_REPLY, 1, &b"abc"[..]),
                Mismatch::NotAReply,
            ),
        ];
        for (f, why) in bad {
            assert_eq!(p.check(1, &echo, &f), Err(why), "{f:?}");
        }
        let app = Request::new(MessageType(0x80), &b"abc"[..]);
        let any = Frame::response(MessageType(0x91), 1, &b"x"[..]);
        assert_eq!(p.check(1, &app, &any), Ok(()));
        let broadcast = Frame::new(MessageType::BROADCAST, 0, &b"hi"[..]);
        assert!(matches!(
            Warpwire::classify(broadcast),
            Incoming::ServerInitiated(_)
        ));
        let ping = Frame::new(MessageType::PING, 3, &b"hi"[..]).with_flags(Flags::NONE);
        assert!(matches!(
            Warpwire::classify(ping),
            Incoming::Reply(ReplyTo::Id(3), _)
        ));
    }

    #[test]
    fn the_client_and_the_load_generator_see_unflagged_frames_differently() {
        let p = Warpwire::default();
        // A server's PING with an id: a wrong reply to the load generator,
        // server-initiated (and answered) to the client.
        let ping = Frame::new(MessageType::PING, 3, &[1u8; 8][..]);
        let m = Warpwire::classify(ping.clone());
        assert!(matches!(m, Incoming::Reply(ReplyTo::Id(3), _)));
        let Incoming::ServerInitiated(f) = p.classify_for_client(m) else {
            panic!("server-initiated for the client")
        };
        let mut out = BytesMut::new();
        assert!(p.answer_server(&f, &mut out));
        let mut d = Decoder::default();
        d.feed(&out);
        let pong = d.decode().unwrap().unwrap();
        assert_eq!((pong.msg_type, pong.request_id), (MessageType::PONG, 3));
        assert!(pong.flags.is_response());
        assert_eq!(pong.body, ping.body);
        // Replies stay replies; an ERROR reply is the caller's error.
        let reply = Frame::response(MessageType::ECHO_REPLY, 4, &b"x"[..]);
        assert!(matches!(
            p.classify_for_client(Warpwire::classify(reply)),
            Incoming::Reply(ReplyTo::Id(4), _)
        ));
        let mut body = BytesMut::new();
        ErrorBody {
            code: 6,
            message: "no",
        }
        .encode(&mut body);
        let err = Frame::response(MessageType::ERROR, 5, body.freeze());
        assert!(p.deliver_unmatched(&err));
        assert!(matches!(
            p.reply_result(err),
            Err(ClientError::Server { code: 6, .. })
        ));
        let broadcast = Frame::new(MessageType::BROADCAST, 0, &b"hi"[..]);
        assert!(!p.answer_server(&broadcast, &mut out));
    }
}

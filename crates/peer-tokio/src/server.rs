//! The accept loop and the per-connection task.
//!
//! One task per connection, a `Framed<TcpStream, WarpwireCodec>` in it:
//!
//! ```text
//!   next().await ──► answer ──► feed (into the write buffer, no syscall)
//!        ▲                         │
//!        │   another frame ready?  ▼
//!        └──── yes ◄──── poll_next once ────► no (the read would block): flush
//! ```
//!
//! Replies are therefore written once per batch of pipelined requests, not
//! once per request; `Framed` itself also writes early when its buffer
//! passes its back-pressure boundary, which bounds the memory a peer that
//! never reads can make us hold.

use std::future::{Future, poll_fn};
use std::task::Poll;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;
use warpwire_frame::{
    DEFAULT_READ_CHUNK, DataAck, DecodeError, ErrorBody, ErrorCode, Flags, Frame, FrameRef,
    MessageType,
};

use crate::codec::{CodecError, WarpwireCodec};

/// After an accept error (out of descriptors, typically), wait this long
/// before accepting again rather than spinning on the error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// After sending the ERROR that ends a connection, keep reading (and
/// discarding) for at most this long before closing. Closing a socket with
/// unread input makes the kernel send RST, which can destroy the ERROR in
/// flight; draining until the peer's FIN avoids that without letting a
/// peer hold the connection open.
const LINGER: Duration = Duration::from_secs(1);

/// Serves the warpwire protocol on `listener` until `shutdown` completes.
///
/// Each accepted connection runs in its own task on the current runtime
/// with TCP_NODELAY set. Returning drops nothing: connection tasks live on
/// until the runtime is shut down or their peer leaves.
pub async fn run<F>(listener: TcpListener, shutdown: F)
where
    F: Future<Output = ()>,
{
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    tokio::spawn(async move {
                        // A connection's failure concerns only that
                        // connection; resets are routine at the end of
                        // every benchmark run, so nothing is reported.
                        let _ = serve_connection(stream).await;
                    });
                }
                Err(e) => {
                    eprintln!("warpwire-peer-tokio: accept failed: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
}

/// Serves one connection until the peer closes it, it fails, or the peer
/// sends something that is not a frame (answered with an ERROR, then closed).
pub async fn serve_connection(stream: TcpStream) -> Result<(), CodecError> {
    stream.set_nodelay(true)?;
    // The same read size as warpwire's own decoder, for a like-for-like
    // comparison.
    let mut framed = Framed::with_capacity(stream, WarpwireCodec::default(), DEFAULT_READ_CHUNK);
    while let Some(mut item) = framed.next().await {
        loop {
            match item {
                Ok(frame) => answer(&mut framed, &frame).await?,
                Err(CodecError::Decode(e)) => return close_with_error(framed, e).await,
                Err(e) => return Err(e),
            }
            // Another frame without waiting? Decoded from what is buffered,
            // or read if the socket has more; `Pending` means the read side
            // would block, so this batch of replies is complete.
            match poll_fn(|cx| match framed.poll_next_unpin(cx) {
                Poll::Ready(next) => Poll::Ready(next),
                Poll::Pending => Poll::Ready(None),
            })
            .await
            {
                Some(next) => item = next,
                None => break,
            }
        }
        framed.flush().await?;
    }
    Ok(())
}

/// Queues the reply to one request, if it gets one.
async fn answer(
    framed: &mut Framed<TcpStream, WarpwireCodec>,
    f: &Frame,
) -> Result<(), CodecError> {
    let id = f.request_id;
    match f.msg_type {
        // Answers to something we never sent (heartbeat replies, a peer's
        // complaint): never answered, so two endpoints cannot bounce errors
        // back and forth. The engine does the same.
        MessageType::PONG | MessageType::ERROR => Ok(()),
        _ if f.flags.is_response() => {
            let e = ErrorBody::new(ErrorCode::UnknownType, "unexpected response frame");
            framed.feed(e.frame(Some(id)).as_ref()).await
        }
        MessageType::PING => framed.feed(reply(MessageType::PONG, id, &f.body)).await,
        MessageType::ECHO => {
            framed
                .feed(reply(MessageType::ECHO_REPLY, id, &f.body))
                .await
        }
        MessageType::DATA if f.flags.ack_requested() => {
            let ack = DataAck {
                bytes_accepted: f.body.len() as u64,
            }
            .encode();
            framed.feed(reply(MessageType::DATA_ACK, id, &ack)).await
        }
        MessageType::DATA => Ok(()),
        t => {
            let msg = format!("type {t} is not a request this server handles");
            let e = ErrorBody::new(ErrorCode::UnknownType, &msg);
            framed.feed(e.frame(Some(id)).as_ref()).await
        }
    }
}

/// A response frame: RESPONSE flag, the request's id, no metadata.
fn reply(msg_type: MessageType, request_id: u64, body: &[u8]) -> FrameRef<'_> {
    FrameRef {
        msg_type,
        flags: Flags::RESPONSE,
        request_id,
        meta: &[],
        body,
    }
}

/// Sends the ERROR for a decode error after the replies already queued,
/// flushes, shuts down the write side and lingers briefly (see [`LINGER`]).
async fn close_with_error(
    mut framed: Framed<TcpStream, WarpwireCodec>,
    e: DecodeError,
) -> Result<(), CodecError> {
    let msg = e.error.to_string();
    let error = ErrorBody::new(e.code(), &msg).frame(e.request_id);
    framed.feed(error.as_ref()).await?;
    // Flushes everything queued, then shuts down the write half (FIN).
    SinkExt::<FrameRef<'_>>::close(&mut framed).await?;
    let mut stream = framed.into_inner();
    let mut sink = [0u8; 4096];
    let drain = async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
    Ok(())
}

//! What a caller hands the client ([`Request`]) and gets back ([`Pending`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use bytes::Bytes;
use warpwire_frame::{BodyCrc, Flags, Frame, MessageType};

use crate::ClientError;

/// How long [`Pending::wait`] waits past the request's deadline for the I/O
/// thread's verdict before deciding on its own: the I/O thread reports
/// timeouts itself, this only covers a thread that is late or stuck.
const WAIT_SLACK: Duration = Duration::from_millis(250);

/// A request to send: everything of a frame except the request_id, which
/// the I/O thread assigns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Message type.
    pub msg_type: MessageType,
    /// Flags (RESPONSE is not meaningful on a request).
    pub flags: Flags,
    /// Encoded metadata section, or empty.
    pub meta: Bytes,
    /// Body.
    pub body: Bytes,
    /// Deadline override; `None` uses [`crate::ClientConfig::request_timeout`].
    pub timeout: Option<Duration>,
    /// The body's CRC, computed by the caller ([`Request::with_body_crc`])
    /// so the I/O thread does not read the body for it.
    pub body_crc: Option<BodyCrc>,
}

impl Request {
    /// A request with no flags, no metadata and the default timeout.
    pub fn new(msg_type: MessageType, body: impl Into<Bytes>) -> Self {
        Self {
            msg_type,
            flags: Flags::NONE,
            meta: Bytes::new(),
            body: body.into(),
            timeout: None,
            body_crc: None,
        }
    }

    /// Adds flags.
    #[must_use]
    pub fn with_flags(mut self, flags: Flags) -> Self {
        self.flags = self.flags.with(flags);
        self
    }

    /// Sets the metadata section (see [`warpwire_frame::MetaBuilder`]).
    #[must_use]
    pub fn with_meta(mut self, meta: Bytes) -> Self {
        self.meta = meta;
        self
    }

    /// Computes the body's CRC now, on the calling thread, so the I/O
    /// thread, which is the bound of a bulk sender, only combines it with
    /// the header's. Worth it for large bodies (a `client data --file`
    /// chunk), when the caller's thread has CPU to spare.
    #[must_use]
    pub fn with_body_crc(mut self) -> Self {
        self.body_crc = Some(BodyCrc::of(&self.body));
        self
    }

    /// Overrides the deadline of this request.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

impl From<Frame> for Request {
    /// Takes type, flags, metadata and body; the frame's request_id is
    /// ignored.
    fn from(f: Frame) -> Self {
        Self {
            msg_type: f.msg_type,
            flags: f.flags,
            meta: f.meta,
            body: f.body,
            timeout: None,
            body_crc: None,
        }
    }
}

/// The outcome of a submitted request, to wait for or to `.await`.
///
/// `Pending<Frame>` (from [`crate::Client::request`]) completes with the
/// reply frame; `Pending<u64>` (from [`crate::Client::send`]) completes with
/// the request_id once the frame is queued on the connection.
///
/// Both forms can be mixed: a `Pending` polled as a future and then waited
/// on keeps working. Dropping it abandons the request (its reply, if any,
/// is discarded).
#[derive(Debug)]
#[must_use = "a request's outcome is only seen by waiting on or awaiting its Pending"]
pub struct Pending<T = Frame> {
    rx: oneshot::Receiver<Result<T, ClientError>>,
    deadline: Instant,
    /// Polled as a future: oneshot's blocking receive may no longer be used.
    polled: bool,
}

/// The I/O thread's end of a [`Pending`].
pub(crate) type Completer<T> = oneshot::Sender<Result<T, ClientError>>;

impl<T> Pending<T> {
    /// A pending outcome and the sender that completes it.
    pub(crate) fn channel(deadline: Instant) -> (Completer<T>, Self) {
        let (tx, rx) = oneshot::channel();
        (
            tx,
            Self {
                rx,
                deadline,
                polled: false,
            },
        )
    }

    /// An outcome known at submission (refused before reaching the thread).
    pub(crate) fn ready(result: Result<T, ClientError>) -> Self {
        let (tx, p) = Self::channel(Instant::now());
        // The receiver is alive in `p`, so the send cannot fail.
        let _ = tx.send(result);
        p
    }

    /// When the request times out.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether the outcome has arrived (waiting would not block).
    pub fn is_ready(&self) -> bool {
        self.rx.has_message() || self.rx.is_closed()
    }

    /// Blocks until the outcome arrives; never much longer than the
    /// request's deadline.
    pub fn wait(self) -> Result<T, ClientError> {
        let limit = self.deadline + WAIT_SLACK;
        self.wait_until(limit)
    }

    /// Blocks at most `timeout` (and never much past the request's
    /// deadline). Giving up early returns [`ClientError::Timeout`]; the
    /// request itself stays outstanding until its own deadline.
    pub fn wait_timeout(self, timeout: Duration) -> Result<T, ClientError> {
        let limit = Instant::now()
            .checked_add(timeout)
            .map_or(self.deadline + WAIT_SLACK, |t| {
                t.min(self.deadline + WAIT_SLACK)
            });
        self.wait_until(limit)
    }

    fn wait_until(mut self, limit: Instant) -> Result<T, ClientError> {
        if self.polled {
            return block_on_until(&mut self, limit);
        }
        match self.rx.recv_deadline(limit) {
            Ok(r) => r,
            Err(oneshot::RecvTimeoutError::Timeout) => Err(ClientError::Timeout),
            Err(oneshot::RecvTimeoutError::Disconnected) => Err(ClientError::Closed),
        }
    }
}

impl<T> Future for Pending<T> {
    type Output = Result<T, ClientError>;

    /// Completes with the outcome; a vanished I/O thread reads as
    /// [`ClientError::Closed`]. Deadlines are enforced by the I/O thread, so
    /// no timer is needed in the executor.
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.polled = true;
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(Ok(r)) => Poll::Ready(r),
            Poll::Ready(Err(oneshot::RecvError)) => Poll::Ready(Err(ClientError::Closed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Unparks the waiting thread.
struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `fut` on this thread until it completes or `limit` passes.
fn block_on_until<T>(fut: &mut Pending<T>, limit: Instant) -> Result<T, ClientError> {
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(r) = Pin::new(&mut *fut).poll(&mut cx) {
            return r;
        }
        let now = Instant::now();
        if now >= limit {
            return Err(ClientError::Timeout);
        }
        // Spurious unparks only cost another poll.
        thread::park_timeout(limit - now);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn noop_cx() -> Context<'static> {
        Context::from_waker(Waker::noop())
    }

    #[test]
    fn ready_outcome() {
        let p: Pending<u64> = Pending::ready(Ok(7));
        assert!(p.is_ready());
        assert_eq!(p.wait().unwrap(), 7);
    }

    #[test]
    fn local_wait_timeout() {
        let (_tx, p) = Pending::<u64>::channel(Instant::now() + Duration::from_secs(60));
        let t = Instant::now();
        assert!(matches!(
            p.wait_timeout(Duration::from_millis(30)),
            Err(ClientError::Timeout)
        ));
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn dropped_sender_reads_as_closed() {
        let (tx, p) = Pending::<u64>::channel(Instant::now() + Duration::from_secs(60));
        drop(tx);
        assert!(matches!(p.wait(), Err(ClientError::Closed)));
    }

    #[test]
    fn future_then_wait() {
        let (tx, mut p) = Pending::<u64>::channel(Instant::now() + Duration::from_secs(60));
        assert!(Pin::new(&mut p).poll(&mut noop_cx()).is_pending());
        let h = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            tx.send(Ok(5)).unwrap();
        });
        // Blocking after polling must not panic (oneshot forbids its own
        // blocking receive then) and must see the value.
        assert_eq!(p.wait().unwrap(), 5);
        h.join().unwrap();
    }

    #[test]
    fn future_completes_when_polled_again() {
        let (tx, mut p) = Pending::<u64>::channel(Instant::now() + Duration::from_secs(60));
        assert!(Pin::new(&mut p).poll(&mut noop_cx()).is_pending());
        tx.send(Err(ClientError::Disconnected)).unwrap();
        match Pin::new(&mut p).poll(&mut noop_cx()) {
            Poll::Ready(Err(ClientError::Disconnected)) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn request_from_frame_drops_the_id() {
        let f = Frame::new(MessageType::DATA, 99, &b"x"[..]).with_flags(Flags::ACK_REQUESTED);
        let r = Request::from(f);
        assert_eq!(r.msg_type, MessageType::DATA);
        assert!(r.flags.ack_requested());
        assert_eq!(r.timeout, None);
        let r = r.with_timeout(Duration::from_secs(1));
        assert_eq!(r.timeout, Some(Duration::from_secs(1)));
    }
}

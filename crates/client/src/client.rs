//! The [`GenericClient`] handle: submits requests to its I/O thread. The
//! warpwire calls ([`Client`]) are at the end.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{SendTimeoutError, Sender};
use warpwire_frame::{
    Auth, AuthReply, BroadcastAck, DataAck, Flags, Frame, MessageType, Ping, Stats,
};
use warpwire_transport::{Transport, TransportError, Wake};

use crate::io::{self, Done, Shared, Submit};
use crate::protocol::{ClientHooks, Warpwire};
use crate::{ClientConfig, ClientError, Pending, Request};

/// Slack on top of `connect_timeout` for [`Client::connect`] to hear from
/// its I/O thread: the thread enforces the timeout itself, this only guards
/// against a factory that hangs.
const START_SLACK: Duration = Duration::from_secs(2);

/// A connection to one warpwire server, driven by its own I/O thread: the
/// general-purpose client over warpwire's framing. Its warpwire calls
/// ([`Client::ping`], [`Client::echo`], ...) are below the generic ones.
pub type Client = GenericClient<Warpwire>;

/// A connection to one server speaking protocol `P`, driven by its own I/O
/// thread: connection, reconnect with backoff, pipelining, correlation,
/// timeouts, and whatever the protocol's [`ClientHooks`] add (warpwire:
/// AUTH, heartbeats, answering PINGs, ERROR replies as errors).
///
/// `GenericClient` is `Send + Sync`: share it (`&`, `Arc`) between threads
/// and every call pipelines onto the one connection. See the crate
/// documentation for the threading model.
///
/// Correlation is the protocol's
/// ([`ClientProtocol::CORRELATION`](crate::ClientProtocol::CORRELATION)). With
/// an in-order protocol ([`Echo`](crate::Echo), [`Http`](crate::Http)) a
/// request that times out while in flight cannot be skipped (its reply
/// will still come, and would be taken for the next one's): the I/O thread
/// resets the connection, the requests in flight behind it fail with
/// [`ClientError::PipelineReset`], and the client reconnects (per
/// [`ClientConfig::reconnect`]). Requests not yet sent wait for the new
/// connection.
pub struct GenericClient<P: ClientHooks> {
    tx: Option<Sender<Submit<P>>>,
    waker: Arc<dyn Wake>,
    shared: Arc<Shared<P::Reply>>,
    thread: Option<JoinHandle<()>>,
    protocol: Arc<P>,
    cfg: ClientConfig,
    addr: SocketAddr,
}

impl<P: ClientHooks> std::fmt::Debug for GenericClient<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenericClient")
            .field("protocol", &self.protocol.name())
            .field("addr", &self.addr)
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Starts the I/O thread, which builds its transport with `factory`,
    /// connects to `addr` and authenticates if `cfg.auth` is set. Returns
    /// once the connection is ready, or with the reason it could not be
    /// made: the first attempt is not retried ([`ClientConfig::reconnect`]
    /// applies to connections lost later).
    pub fn connect<T, F>(
        factory: F,
        addr: SocketAddr,
        cfg: ClientConfig,
    ) -> Result<Self, ClientError>
    where
        T: Transport,
        F: Fn() -> Result<T, TransportError> + Send + 'static,
    {
        Self::connect_with(Warpwire::for_client(&cfg), factory, addr, cfg)
    }
}

impl<P: ClientHooks> GenericClient<P> {
    /// Starts the I/O thread, which builds its transport with `factory`,
    /// connects to `addr` and runs the protocol's handshake, if it has one.
    /// Returns once the connection is ready, or with the reason it could
    /// not be made: the first attempt is not retried
    /// ([`ClientConfig::reconnect`] applies to connections lost later).
    ///
    /// [`ClientConfig::heartbeat_interval`] applies if the protocol has a
    /// heartbeat, [`ClientConfig::auth`] and [`ClientConfig::max_payload`]
    /// are warpwire's (other protocols have their limits in `protocol`).
    pub fn connect_with<T, F>(
        protocol: P,
        factory: F,
        addr: SocketAddr,
        cfg: ClientConfig,
    ) -> Result<Self, ClientError>
    where
        T: Transport,
        F: Fn() -> Result<T, TransportError> + Send + 'static,
    {
        cfg.validate()?;
        let protocol = Arc::new(protocol);
        let (tx, rx) = crossbeam_channel::bounded(cfg.queue_capacity);
        let shared = Arc::new(Shared::new());
        let (ready_tx, ready_rx) = oneshot::channel();
        let thread = {
            let shared = Arc::clone(&shared);
            let cfg = cfg.clone();
            let protocol = Arc::clone(&protocol);
            thread::Builder::new()
                .name("warpwire-client-io".into())
                .spawn(move || io::run(factory, protocol, addr, cfg, rx, shared, ready_tx))
                .map_err(ClientError::Spawn)?
        };
        let waker = match ready_rx.recv_timeout(cfg.connect_timeout + START_SLACK) {
            Ok(Ok(w)) => w,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(oneshot::RecvTimeoutError::Timeout) => {
                // The thread is stuck (in the factory); it exits on its own
                // once it finds the flag or its ready channel closed.
                shared.shutdown.store(true, Ordering::SeqCst);
                return Err(ClientError::Timeout);
            }
            Err(oneshot::RecvTimeoutError::Disconnected) => {
                let _ = thread.join();
                return Err(ClientError::Closed);
            }
        };
        Ok(Self {
            tx: Some(tx),
            waker,
            shared,
            thread: Some(thread),
            protocol,
            cfg,
            addr,
        })
    }

    /// The protocol the client speaks.
    pub fn protocol(&self) -> &P {
        &self.protocol
    }

    /// The server address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The settings the client runs with.
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// Whether the connection is currently up (and its handshake, if any,
    /// accepted).
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::SeqCst)
    }

    /// Successful reconnections since the client started.
    pub fn reconnects(&self) -> u64 {
        self.shared.reconnects.load(Ordering::Relaxed)
    }

    /// Server-initiated messages dropped because a subscriber's channel was
    /// full.
    pub fn dropped_broadcasts(&self) -> u64 {
        self.shared.dropped_broadcasts.load(Ordering::Relaxed)
    }

    /// Replies that arrived after their request had timed out or been
    /// abandoned.
    pub fn late_replies(&self) -> u64 {
        self.shared.late_replies.load(Ordering::Relaxed)
    }

    /// Sends a request and returns its pending reply, as the protocol's
    /// [`ClientHooks::reply_result`] makes it (warpwire: a reply with the
    /// ERROR type completes it with [`ClientError::Server`]). Its deadline
    /// is the request's own timeout ([`ClientHooks::request_timeout`],
    /// warpwire's [`Request::timeout`]) or
    /// [`ClientConfig::request_timeout`].
    ///
    /// Does not block, except when the submission queue is full
    /// ([`ClientConfig::queue_capacity`]); then it waits at most until the
    /// request's deadline.
    pub fn request(&self, req: impl Into<P::Request>) -> Pending<P::Reply> {
        let req = req.into();
        let timeout = self.protocol.request_timeout(&req);
        self.submit_reply(req, timeout)
    }

    /// [`GenericClient::request`] with the deadline `timeout` from now.
    pub fn request_within(
        &self,
        req: impl Into<P::Request>,
        timeout: Duration,
    ) -> Pending<P::Reply> {
        self.submit_reply(req.into(), Some(timeout))
    }

    fn submit_reply(&self, req: P::Request, timeout: Option<Duration>) -> Pending<P::Reply> {
        let deadline = self.deadline(timeout);
        if let Err(e) = self.protocol.check_request(&req) {
            return Pending::ready(Err(e));
        }
        let (tx, pending) = Pending::channel(deadline);
        self.submit(req, deadline, Done::Reply(tx));
        pending
    }

    fn deadline(&self, timeout: Option<Duration>) -> Instant {
        let now = Instant::now();
        let timeout = timeout.unwrap_or(self.cfg.request_timeout);
        // Absurd timeouts (Duration::MAX) mean "a very long time".
        now.checked_add(timeout)
            .unwrap_or(now + Duration::from_secs(100 * 365 * 24 * 3600))
    }

    fn submit(&self, request: P::Request, deadline: Instant, done: Done<P::Reply>) {
        let Some(tx) = &self.tx else {
            done.fail_closed();
            return;
        };
        let s = Submit {
            request,
            deadline,
            done,
        };
        match tx.send_deadline(s, deadline) {
            Ok(()) => {
                if self.shared.sleeping.swap(false, Ordering::SeqCst) {
                    self.waker.wake();
                }
            }
            Err(SendTimeoutError::Timeout(s)) => s.done.fail_timeout(),
            Err(SendTimeoutError::Disconnected(s)) => s.done.fail_closed(),
        }
    }

    /// Subscribes to server-initiated messages. Warpwire's: BROADCASTs
    /// relayed from other clients (request_id 0), other frames without the
    /// RESPONSE flag, and unsolicited ERRORs (IDLE_TIMEOUT before the
    /// server closes, the error of a fire-and-forget request). Echo and
    /// HTTP have none.
    ///
    /// The channel holds [`ClientConfig::subscription_capacity`] messages;
    /// the I/O thread never blocks on it and drops the newest message when
    /// it is full ([`GenericClient::dropped_broadcasts`]). Every subscriber
    /// gets every message; dropping the receiver unsubscribes. The channel
    /// disconnects when the client closes. The first subscriber also gets
    /// what arrived before it subscribed (up to the same capacity), so a
    /// broadcast sent right after `connect` returned is not lost.
    pub fn subscribe(&self) -> crossbeam_channel::Receiver<P::Reply> {
        let (tx, rx) = crossbeam_channel::bounded(self.cfg.subscription_capacity);
        if let Ok(mut subs) = self.shared.subscribers.lock() {
            for f in subs.early.take().into_iter().flatten() {
                // The channel has the capacity the early queue was held to.
                let _ = tx.try_send(f);
            }
            subs.senders.push(tx);
        }
        rx
    }

    /// Stops the I/O thread: requests still outstanding fail with
    /// [`ClientError::Closed`], subscriptions end, and the connection is
    /// closed gracefully (FIN after what was sent). Dropping the client does
    /// the same.
    pub fn close(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.waker.wake();
        if let Some(t) = self.thread.take() {
            // A panicked I/O thread has already failed everything it held.
            let _ = t.join();
        }
        self.tx = None;
    }
}

impl<P: ClientHooks> Drop for GenericClient<P> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The warpwire calls.
impl Client {
    /// Sends a frame that gets no reply (DATA without ACK_REQUESTED).
    /// Completes with the request_id once the frame is queued on the
    /// connection; delivery is not confirmed. Warpwire only: a request
    /// without a reply has no place in an in-order protocol's stream.
    pub fn send(&self, req: impl Into<Request>) -> Pending<u64> {
        let req = req.into();
        let deadline = self.deadline(req.timeout);
        if let Err(e) = self.protocol.check_request(&req) {
            return Pending::ready(Err(e));
        }
        let (tx, pending) = Pending::channel(deadline);
        self.submit(req, deadline, Done::Written(tx));
        pending
    }

    /// Round-trip time of a PING. The body carries the client's monotonic
    /// clock; the PONG must return it unchanged.
    pub fn ping(&self) -> Result<Duration, ClientError> {
        let sent = self.shared.now_ns();
        let body = Ping { timestamp_ns: sent }.encode();
        let reply = expect(
            self.request(Request::new(MessageType::PING, body.to_vec()))
                .wait()?,
            MessageType::PONG,
        )?;
        let echoed = Ping::decode(&reply.body).map_err(ClientError::Body)?;
        if echoed.timestamp_ns != sent {
            return Err(ClientError::ReplyMismatch(
                "PONG body differs from the PING's",
            ));
        }
        Ok(Duration::from_nanos(
            self.shared.now_ns().saturating_sub(sent),
        ))
    }

    /// Sends an ECHO and returns the ECHO_REPLY's body.
    pub fn echo(&self, body: impl Into<Bytes>) -> Result<Bytes, ClientError> {
        let reply = self.request(Request::new(MessageType::ECHO, body)).wait()?;
        Ok(expect(reply, MessageType::ECHO_REPLY)?.body)
    }

    /// Sends a BROADCAST; returns how many connections the server relayed
    /// it to.
    pub fn broadcast(&self, body: impl Into<Bytes>) -> Result<u32, ClientError> {
        let reply = self
            .request(Request::new(MessageType::BROADCAST, body))
            .wait()?;
        let reply = expect(reply, MessageType::BROADCAST_ACK)?;
        Ok(BroadcastAck::decode(&reply.body)
            .map_err(ClientError::Body)?
            .recipients)
    }

    /// Sends DATA. With `ack`, waits for the DATA_ACK and returns its
    /// `bytes_accepted`; without, returns `None` once the frame is queued.
    pub fn data(&self, body: impl Into<Bytes>, ack: bool) -> Result<Option<u64>, ClientError> {
        if !ack {
            self.send(Request::new(MessageType::DATA, body)).wait()?;
            return Ok(None);
        }
        let req = Request::new(MessageType::DATA, body).with_flags(Flags::ACK_REQUESTED);
        let reply = expect(self.request(req).wait()?, MessageType::DATA_ACK)?;
        Ok(Some(
            DataAck::decode(&reply.body)
                .map_err(ClientError::Body)?
                .bytes_accepted,
        ))
    }

    /// The server's counters (STATS → STATS_REPLY metadata).
    pub fn stats(&self) -> Result<Stats, ClientError> {
        let reply = self
            .request(Request::new(MessageType::STATS, Bytes::new()))
            .wait()?;
        let reply = expect(reply, MessageType::STATS_REPLY)?;
        let meta = reply.metadata().map_err(|e| ClientError::Body(e.into()))?;
        Stats::from_meta(&meta).map_err(ClientError::Body)
    }

    /// Authenticates this connection. A refusal arrives either as an
    /// AUTH_REPLY with `ok == false` or as [`ClientError::Server`] with
    /// AUTH_FAILED, depending on the server. Credentials given this way are
    /// not replayed after a reconnect; use [`ClientConfig::auth`] for that.
    pub fn auth(&self, user: &str, token: &[u8]) -> Result<AuthReply, ClientError> {
        let frame = Auth { user, token }.request(0).map_err(ClientError::Body)?;
        let reply = expect(self.request(frame).wait()?, MessageType::AUTH_REPLY)?;
        AuthReply::decode(&reply.body).map_err(ClientError::Body)
    }

    /// Sends a frame of application type `msg_type` (0x80..=0xFE) and
    /// returns the body of whatever non-ERROR reply the handler gives.
    pub fn app(&self, msg_type: u8, body: impl Into<Bytes>) -> Result<Bytes, ClientError> {
        let ty = MessageType(msg_type);
        if !ty.is_application() {
            return Err(ClientError::NotApplicationType(msg_type));
        }
        Ok(self.request(Request::new(ty, body)).wait()?.body)
    }
}

impl<R> Done<R> {
    fn fail_closed(self) {
        self.fail_with(ClientError::Closed);
    }

    fn fail_timeout(self) {
        self.fail_with(ClientError::Timeout);
    }
}

/// Checks a reply's type.
fn expect(reply: Frame, expected: MessageType) -> Result<Frame, ClientError> {
    if reply.msg_type == expected {
        Ok(reply)
    } else {
        Err(ClientError::UnexpectedReply {
            expected,
            got: reply.msg_type,
        })
    }
}

//! warpwire's own binary framing (docs/protocol.md) as the engine's first
//! [`Protocol`]: the frame decoder, rate limits, the authentication gate,
//! dispatch of every message type, application handlers, the DATA sink
//! and the error replies. Everything about connections (limits, pauses,
//! flushing, idle, broadcast fan-out) is the generic worker's.
//!
//! ```text
//!   bytes ─► Decoder (zero-copy frames) ─► rate limit ─► auth gate ─► dispatch
//!                  │ DecodeError                                  │
//!                  └──► ERROR (code, request id), close ◄─────────┘ errors
//!   PING/ECHO/STATS/AUTH/DATA/0x80-0xFE ─► replies into ctx.out()
//!   BROADCAST ─► ctx.publish(relay with `from`) ─► BROADCAST_ACK
//! ```

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use hdrhistogram::Histogram;
use rand::RngCore;
use warpwire_frame::{
    Auth, AuthReply, BroadcastAck, DataAck, Decoder, DecoderConfig, ErrorBody, ErrorCode, Flags,
    Frame, FrameRef, MessageType, MetaBuilder,
};
use warpwire_transport::{CloseReason, ConnId, Transport, TransportError};

use crate::handler::{HandlerError, Handlers, SessionInfo};
use crate::limits::Limit;
use crate::metrics::{Metrics, WorkerCounters};
use crate::protocol::{ConnInfo, Ctx, Done, InputHeld, Outcome, Protocol, Refusal, Step};
use crate::{ServerConfig, UserDb};

/// The warpwire protocol with its handlers, users and settings.
pub struct Warpwire {
    config: ServerConfig,
    handlers: Arc<Handlers>,
    users: Option<Arc<UserDb>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Warpwire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Warpwire")
            .field("handlers", &self.handlers)
            .field("users", &self.users.is_some())
            .finish()
    }
}

impl Warpwire {
    /// The protocol as configured; `metrics` answers STATS.
    pub fn new(
        config: ServerConfig,
        handlers: impl Into<Arc<Handlers>>,
        users: Option<UserDb>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self::with_shared_users(config, handlers, users.map(Arc::new), metrics)
    }

    /// [`Warpwire::new`] with a users database other protocols of the
    /// server check too (RESP's AUTH): loaded once, shared.
    pub fn with_shared_users(
        config: ServerConfig,
        handlers: impl Into<Arc<Handlers>>,
        users: Option<Arc<UserDb>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            config,
            handlers: handlers.into(),
            users,
            metrics,
        }
    }
}

/// Per worker: the worker's share of the server-wide rate limit, and the
/// latency histogram it publishes every housekeeping period.
pub struct Local {
    worker: usize,
    global: Limit,
    hist: Histogram<u64>,
}

/// Per connection.
pub struct Conn {
    id: ConnId,
    decoder: Decoder,
    session_id: [u8; 16],
    user: Option<String>,
    unauthenticated: u32,
    auth_failures: u32,
    limit: Limit,
    /// Has sent DATA: the sink hears of its end.
    sent_data: bool,
    /// The request whose handler runs on the application workers.
    pending: Option<Pending>,
    /// DATA frames for a blocking sink, taken while more whole DATA frames
    /// follow in the decoder, handed to the application workers as one
    /// job: one wake-up per batch instead of one per frame.
    batch: Vec<(u64, Bytes)>,
    /// Body bytes in `batch`.
    batch_bytes: usize,
}

/// Most body bytes of one DATA batch (the decoder holds about one largest
/// frame, so a batch rarely reaches it).
const DATA_BATCH_BYTES: usize = 1 << 20;

/// A request handed to the application workers, answered on completion.
struct Pending {
    id: u64,
    kind: PendingKind,
    /// When its batch was polled (for the latency histogram).
    since: Instant,
}

enum PendingKind {
    /// An application handler of this type; the job returns
    /// `Result<Option<Bytes>, HandlerError>`.
    App(MessageType),
    /// The DATA sink over a batch of frames (these request ids, in order;
    /// only the last may ask for an ACK); the job returns one
    /// `Result<u64, HandlerError>` per frame.
    Data { ids: Vec<u64>, ack: bool },
}

/// Relays `body` as a BROADCAST from session `from` to every eligible
/// warpwire connection on every worker (the relay frame docs/protocol.md
/// describes); how many it reached. Other protocols publish through it
/// too (HTTP's `POST /broadcast`).
pub fn broadcast(ctx: &mut Ctx<'_>, from: &[u8; 16], body: Bytes) -> u64 {
    let mut meta = MetaBuilder::new();
    // A 16-byte value under a 4-byte key always fits.
    let _ = meta.push("from", from);
    let relay = Frame::new(MessageType::BROADCAST, 0, body).with_meta(meta.finish());
    match relay.to_bytes() {
        Ok(bytes) => ctx.publish(bytes),
        Err(_) => 0,
    }
}

impl Protocol for Warpwire {
    type Conn = Conn;
    type Local = Local;

    fn name(&self) -> &'static str {
        "warpwire"
    }

    fn local(&self, worker: usize, workers: usize, now: Instant) -> Local {
        let w = workers.max(1) as f64;
        let c = &self.config;
        Local {
            worker,
            global: Limit::new(
                c.global_rate.map(|r| r / w),
                c.global_burst.or(c.global_rate).map(|b| b / w),
                now,
            ),
            hist: Metrics::local_histogram(),
        }
    }

    fn open(&self, local: &mut Local, info: &ConnInfo, ctx: &mut Ctx<'_>) -> Conn {
        let c = &self.config;
        let mut session_id = [0u8; 16];
        rand::rng().fill_bytes(&mut session_id);
        // A client certificate verified by mutual TLS authenticates the
        // connection as its subject, as a successful AUTH would.
        let user = info.identity.as_deref().map(str::to_owned);
        if let Some(u) = &user {
            tracing::info!(worker = local.worker, conn = %info.conn, user = u, "authenticated by client certificate");
        }
        ctx.set_eligible(!c.require_auth || user.is_some());
        Conn {
            id: info.conn,
            decoder: Decoder::new(DecoderConfig {
                max_payload: c.max_frame,
                ..DecoderConfig::default()
            }),
            session_id,
            user,
            unauthenticated: 0,
            auth_failures: 0,
            limit: Limit::new(c.conn_rate, c.conn_burst, ctx.now),
            sent_data: false,
            pending: None,
            batch: Vec::new(),
            batch_bytes: 0,
        }
    }

    fn read_buf<'c>(&self, conn: &'c mut Conn) -> &'c mut [u8] {
        conn.decoder.read_buf()
    }

    fn commit(&self, conn: &mut Conn, n: usize) {
        conn.decoder.commit(n);
    }

    fn receive<T: Transport>(
        &self,
        conn: &mut Conn,
        t: &mut T,
        id: ConnId,
    ) -> Option<Result<usize, TransportError>> {
        // Straight into the decoder's spare room: no zeroing of a region
        // the transport overwrites anyway.
        conn.decoder.fill_with(|buf, max| t.recv_buf(id, buf, max))
    }

    fn step(&self, local: &mut Local, conn: &mut Conn, ctx: &mut Ctx<'_>) -> Step {
        match conn.decoder.decode() {
            Ok(Some(frame)) => {
                self.handle(local, conn, frame, ctx);
                Step::Request
            }
            Ok(None) => {
                // A batch is only kept open while its next frame is whole
                // in the decoder; should one be left anyway, it goes now.
                if !conn.batch.is_empty() && conn.pending.is_none() {
                    self.offload_batch(local, conn, ctx, false);
                }
                Step::NeedInput
            }
            Err(e) => {
                tracing::debug!(worker = ctx.worker, conn = %conn.id, error = %e, "protocol error");
                ctx.protocol_error(&e.to_string());
                send_error(ctx, e.code(), &e.error.to_string(), e.request_id);
                Step::Request
            }
        }
    }

    fn refuse(&self, _: &mut Conn, why: Refusal, ctx: &mut Ctx<'_>) {
        let (code, msg) = match why {
            Refusal::Busy { limit } => (
                ErrorCode::ServerBusy,
                format!("connection limit of {limit} reached"),
            ),
            Refusal::Rejected => (ErrorCode::ServerBusy, "connection refused".to_owned()),
            Refusal::Idle { after } => (
                ErrorCode::IdleTimeout,
                format!("no frame for {} s", after.as_secs_f64()),
            ),
            Refusal::InputBudget { budget, held } => (
                ErrorCode::ServerBusy,
                format!(
                    "server input budget of {budget} bytes exceeded: a partial frame holding {held} bytes refused"
                ),
            ),
        };
        send_error(ctx, code, &msg, None);
        ctx.close();
    }

    fn input_held(&self, conn: &Conn) -> InputHeld {
        InputHeld {
            allocated: conn.decoder.allocated(),
            partial: conn.decoder.partial_frame().is_some(),
        }
    }

    fn drop_input(&self, conn: &mut Conn) {
        conn.decoder = Decoder::new(*conn.decoder.config());
    }

    fn closed(&self, local: &mut Local, conn: Conn, _: &ConnInfo, _: Option<CloseReason>) {
        if conn.sent_data {
            self.handlers.data().on_session_end(&SessionInfo {
                session_id: &conn.session_id,
                user: conn.user.as_deref(),
                worker: local.worker,
            });
        }
    }

    fn complete(&self, local: &mut Local, conn: &mut Conn, outcome: Outcome, ctx: &mut Ctx<'_>) {
        let Some(p) = conn.pending.take() else {
            return;
        };
        let id = p.id;
        match (p.kind, outcome) {
            (_, Err(panic)) => {
                tracing::warn!(worker = local.worker, conn = %conn.id, %panic, "handler panicked");
                send_error(ctx, ErrorCode::Internal, "handler failed", Some(id));
            }
            (PendingKind::App(t), Ok(done)) => {
                match done
                    .downcast::<Result<Option<Bytes>, HandlerError>>()
                    .map(|b| *b)
                {
                    Ok(Ok(Some(body))) => reply(ctx, t, id, &body),
                    Ok(Ok(None)) => {}
                    Ok(Err(e)) => send_error(ctx, ErrorCode::Internal, &e.message, Some(id)),
                    Err(_) => send_error(ctx, ErrorCode::Internal, "handler failed", Some(id)),
                }
            }
            (PendingKind::Data { ids, ack }, Ok(done)) => {
                match done
                    .downcast::<Vec<Result<u64, HandlerError>>>()
                    .map(|b| *b)
                {
                    Ok(results) => {
                        let last = ids.len().saturating_sub(1);
                        for (i, (id, r)) in ids.iter().zip(results).enumerate() {
                            match r {
                                Ok(n) if ack && i == last => {
                                    let body = DataAck { bytes_accepted: n }.encode();
                                    reply(ctx, MessageType::DATA_ACK, *id, &body);
                                }
                                Ok(_) => {}
                                Err(e) => {
                                    send_error(ctx, ErrorCode::Internal, &e.message, Some(*id))
                                }
                            }
                        }
                    }
                    Err(_) => send_error(ctx, ErrorCode::Internal, "data sink failed", Some(id)),
                }
            }
        }
        let ns = Instant::now().saturating_duration_since(p.since).as_nanos();
        let _ = local
            .hist
            .record(u64::try_from(ns).unwrap_or(u64::MAX).max(1));
    }

    fn housekeeping(&self, local: &mut Local, _: Instant) {
        self.metrics.publish_latency(local.worker, &mut local.hist);
    }
}

/// Queues an encoded frame.
fn queue(ctx: &mut Ctx<'_>, f: FrameRef<'_>) {
    let before = ctx.out().len();
    if f.encode(ctx.out()).is_ok() {
        let n = (ctx.out().len() - before) as u64;
        let c = ctx.counters();
        WorkerCounters::add(&c.messages_out, 1);
        WorkerCounters::add(&c.bytes_out, n);
    }
}

fn reply(ctx: &mut Ctx<'_>, msg_type: MessageType, request_id: u64, body: &[u8]) {
    queue(
        ctx,
        FrameRef {
            msg_type,
            flags: Flags::RESPONSE,
            request_id,
            meta: &[],
            body,
        },
    );
}

/// Runs `job` on the application workers with session `s`'s info.
fn offload_for(
    local: &Local,
    s: &Conn,
    ctx: &mut Ctx<'_>,
    job: impl FnOnce(&SessionInfo<'_>) -> Done + Send + 'static,
) {
    let (sid, user, worker) = (s.session_id, s.user.clone(), local.worker);
    ctx.offload(move || {
        job(&SessionInfo {
            session_id: &sid,
            user: user.as_deref(),
            worker,
        })
    });
}

/// Queues an ERROR; the codes that end the connection close it.
fn send_error(ctx: &mut Ctx<'_>, code: ErrorCode, msg: &str, request_id: Option<u64>) {
    WorkerCounters::add(&ctx.counters().errors, 1);
    let f = ErrorBody::new(code, msg).frame(request_id);
    queue(ctx, f.as_ref());
    if code.closes_connection() {
        ctx.close();
    }
}

impl Warpwire {
    /// Hands the session's DATA batch to the sink on the application
    /// workers, one job writing the frames in order; `ack`: its last frame
    /// asked for an ACK.
    fn offload_batch(&self, local: &Local, s: &mut Conn, ctx: &mut Ctx<'_>, ack: bool) {
        let batch = std::mem::take(&mut s.batch);
        s.batch_bytes = 0;
        let ids: Vec<u64> = batch.iter().map(|(id, _)| *id).collect();
        let Some(&last) = ids.last() else {
            return;
        };
        let sink = self.handlers.data().clone();
        offload_for(local, s, ctx, move |info| {
            let results: Vec<Result<u64, HandlerError>> = batch
                .iter()
                .map(|(_, body)| sink.on_data(info, body))
                .collect();
            Box::new(results) as Done
        });
        s.pending = Some(Pending {
            id: last,
            kind: PendingKind::Data { ids, ack },
            since: ctx.now,
        });
    }

    fn info<'a>(&self, local: &Local, conn: &'a Conn) -> SessionInfo<'a> {
        SessionInfo {
            session_id: &conn.session_id,
            user: conn.user.as_deref(),
            worker: local.worker,
        }
    }

    fn handle(&self, local: &mut Local, s: &mut Conn, f: Frame, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        {
            let c = ctx.counters();
            WorkerCounters::add(&c.messages_in, 1);
            WorkerCounters::add(&c.bytes_in, f.encoded_len() as u64);
        }
        let id = f.request_id;
        if !s.limit.allow(now) || !local.global.allow(now) {
            WorkerCounters::add(&ctx.counters().rate_limited, 1);
            let msg = "rate limit exceeded; frame dropped";
            send_error(ctx, ErrorCode::RateLimited, msg, Some(id));
            return;
        }
        let cfg = &self.config;
        if cfg.require_auth
            && s.user.is_none()
            && !matches!(
                f.msg_type,
                MessageType::PING | MessageType::AUTH | MessageType::PONG | MessageType::ERROR
            )
        {
            s.unauthenticated += 1;
            let close = s.unauthenticated >= cfg.max_unauthenticated;
            let msg = "authenticate first (AUTH)";
            send_error(ctx, ErrorCode::Unauthenticated, msg, Some(id));
            if close {
                ctx.close();
            }
            return;
        }
        // Frames flagged RESPONSE answer something we sent; PONG and ERROR
        // are expected (heartbeats, peer complaints) and never answered, so
        // two endpoints can never bounce errors back and forth.
        match f.msg_type {
            MessageType::PONG => {}
            MessageType::ERROR => {
                tracing::debug!(worker = local.worker, conn = %s.id, "peer sent ERROR");
            }
            _ if f.flags.is_response() => {
                let msg = "unexpected response frame";
                send_error(ctx, ErrorCode::UnknownType, msg, Some(id));
            }
            MessageType::PING => reply(ctx, MessageType::PONG, id, &f.body),
            MessageType::ECHO => reply(ctx, MessageType::ECHO_REPLY, id, &f.body),
            MessageType::BROADCAST => {
                let recipients = broadcast(ctx, &s.session_id, f.body.clone());
                let recipients = u32::try_from(recipients).unwrap_or(u32::MAX);
                reply(
                    ctx,
                    MessageType::BROADCAST_ACK,
                    id,
                    &BroadcastAck { recipients }.encode(),
                );
            }
            MessageType::AUTH => self.auth(local, s, &f, ctx),
            MessageType::DATA if self.handlers.data().blocking() => {
                s.sent_data = true;
                let ack = f.flags.ack_requested();
                s.batch_bytes += f.body.len();
                s.batch.push((id, f.body.clone()));
                // The next frame joins this batch if nothing can come
                // between: it has all arrived, passes the decoder's checks,
                // is DATA and gets past the rate limits (the session's
                // authentication cannot change before it). Replies then
                // still leave in request order.
                let next_joins = !ack
                    && s.batch_bytes < DATA_BATCH_BYTES
                    && s.decoder
                        .peek()
                        .is_some_and(|h| h.msg_type == MessageType::DATA && !h.flags.is_response())
                    && s.limit.would_allow(now)
                    && local.global.would_allow(now);
                if !next_joins {
                    self.offload_batch(local, s, ctx, ack);
                }
                return;
            }
            MessageType::DATA => {
                s.sent_data = true;
                let info = self.info(local, s);
                match self.handlers.data().on_data(&info, &f.body) {
                    Ok(n) if f.flags.ack_requested() => {
                        let ack = DataAck { bytes_accepted: n }.encode();
                        reply(ctx, MessageType::DATA_ACK, id, &ack);
                    }
                    Ok(_) => {}
                    Err(e) => send_error(ctx, ErrorCode::Internal, &e.message, Some(id)),
                }
            }
            MessageType::STATS => match self.metrics.totals().response(id) {
                Ok(r) => queue(ctx, r.as_ref()),
                Err(_) => send_error(ctx, ErrorCode::Internal, "stats unavailable", Some(id)),
            },
            t if self.handlers.app(t.0).is_some_and(|e| e.blocking) => {
                let Some(entry) = self.handlers.app(t.0) else {
                    return;
                };
                let h = entry.handler.clone();
                offload_for(local, s, ctx, move |info| {
                    Box::new(h.handle(info, &f)) as Done
                });
                s.pending = Some(Pending {
                    id,
                    kind: PendingKind::App(t),
                    since: now,
                });
                return;
            }
            t if t.is_application() => {
                let info = self.info(local, s);
                match self.handlers.app(t.0).map(|e| e.handler.handle(&info, &f)) {
                    Some(Ok(Some(body))) => reply(ctx, t, id, &body),
                    Some(Ok(None)) => {}
                    Some(Err(e)) => send_error(ctx, ErrorCode::Internal, &e.message, Some(id)),
                    None => {
                        let msg = format!("no handler for type {t}");
                        send_error(ctx, ErrorCode::UnknownType, &msg, Some(id));
                    }
                }
            }
            t => {
                let msg = format!("type {t} is not a request this server handles");
                send_error(ctx, ErrorCode::UnknownType, &msg, Some(id));
            }
        }
        let ns = Instant::now().saturating_duration_since(now).as_nanos();
        let _ = local
            .hist
            .record(u64::try_from(ns).unwrap_or(u64::MAX).max(1));
    }

    fn auth(&self, local: &Local, s: &mut Conn, f: &Frame, ctx: &mut Ctx<'_>) {
        let id = f.request_id;
        // The decoder checked AUTH bodies already; this cannot fail for a
        // decoded frame, but a failure is still answered properly.
        let Ok(a) = Auth::decode(&f.body) else {
            send_error(ctx, ErrorCode::Malformed, "bad AUTH body", Some(id));
            return;
        };
        let Some(users) = self.users.as_ref() else {
            // No users configured: nothing to check against. Refuse with
            // AUTH_REPLY ok=0; the session continues unauthenticated.
            let r = AuthReply {
                ok: false,
                session_id: [0; 16],
            };
            reply(ctx, MessageType::AUTH_REPLY, id, &r.encode());
            return;
        };
        if users.verify(a.user, a.token) {
            s.user = Some(a.user.to_owned());
            let r = AuthReply {
                ok: true,
                session_id: s.session_id,
            };
            reply(ctx, MessageType::AUTH_REPLY, id, &r.encode());
            ctx.set_eligible(true);
            tracing::info!(worker = local.worker, conn = %s.id, user = a.user, "authenticated");
        } else {
            s.auth_failures += 1;
            let close = s.auth_failures >= self.config.max_auth_failures;
            tracing::info!(worker = local.worker, conn = %s.id, user = a.user, failures = s.auth_failures, "authentication failed");
            send_error(ctx, ErrorCode::AuthFailed, "bad user or token", Some(id));
            if close {
                ctx.close();
            }
        }
    }
}

//! # warpwire-resp: the Redis protocol served by the warpwire engine
//!
//! An [`engine::Protocol`](warpwire_engine::Protocol) speaking RESP2, and
//! RESP3 after `HELLO 3`, to Redis clients (redis-cli, redis-benchmark,
//! client libraries) over any warpwire transport, with an in-memory
//! keyspace shared by every worker. Sans-IO like the rest of the seam:
//! bytes in, bytes out, time passed in (`ctx.now`, housekeeping's `now`);
//! it never reads a clock.
//!
//! ```text
//!  recv ─► input buffer ─► parse.rs: multibulk *N $L | inline "a b"
//!            ▲                │   protocol error: -ERR Protocol error: ..., close
//!            │                ▼
//!            │          cmd/: lookup, arity, NOAUTH, OOM, subscribed-mode check
//!            │           │            │                         │
//!            │           ▼            ▼                         ▼
//!            │      store.rs      CLIENT/HELLO/INFO       PUBLISH ─► ctx.publish(*3 message)
//!            │   64 × Mutex<map>  (per connection)           │   engine: every worker's
//!            │   lazy + active                               │   subscribed connections
//!            │   expiry, memory                              ▼
//!            │   accounting                       relay(): RESP2 as is │ RESP3 >3 push │ skip
//!            └── next command ◄─ reply (RESP2/3) into the engine's output, in order
//! ```
//!
//! What a client can rely on is in `docs/resp.md`: the commands, their
//! replies and errors byte for byte as Redis 7.0 gives them (checked by a
//! differential test against a real redis-server), the limits.
//!
//! What this crate deliberately does not do: persistence (RDB/AOF),
//! replication, cluster, transactions, Lua, blocking commands, data types
//! beyond strings and lists, more than database 0, and eviction (writes
//! over `maxmemory` are refused, nothing is evicted silently).

#![forbid(unsafe_code)]

mod cmd;
mod parse;
mod pubsub;
mod reply;
mod store;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use warpwire_engine::metrics::WorkerCounters;
use warpwire_engine::{
    ConnInfo, Ctx, InputBuffer, InputHeld, Protocol, Refusal, Relay, Step, UserDb,
};
use warpwire_transport::CloseReason;

pub use parse::{MAX_INLINE, ProtoError};
pub use store::SHARDS;

use parse::{Limits, Parsed, Parser};
use pubsub::Channels;
use reply::Out;
use store::Store;

use warpwire_engine::input::READ_CHUNK;

/// Keys active expiry deletes per housekeeping call on each worker: Redis
/// looks at 20 keys per loop of its cycle; with deadlines kept in order we
/// never look at one that is not due, so a few hundred every 100 ms bounds
/// the pause at well under a millisecond while keeping up with far more
/// expiring keys than a test or benchmark makes.
const EXPIRE_BUDGET: usize = 256;

/// Limits of the Redis server (`[resp]` in the config file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RespConfig {
    /// Bytes the keyspace may hold (keys, values and an overhead
    /// estimate) before writes are refused with `-OOM`; 0: unlimited.
    pub maxmemory: u64,
    /// Largest bulk string a request may carry (Redis's
    /// `proto-max-bulk-len`).
    pub max_bulk_len: usize,
    /// Most arguments of one request.
    pub max_multibulk_len: usize,
    /// Most bytes one connection's input buffer may hold (one request and
    /// what is pipelined behind it); over it the connection is closed, as
    /// Redis does past `client-query-buffer-limit`.
    pub max_query_buffer: usize,
}

impl Default for RespConfig {
    fn default() -> Self {
        Self {
            maxmemory: 0,
            // Redis's default, so a value Redis takes is taken here; a
            // connection's buffer is also counted against the engine's
            // server-wide input budget (`max_buffered_input`, 1 GiB by
            // default), which refuses the largest partial requests first
            // when many connections send large values at once.
            max_bulk_len: 512 << 20,
            // Redis takes up to INT_MAX; one argument costs a 24-byte range
            // here before its bytes arrive, so a million bounds that at 24
            // MiB, far above any real command (MSET of 500k pairs).
            max_multibulk_len: 1 << 20,
            // Redis's client-query-buffer-limit.
            max_query_buffer: 1 << 30,
        }
    }
}

/// The Redis protocol; one value shared by every worker (the keyspace, the
/// channels, the counters). See the crate docs.
pub struct Resp {
    config: RespConfig,
    store: Store,
    channels: Channels,
    users: Option<Arc<UserDb>>,
    require_auth: bool,
    next_id: AtomicU64,
    clients: AtomicU64,
    connections: AtomicU64,
    commands: AtomicU64,
    oom: AtomicU64,
    started: OnceLock<Instant>,
}

impl std::fmt::Debug for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resp")
            .field("config", &self.config)
            .field("used", &self.store.used())
            .finish()
    }
}

impl Resp {
    /// The protocol with an empty keyspace. `users` answers AUTH (a user
    /// and its token); with `require_auth`, commands other than AUTH,
    /// HELLO, QUIT and RESET are refused with `-NOAUTH` until it succeeds.
    pub fn new(config: RespConfig, users: Option<Arc<UserDb>>, require_auth: bool) -> Self {
        Self {
            store: Store::new(config.maxmemory),
            config,
            channels: Channels::default(),
            users,
            require_auth,
            next_id: AtomicU64::new(1),
            clients: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            commands: AtomicU64::new(0),
            oom: AtomicU64::new(0),
            started: OnceLock::new(),
        }
    }

    /// The limits.
    pub fn config(&self) -> &RespConfig {
        &self.config
    }

    /// Bytes the keyspace holds, as accounted against `maxmemory`.
    pub fn used_memory(&self) -> u64 {
        self.store.used()
    }
}

/// Per worker: which shards its active expiry sweeps.
#[derive(Debug)]
pub struct RespLocal {
    worker: usize,
    workers: usize,
}

/// What a connection negotiated and holds, apart from its input.
#[derive(Debug)]
pub(crate) struct Client {
    pub(crate) id: u64,
    pub(crate) resp3: bool,
    pub(crate) authed: bool,
    /// Authenticated by the transport (a client certificate verified by
    /// mutual TLS): AUTH is not needed, and RESET keeps it.
    pub(crate) transport_authed: bool,
    pub(crate) name: Option<Bytes>,
    pub(crate) subs: HashSet<Bytes>,
    /// QUIT or a protocol error: nothing more is read or run.
    pub(crate) done: bool,
}

/// A connection: its input buffer, parser and client state.
#[derive(Debug)]
pub struct RespConn {
    /// Input not yet consumed. Allocated at the first read.
    input: InputBuffer,
    /// Bytes the request being parsed needs in all (0: unknown).
    want: usize,
    parser: Parser,
    client: Client,
}

impl RespConn {
    fn consume(&mut self, n: usize) {
        self.input.consume(n);
        self.want = 0;
        self.parser.reset();
    }
}

impl Protocol for Resp {
    type Conn = RespConn;
    type Local = RespLocal;

    fn name(&self) -> &'static str {
        "resp"
    }

    fn local(&self, worker: usize, workers: usize, now: Instant) -> RespLocal {
        self.started.get_or_init(|| now);
        RespLocal {
            worker,
            workers: workers.max(1),
        }
    }

    fn open(&self, _: &mut RespLocal, info: &ConnInfo, _: &mut Ctx<'_>) -> RespConn {
        self.clients.fetch_add(1, Ordering::Relaxed);
        self.connections.fetch_add(1, Ordering::Relaxed);
        RespConn {
            input: InputBuffer::new(),
            want: 0,
            parser: Parser::default(),
            client: Client {
                id: self.next_id.fetch_add(1, Ordering::Relaxed),
                resp3: false,
                authed: !self.require_auth || info.identity.is_some(),
                transport_authed: info.identity.is_some(),
                name: None,
                subs: HashSet::new(),
                done: false,
            },
        }
    }

    fn read_buf<'c>(&self, c: &'c mut RespConn) -> &'c mut [u8] {
        if c.client.done {
            return &mut [];
        }
        // Room for the request being parsed (growing by doubling as its
        // bytes arrive, not all at once on a header's word), plus a chunk.
        let held = c.input.len();
        let want = c.want.min(2 * held + 4 * READ_CHUNK);
        c.input.read_buf(want, self.config.max_query_buffer)
    }

    fn commit(&self, c: &mut RespConn, n: usize) {
        c.input.commit(n);
    }

    fn step(&self, _: &mut RespLocal, c: &mut RespConn, ctx: &mut Ctx<'_>) -> Step {
        if c.client.done {
            return Step::NeedInput;
        }
        let limits = Limits {
            max_bulk: self.config.max_bulk_len,
            max_multibulk: self.config.max_multibulk_len,
            authed: c.client.authed,
        };
        let data = c.input.unread();
        match c.parser.parse(data, limits) {
            Parsed::Incomplete { want } => {
                c.want = want;
                if data.len() >= self.config.max_query_buffer || want > self.config.max_query_buffer
                {
                    // Redis closes such a client without a reply.
                    ctx.protocol_error("query buffer limit");
                    ctx.close();
                    c.client.done = true;
                    return Step::Request;
                }
                Step::NeedInput
            }
            Parsed::Skip { used } => {
                c.consume(used);
                Step::Request
            }
            Parsed::Error(e) => {
                let mut msg = b"ERR ".to_vec();
                msg.extend_from_slice(&e.message());
                Out::new(ctx.out(), c.client.resp3).error(&msg);
                let counters = ctx.counters();
                WorkerCounters::add(&counters.errors, 1);
                ctx.protocol_error("RESP protocol error");
                ctx.close();
                c.client.done = true;
                c.parser.reset();
                Step::Request
            }
            Parsed::Command { used } => {
                let owned;
                let args: Vec<&[u8]> = if c.parser.inline().is_empty() {
                    c.parser.args().iter().map(|r| &data[r.clone()]).collect()
                } else {
                    owned = c.parser.take_inline();
                    owned.iter().map(Vec::as_slice).collect()
                };
                self.commands.fetch_add(1, Ordering::Relaxed);
                let before = ctx.out().len();
                cmd::dispatch(self, &mut c.client, &args, ctx);
                let counters = ctx.counters();
                WorkerCounters::add(&counters.messages_in, 1);
                WorkerCounters::add(&counters.bytes_in, used as u64);
                let n = ctx.out().len().saturating_sub(before) as u64;
                let counters = ctx.counters();
                WorkerCounters::add(&counters.messages_out, 1);
                WorkerCounters::add(&counters.bytes_out, n);
                c.consume(used);
                Step::Request
            }
        }
    }

    fn refuse(&self, c: &mut RespConn, why: Refusal, ctx: &mut Ctx<'_>) {
        // Redis closes an idle client silently; a full server answers
        // `-ERR max number of clients reached`.
        let msg: &[u8] = match why {
            Refusal::Busy { .. } => b"ERR max number of clients reached",
            Refusal::InputBudget { .. } => b"ERR input budget exceeded, try again",
            Refusal::Rejected => b"ERR connection refused",
            Refusal::Idle { .. } => {
                c.client.done = true;
                return;
            }
        };
        if !c.client.done {
            Out::new(ctx.out(), c.client.resp3).error(msg);
            c.client.done = true;
        }
    }

    fn input_held(&self, c: &RespConn) -> InputHeld {
        InputHeld {
            allocated: c.input.allocated(),
            partial: !c.input.is_empty(),
        }
    }

    fn drop_input(&self, c: &mut RespConn) {
        c.input.clear();
        c.want = 0;
        c.parser.reset();
    }

    fn closed(&self, _: &mut RespLocal, c: RespConn, _: &ConnInfo, _: Option<CloseReason>) {
        self.clients.fetch_sub(1, Ordering::Relaxed);
        for ch in &c.client.subs {
            self.channels.remove(ch);
        }
    }

    fn housekeeping(&self, local: &mut RespLocal, now: Instant) {
        self.store
            .expire_some(now, local.worker, local.workers, EXPIRE_BUDGET);
    }

    /// A subscriber waits for messages, as Redis never times one out.
    fn idle_exempt(&self, c: &RespConn) -> bool {
        !c.client.subs.is_empty()
    }

    fn relay(&self, c: &mut RespConn, msg: &Bytes, out: &mut BytesMut) -> Relay {
        match pubsub::channel_of(msg) {
            Some(ch) if c.client.subs.contains(ch) => {
                if c.client.resp3 {
                    pubsub::as_push(msg, out);
                    Relay::Rewritten
                } else {
                    Relay::AsIs
                }
            }
            _ => Relay::Skip,
        }
    }
}

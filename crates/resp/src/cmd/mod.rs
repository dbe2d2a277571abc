//! The command table and dispatch: lookup (with CLIENT/COMMAND/CONFIG
//! subcommands), the checks Redis 7.0's `processCommand` makes before
//! running a command and in its order (unknown command, arity, NOAUTH,
//! OOM, subscribed mode), then the command.
//!
//! `conn.rs` holds the connection and server commands, `data.rs` the
//! keyspace ones.

mod conn;
mod data;

use std::sync::atomic::Ordering;

use warpwire_engine::Ctx;

use crate::reply::Out;
use crate::store::ENTRY_OVERHEAD;
use crate::{Client, Resp};

/// A command's implementation: the protocol, the connection, the
/// arguments (the name first), the engine's context.
type Handler = fn(&Resp, &mut Client, &[&[u8]], &mut Ctx<'_>);

/// The command may grow the keyspace: refused over `maxmemory`.
const DENYOOM: u8 = 1;
/// Allowed before authentication.
const NOAUTH: u8 = 2;
/// Allowed in RESP2 subscribed mode.
const PUBSUB: u8 = 4;
/// Has subcommands (looked up by the second argument).
const CONTAINER: u8 = 8;

/// One command.
struct Cmd {
    /// Redis's full name (`get`, `client|setname`), as errors quote it.
    name: &'static str,
    /// Redis's arity: `n` exactly, `-n` at least (the name counts).
    arity: i32,
    flags: u8,
    run: Handler,
}

const fn cmd(name: &'static str, arity: i32, flags: u8, run: Handler) -> Cmd {
    Cmd {
        name,
        arity,
        flags,
        run,
    }
}

/// Every command, by name.
static COMMANDS: &[Cmd] = &[
    cmd("get", 2, 0, data::get),
    cmd("set", -3, DENYOOM, data::set),
    cmd("ping", -1, PUBSUB, conn::ping),
    cmd("echo", 2, 0, conn::echo),
    cmd("hello", -1, NOAUTH, conn::hello),
    cmd("auth", -2, NOAUTH, conn::auth),
    cmd("select", 2, 0, conn::select),
    cmd("reset", 1, NOAUTH | PUBSUB, conn::reset),
    cmd("client", -2, CONTAINER, conn::container),
    cmd("command", -1, CONTAINER, conn::command),
    cmd("config", -2, CONTAINER, conn::container),
    cmd("info", -1, 0, conn::info),
    cmd("dbsize", 1, 0, data::dbsize),
    cmd("flushdb", -1, 0, data::flush),
    cmd("flushall", -1, 0, data::flush),
    cmd("getdel", 2, 0, data::getdel),
    cmd("mget", -2, 0, data::mget),
    cmd("mset", -3, DENYOOM, data::mset),
    cmd("append", 3, DENYOOM, data::append),
    cmd("strlen", 2, 0, data::strlen),
    cmd("incr", 2, DENYOOM, data::incr),
    cmd("decr", 2, DENYOOM, data::incr),
    cmd("incrby", 3, DENYOOM, data::incr),
    cmd("decrby", 3, DENYOOM, data::incr),
    cmd("del", -2, 0, data::del),
    cmd("exists", -2, 0, data::exists),
    cmd("expire", -3, 0, data::expire),
    cmd("pexpire", -3, 0, data::expire),
    cmd("ttl", 2, 0, data::ttl),
    cmd("pttl", 2, 0, data::ttl),
    cmd("persist", 2, 0, data::persist),
    cmd("type", 2, 0, data::type_),
    cmd("lpush", -3, DENYOOM, data::push),
    cmd("rpush", -3, DENYOOM, data::push),
    cmd("lpop", -2, 0, data::pop),
    cmd("rpop", -2, 0, data::pop),
    cmd("llen", 2, 0, data::llen),
    cmd("lrange", 4, 0, data::lrange),
    cmd("publish", 3, 0, conn::publish),
    cmd("subscribe", -2, PUBSUB, conn::subscribe),
    cmd("unsubscribe", -1, PUBSUB, conn::unsubscribe),
];

/// Subcommands of the containers.
static SUBCOMMANDS: &[Cmd] = &[
    cmd("client|setname", 3, 0, conn::client_setname),
    cmd("client|getname", 2, 0, conn::client_getname),
    cmd("client|id", 2, 0, conn::client_id),
    cmd("command|count", 2, 0, conn::command_count),
    cmd("command|docs", -2, 0, conn::command_docs),
    cmd("config|get", -3, 0, conn::config_get),
];

/// How many commands COMMAND COUNT reports.
pub(crate) fn count() -> usize {
    COMMANDS.len() + SUBCOMMANDS.len()
}

fn find<'t>(table: &'t [Cmd], name: &[u8]) -> Option<&'t Cmd> {
    table
        .iter()
        .find(|c| c.name.as_bytes().eq_ignore_ascii_case(name))
}

fn find_sub(container: &str, sub: &[u8]) -> Option<&'static Cmd> {
    SUBCOMMANDS.iter().find(|c| {
        c.name
            .strip_prefix(container)
            .and_then(|r| r.strip_prefix('|'))
            .is_some_and(|s| s.as_bytes().eq_ignore_ascii_case(sub))
    })
}

/// The connection's reply writer.
pub(crate) fn out<'a>(ctx: &'a mut Ctx<'_>, c: &Client) -> Out<'a> {
    Out::new(ctx.out(), c.resp3)
}

/// `-ERR unknown command 'name', with args beginning with: 'a' 'b' `.
fn unknown(args: &[&[u8]]) -> Vec<u8> {
    let mut m = b"ERR unknown command '".to_vec();
    m.extend_from_slice(&args[0][..args[0].len().min(128)]);
    m.extend_from_slice(b"', with args beginning with: ");
    let mut listed = Vec::new();
    for a in &args[1..] {
        if listed.len() >= 128 {
            break;
        }
        let room = 128 - listed.len();
        listed.push(b'\'');
        listed.extend_from_slice(&a[..a.len().min(room)]);
        listed.extend_from_slice(b"' ");
    }
    m.extend_from_slice(&listed);
    m
}

/// `-ERR wrong number of arguments for 'name' command`.
pub(crate) fn arity_error(o: &mut Out<'_>, name: &str) {
    o.err(&format!("wrong number of arguments for '{name}' command"));
}

/// Runs one command (`args[0]` its name), writing its reply.
pub(crate) fn dispatch(r: &Resp, c: &mut Client, args: &[&[u8]], ctx: &mut Ctx<'_>) {
    let Some(&name) = args.first() else { return };
    // Redis 7.0 answers QUIT before looking anything up, whatever follows.
    if name.eq_ignore_ascii_case(b"quit") {
        out(ctx, c).ok();
        ctx.close();
        c.done = true;
        return;
    }
    // Redis drops a connection that looks like HTTP (a browser pointed at
    // the port, or a cross-protocol attack) at once: replies not yet sent,
    // to commands before it, are discarded too.
    if name.eq_ignore_ascii_case(b"post") || name.eq_ignore_ascii_case(b"host:") {
        ctx.out().clear();
        ctx.protocol_error("HTTP request on the Redis port");
        ctx.close();
        c.done = true;
        return;
    }
    let Some(base) = find(COMMANDS, name) else {
        out(ctx, c).error(&unknown(args));
        return;
    };
    let cmd = match args.get(1) {
        Some(sub) if base.flags & CONTAINER != 0 => match find_sub(base.name, sub) {
            Some(s) => s,
            None => {
                let mut m = b"ERR unknown subcommand '".to_vec();
                m.extend_from_slice(&sub[..sub.len().min(128)]);
                m.extend_from_slice(b"'. Try ");
                m.extend_from_slice(&name.to_ascii_uppercase());
                m.extend_from_slice(b" HELP.");
                out(ctx, c).error(&m);
                return;
            }
        },
        _ => base,
    };
    let n = args.len() as i32;
    if (cmd.arity > 0 && cmd.arity != n) || n < -cmd.arity {
        arity_error(&mut out(ctx, c), cmd.name);
        return;
    }
    if !c.authed && cmd.flags & NOAUTH == 0 {
        out(ctx, c).error(b"NOAUTH Authentication required.");
        return;
    }
    if cmd.flags & DENYOOM != 0 {
        let grow: u64 = args[1..].iter().map(|a| a.len() as u64).sum::<u64>() + ENTRY_OVERHEAD;
        if r.store.would_exceed(grow) {
            r.oom.fetch_add(1, Ordering::Relaxed);
            out(ctx, c).error(b"OOM command not allowed when used memory > 'maxmemory'.");
            return;
        }
    }
    if !c.resp3 && !c.subs.is_empty() && cmd.flags & PUBSUB == 0 {
        out(ctx, c).err(&format!(
            "Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET \
             are allowed in this context",
            cmd.name
        ));
        return;
    }
    (cmd.run)(r, c, args, ctx);
}

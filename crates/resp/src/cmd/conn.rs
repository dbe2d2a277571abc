//! Connection and server commands: PING, ECHO, HELLO, AUTH, SELECT,
//! RESET, CLIENT, COMMAND, CONFIG GET, INFO, and pub/sub.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use warpwire_engine::Ctx;

use super::{arity_error, out};
use crate::parse::parse_i64;
use crate::reply::Out;
use crate::{Client, Resp, pubsub};

/// The Redis version whose behaviour this server matches; HELLO and INFO
/// report it so clients that gate features on the version work.
pub(crate) const REDIS_VERSION: &str = "7.0.0";

pub(super) fn ping(_: &Resp, c: &mut Client, a: &[&[u8]], ctx: &mut Ctx<'_>) {
    let mut o = out(ctx, c);
    if a.len() > 2 {
        return arity_error(&mut o, "ping");
    }
    if !c.resp3 && !c.subs.is_empty() {
        o.array(2);
        o.bulk(b"pong");
        o.bulk(a.get(1).copied().unwrap_or_default());
        return;
    }
    match a.get(1) {
        Some(m) => o.bulk(m),
        None => o.simple("PONG"),
    }
}

pub(super) fn echo(_: &Resp, c: &mut Client, a: &[&[u8]], ctx: &mut Ctx<'_>) {
    out(ctx, c).bulk(a[1]);
}

/// A valid client name: printable ASCII without spaces.
fn valid_name(n: &[u8]) -> bool {
    n.iter().all(|&b| (b'!'..=b'~').contains(&b))
}

const BAD_NAME: &str = "Client names cannot contain spaces, newlines or special characters.";

/// Checks `token` as `user`'s; answers WRONGPASS (or Redis's complaint
/// that no password is configured) on failure.
fn authenticate(
    r: &Resp,
    c: &mut Client,
    user: Option<&[u8]>,
    token: &[u8],
    o: &mut Out<'_>,
) -> bool {
    let Some(users) = &r.users else {
        match user {
            None => o.err(
                "AUTH <password> called without any password configured for the default user. \
                 Are you sure your configuration is correct?",
            ),
            Some(_) => o.error(b"WRONGPASS invalid username-password pair or user is disabled."),
        }
        return false;
    };
    let user = std::str::from_utf8(user.unwrap_or(b"default")).unwrap_or("");
    if users.verify(user, token) {
        c.authed = true;
        true
    } else {
        o.error(b"WRONGPASS invalid username-password pair or user is disabled.");
        false
    }
}

pub(super) fn auth(r: &Resp, c: &mut Client, a: &[&[u8]], ctx: &mut Ctx<'_>) {
    let mut o = out(ctx, c);
    if a.len() > 3 {
        return o.err("syntax error");
    }
    let (user, token) = match a {
        [_, t] => (None, *t),
        [_, u, t] => (Some(*u), *t),
        _ => return arity_error(&mut o, "auth"),
    };
    if authenticate(r, c, user, token, &mut o) {
        o.ok();
    }
}

pub(super) fn hello(r: &Resp, c: &mut Client, a: &[&[u8]], ctx: &mut Ctx<'_>) {
    let mut o = out(ctx, c);
    let mut ver = None;
    if let Some(v) = a.get(1) {
        match parse_i64(v) {
            None => return o.err("Protocol version is not an integer or out of range"),
            Some(v) if !(2..=3).contains(&v) => {
                return o.error(b"NOPROTO unsupported protocol version");
            }
            Some(v) => ver = Some(v),
        }
    }
    let (mut auth, mut name) = (None, None);
    let mut j = 2;
    while j < a.len() {
        let more = a.len() - j - 1;
        if a[j].eq_ignore_ascii_case(b"auth") && more >= 2 {
            auth = Some((a[j + 1], a[j + 2]));
            j += 3;
        } else if a[j].eq_ignore_ascii_case(b"setname") && more >= 1 {
            name = Some(a[j + 1]);
            j += 2;
        } else {
            let mut m = b"ERR Syntax error in HELLO option '".to_vec();
            m.extend_from_slice(a[j]);
            m.push(b'\'');
            return o.error(&m);
        }
    }
    if let Some((u, p)) = auth
        && !authenticate(r, c, Some(u), p, &mut o)
    {
        return;
    }
    if !c.authed {
        return o.error(
            b"NOAUTH HELLO must be called with the client already authenticated, otherwise the \
              HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and \
              select the RESP protocol version at the same time",
        );
    }
    if let Some(n) = name {
        if !valid_name(n) {
            return o.err(BAD_NAME);
        }
        c.name = (!n.is_empty()).then(|| Bytes::copy_from_slice(n));
    }
    if let Some(v) = ver {
        c.resp3 = v == 3;
    }
    let mut o = out(ctx, c);
    o.map(7);
    o.bulk(b"server");
    o.bulk(b"warpwire");
    o.bulk(b"version");
    o.bulk(REDIS_VERSION.as_bytes());
    o.bulk(b"proto");
    o.int(if c.resp3 { 3 } else { 2 });
    o.bulk(b"id");
    o.int(c.id as i64);
    o.bulk(b"mode");
    o.bulk(b"standalone");
    o.bulk(b"role");
    o.bulk(b"master");
    o.bulk(b"modules");
    o.array(0);
}

pub(super) fn select(_: &Resp, c: &mut Client, a: &[&[u8]], ctx: &mut Ctx<'_>) {
    let mut o = out(ctx, c);
    match parse_i64(a[1]) {
        Some(id) if i32::try_from(id).is_err() => {
            o.err("value is out of range, value must between -2147483648 and 2147483647");
        }
        None => o.err("value is not an integer or out of range"),
        Some(0) => o.ok(),
        Some(_) => o.err("DB index is out of range"),
    }
}

pub(super) fn reset(r: &Resp, c: &mut Client, _: &[&[u8]], ctx: &mut Ctx<'_>) {
    for ch in c.subs.drain() {
        r.channels.remove(&ch);
    }
    ctx.set_eligible(false);
    c.resp3 = false;
    c.name = None;
    c.authed = !r.require_auth || c.transport_authed;
    out(ctx, c).simple("RESET");
}

/// A container run without a subcommand (cannot happen: the arity check
/// answers first); answered as Redis would a missing subcommand.
pub(super) fn container(_: &Resp, c: &mut Client, a: &[&[u8]], ctx: &mut Ctx<'_>) {
    let name = String::from_utf8_lossy(a[0]).to_lowercase();
    arity_error(&mut out(ctx, c), &name);
}

pub(super) fn client_setname(_: &Resp, c: &mut Client, a: &[&[u8]], ctx: &mut Ctx<'_>) {
    if !valid_name(a[2]) {
        return out(ctx, c).err(BAD_NAME);
    }
    c.name = (!a[2].is_empty()).then(|| Bytes::copy_from_slice(a[2]));
    out(ctx, c).ok();
}

pub(super) fn client_getname(_: &Resp, c: &mut Client, _: &[&[u8]], ctx: &mut Ctx<'_>) {
    let name = c.name.clone();
    let mut o = out(ctx, c);
    match name {
        Some(n) => o.bulk(&n),
        None => o.null(),
    }
}

pub(super) fn client_id(_: &Resp, c: &mut Client, _: &[&[u8]], ctx: &mut Ctx<'_>) {
    let id = c.id as i64;
    out(ctx, c).int(id);
}

/// COMMAND without a subcommand: Redis lists its command table; this
/// server answers an empty list (clients use it only for hints).
pub(super) fn command(_: &Resp, c: &mut Client, _: &[&[u8]], ctx: &mut Ctx<'_>) {
    out(ctx, c).array(0);
}

pub(super) fn command_count(_: &Resp, c: &mut Client, _: &[&[u8]], ctx: &mut Ctx<'_>) {
    out(ctx, c).int(super::count() as i64);
}

/// COMMAND DOCS: no documentation is served (redis-cli asks at start for
/// its hints, and does without).
pub(super) fn command_docs(_: &Resp, c: &mut Client, _: &[&[u8]], ctx: &mut Ctx<'_>) {
    out(ctx, c).map(0);
}

/// Redis's glob (`stringmatchlen`): `*`, `?`, `[...]` with ranges and `^`,
/// `\` escapes; `nocase` compares ASCII case-insensitively.
pub(crate) fn glob(p: &[u8], s: &[u8], nocase: bool) -> bool {
    let eq = |a: u8, b: u8| {
        if nocase {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        let mut matched = None;
        if pi < p.len() {
            match p[pi] {
                b'*' => {
                    star = Some((pi, si));
                    pi += 1;
                    continue;
                }
                b'?' => matched = Some(pi + 1),
                b'[' => {
                    let mut k = pi + 1;
                    let not = p.get(k) == Some(&b'^');
                    if not {
                        k += 1;
                    }
                    let mut hit = false;
                    while k < p.len() && p[k] != b']' {
                        if p[k] == b'\\' && k + 1 < p.len() {
                            k += 1;
                            hit |= eq(p[k], s[si]);
                        } else if k + 2 < p.len() && p[k + 1] == b'-' {
                            let (lo, hi) = (p[k].min(p[k + 2]), p[k].max(p[k + 2]));
                            let c = if nocase {
                                s[si].to_ascii_lowercase()
                            } else {
                                s[si]
                            };
                            let (lo, hi) = if nocase {
                                (lo.to_ascii_lowercase(), hi.to_ascii_lowercase())
                            } else {
                                (lo, hi)
                            };
                            hit |= (lo..=hi).contains(&c);
                            k += 2;
                        } else {
                            hit |= eq(p[k], s[si]);
                        }
                        k += 1;
                    }
                    if hit != not {
                        matched = Some((k + 1).min(p.len()));
                    }
                }
                b'\\' if pi + 1 < p.len() => {
                    if eq(p[pi + 1], s[si]) {
                        matched = Some(pi + 2);
                    }
                }
                ch => {
                    if eq(ch, s[si]) {
                        matched = Some(pi + 1);
                    }
                }
            }
        }
        match (matched, star) {
            (Some(next), _) => {
                pi = next;
                si += 1;
            }
            (None, Some((sp, ss))) => {
                pi = sp + 1;
                si = ss + 1;
                star = Some((sp, ss + 1));
            }
            (None, None) => return false,
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

pub(super) fn config_get(r: &Resp, c: &mut Client, a: &[&[u8]], ctx: &mut Ctx<'_>) {
    let max = r.config.maxmemory.to_string();
    let bulk = r.config.max_bulk_len.to_string();
    let params: [(&str, &str); 6] = [
        ("save", ""),
        ("appendonly", "no"),
        ("databases", "1"),
        ("maxmemory", &max),
        ("maxmemory-policy", "noeviction"),
        ("proto-max-bulk-len", &bulk),
    ];
    let found: Vec<(&str, &str)> = params
        .iter()
        .filter(|(n, _)| a[2..].iter().any(|p| glob(p, n.as_bytes(), true)))
        .copied()
        .collect();
    let mut o = out(ctx, c);
    o.map(found.len());
    for (n, v) in found {
        o.bulk(n.as_bytes());
        o.bulk(v.as_bytes());
    }
}

/// `bytes` as Redis's `used_memory_human` (`1.50M`).
fn human(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..1024 => format!("{bytes}B"),
        1024..1_048_576 => format!("{:.2}K", b / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.2}M", b / 1_048_576.0),
        _ => format!("{:.2}G", b / 1_073_741_824.0),
    }
}

pub(super) fn info(r: &Resp, c: &mut Client, a: &[&[u8]], ctx: &mut Ctx<'_>) {
    const DEFAULT: [&str; 5] = ["server", "clients", "memory", "stats", "keyspace"];
    let wanted = |s: &str| {
        a.len() == 1
            || a[1..].iter().any(|w| {
                w.eq_ignore_ascii_case(s.as_bytes())
                    || [&b"all"[..], b"default", b"everything"]
                        .iter()
                        .any(|x| w.eq_ignore_ascii_case(x))
            })
    };
    let up = r
        .started
        .get()
        .map_or(0, |s| ctx.now.saturating_duration_since(*s).as_secs());
    let mut text = String::new();
    for section in DEFAULT.into_iter().filter(|s| wanted(s)) {
        if !text.is_empty() {
            text.push_str("\r\n");
        }
        let lines: Vec<String> = match section {
            "server" => vec![
                format!("redis_version:{REDIS_VERSION}"),
                format!("warpwire_version:{}", env!("CARGO_PKG_VERSION")),
                "redis_mode:standalone".into(),
                "arch_bits:64".into(),
                "multiplexing_api:warpwire".into(),
                format!("process_id:{}", std::process::id()),
                format!("uptime_in_seconds:{up}"),
                format!("uptime_in_days:{}", up / 86_400),
            ],
            "clients" => vec![
                format!("connected_clients:{}", r.clients.load(Ordering::Relaxed)),
                format!("pubsub_channels:{}", r.channels.len()),
            ],
            "memory" => {
                let used = r.store.used();
                let max = r.store.maxmemory();
                vec![
                    format!("used_memory:{used}"),
                    format!("used_memory_human:{}", human(used)),
                    format!("maxmemory:{max}"),
                    format!("maxmemory_human:{}", human(max)),
                    "maxmemory_policy:noeviction".into(),
                ]
            }
            "stats" => {
                let s = &r.store.stats;
                vec![
                    format!(
                        "total_connections_received:{}",
                        r.connections.load(Ordering::Relaxed)
                    ),
                    format!(
                        "total_commands_processed:{}",
                        r.commands.load(Ordering::Relaxed)
                    ),
                    format!("expired_keys:{}", s.expired.load(Ordering::Relaxed)),
                    "evicted_keys:0".into(),
                    format!("keyspace_hits:{}", s.hits.load(Ordering::Relaxed)),
                    format!("keyspace_misses:{}", s.misses.load(Ordering::Relaxed)),
                    format!("rejected_oom_writes:{}", r.oom.load(Ordering::Relaxed)),
                ]
            }
            _ => {
                let (keys, expires) = r.store.counts();
                if keys == 0 {
                    vec![]
                } else {
                    vec![format!("db0:keys={keys},expires={expires},avg_ttl=0")]
                }
            }
        };
        let title = match section {
            "server" => "Server",
            "clients" => "Clients",
            "memory" => "Memory",
            "stats" => "Stats",
            _ => "Keyspace",
        };
        text.push_str("# ");
        text.push_str(title);
        text.push_str("\r\n");
        for l in lines {
            text.push_str(&l);
            text.push_str("\r\n");
        }
    }
    out(ctx, c).verbatim(text.as_bytes());
}

pub(super) fn publish(r: &Resp, c: &mut Client, a: &[&[u8]], ctx: &mut Ctx<'_>) {
    let (ch, msg) = (a[1], a[2]);
    let n = r.channels.count(ch);
    let own = c.subs.contains(ch);
    if n > u64::from(own) {
        ctx.publish(pubsub::encode(ch, msg));
    }
    let mut o = out(ctx, c);
    if own {
        // A RESP3 subscriber may publish; Redis delivers to it too, before
        // the reply.
        pubsub::as_push(&pubsub::encode(ch, msg), o.raw());
    }
    o.int(n as i64);
}

fn sub_reply(c: &Client, o: &mut Out<'_>, kind: &[u8], ch: Option<&[u8]>) {
    o.push(3);
    o.bulk(kind);
    match ch {
        Some(ch) => o.bulk(ch),
        None => o.null(),
    }
    o.int(c.subs.len() as i64);
}

pub(super) fn subscribe(r: &Resp, c: &mut Client, a: &[&[u8]], ctx: &mut Ctx<'_>) {
    for ch in &a[1..] {
        if !c.subs.contains(*ch) {
            let ch = Bytes::copy_from_slice(ch);
            r.channels.add(&ch);
            c.subs.insert(ch);
        }
        sub_reply(c, &mut out(ctx, c), b"subscribe", Some(ch));
    }
    ctx.set_eligible(true);
}

pub(super) fn unsubscribe(r: &Resp, c: &mut Client, a: &[&[u8]], ctx: &mut Ctx<'_>) {
    let chans: Vec<Bytes> = if a.len() == 1 {
        c.subs.iter().cloned().collect()
    } else {
        a[1..].iter().map(|ch| Bytes::copy_from_slice(ch)).collect()
    };
    if chans.is_empty() {
        sub_reply(c, &mut out(ctx, c), b"unsubscribe", None);
    }
    for ch in chans {
        if c.subs.remove(&ch) {
            r.channels.remove(&ch);
        }
        sub_reply(c, &mut out(ctx, c), b"unsubscribe", Some(&ch));
    }
    if c.subs.is_empty() {
        ctx.set_eligible(false);
    }
}

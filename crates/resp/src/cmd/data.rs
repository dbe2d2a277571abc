//! Keyspace commands: strings, counters, keys and expiry, lists.

use std::time::{Duration, Instant};

use bytes::Bytes;
use warpwire_engine::Ctx;

use super::{arity_error, out};
use crate::parse::parse_i64;
use crate::reply::Out;
use crate::store::{List, Ttl, Value};
use crate::{Client, Resp};

const WRONGTYPE: &[u8] = b"WRONGTYPE Operation against a key holding the wrong kind of value";
const NOT_INT: &str = "value is not an integer or out of range";

/// Redis adds the wall clock (Unix milliseconds) to a relative expiry and
/// refuses one that overflows. Without a wall clock here, a relative
/// expiry within this many milliseconds of `i64::MAX` is refused instead:
/// 2^41 ms reaches September 2039, so the refusals match Redis's for any
/// run before then (they differ only for expiries ~292 million years
/// ahead).
const UNIX_MS_BOUND: i64 = 1 << 41;

/// The deadline `ms` milliseconds (> 0) after `now`, or `None` where Redis
/// answers "invalid expire time".
fn deadline_after(now: Instant, ms: i64) -> Option<Instant> {
    if ms > i64::MAX - UNIX_MS_BOUND {
        return None;
    }
    now.checked_add(Duration::from_millis(u64::try_from(ms).ok()?))
}

fn int_arg(o: &mut Out<'_>, a: &[u8]) -> Option<i64> {
    let v = parse_i64(a);
    if v.is_none() {
        o.err(NOT_INT);
    }
    v
}

fn invalid_expire(o: &mut Out<'_>, cmd: &str) {
    o.err(&format!("invalid expire time in '{cmd}' command"));
}

pub(super) fn get(r: &Resp, c: &mut Client, a: &[&[u8]], ctx: &mut Ctx<'_>) {
    let mut db = r.store.db(a[1], ctx.now);
    let mut o = out(ctx, c);
    match db.get(a[1]) {
        None => o.null(),
        Some(Value::Str(v)) => o.bulk(v),
        Some(_) => o.error(WRONGTYPE),
    }
}

pub(super) fn getdel(r: &Resp, c: &mut Client, a: &[&[u8]], ctx: &mut Ctx<'_>) {
    let mut db = r.store.db(a[1], ctx.now);
    let mut o = out(ctx, c);
    match db.get(a[1]) {
        None => o.null(),
        Some(Value::Str(v)) => {
            o.bulk(v);
            db.remove(a[1]);
        }
        Some(_) => o.error(WRONGTYPE),
    }
}

pub(super) fn set(r: &Resp, c: &mut Client, a: &[&[u8]], ctx: &mut Ctx<'_>) {
    let now = ctx.now;
    let mut o = out(ctx, c);
    let (mut nx, mut xx, mut get, mut keep) = (false, false, false, false);
    // (the argument, whether in seconds)
    let mut expire: Option<(&[u8], bool)> = None;
    let mut j = 3;
    while j < a.len() {
        let opt = a[j];
        let next = a.get(j + 1).copied();
        let is = |s: &[u8]| opt.eq_ignore_ascii_case(s);
        if is(b"nx") && !xx {
            nx = true;
        } else if is(b"xx") && !nx {
            xx = true;
        } else if is(b"get") {
            get = true;
        } else if is(b"keepttl") && expire.is_none() {
            keep = true;
        } else if (is(b"ex") || is(b"px"))
            && !keep
            && expire.is_none_or(|(_, secs)| secs == is(b"ex"))
            && let Some(n) = next
        {
            expire = Some((n, is(b"ex")));
            j += 1;
        } else {
            return o.err("syntax error");
        }
        j += 1;
    }
    let mut ttl = Ttl::Set(None);
    if let Some((n, secs)) = expire {
        let Some(v) = int_arg(&mut o, n) else { return };
        if v <= 0 || (secs && v > i64::MAX / 1000) {
            return invalid_expire(&mut o, "set");
        }
        let ms = if secs { v * 1000 } else { v };
        match deadline_after(now, ms) {
            Some(d) => ttl = Ttl::Set(Some(d)),
            None => return invalid_expire(&mut o, "set"),
        }
    }
    if keep {
        ttl = Ttl::Keep;
    }
    set_run(r, c, a, ctx, (nx, xx, get), ttl);
}

/// SET once its options are parsed: GET's reply, NX/XX, the write.
fn set_run(
    r: &Resp,
    c: &mut Client,
    a: &[&[u8]],
    ctx: &mut Ctx<'_>,
    (nx, xx, get): (bool, bool, bool),
    ttl: Ttl,
) {
    let mut db = r.store.db(a[1], ctx.now);
    let mut o = out(ctx, c);
    let found = if get {
        match db.get(a[1]) {
            None => {
                o.null();
                false
            }
            Some(Value::Str(v)) => {
                o.bulk(v);
                true
            }
            Some(_) => return o.error(WRONGTYPE),
        }
    } else {
        db.exists(a[1])
    };
    if (nx && found) || (xx && !found) {
        if !get {
            o.null();
        }
        return;
    }
    db.set(
        Bytes::copy_from_slice(a[1]),
        Value::Str(Bytes::copy_from_slice(a[2])),
        ttl,
    );
    if !get {
        o.ok();
    }
}

pub(super) fn mget(r: &Resp, c: &mut Client, a: &[&[u8]], ctx: &mut Ctx<'_>) {
    let now = ctx.now;
    let mut o = out(ctx, c);
    o.array(a.len() - 1);
    for k in &a[1..] {
        match r.store.db(k, now).get(k) {
            Some(Value::Str(v)) => o.bulk(v),
            _ => o.null(),
        }
    }
}

pub(super) fn mset(r: &Resp, c: &mut Client, a: &[&[u8]], ctx: &mut Ctx<'_>) {
    if a.len().is_multiple_of(2) {
        return arity_error(&mut out(ctx, c), "mset");
    }
    let pairs = a[1..]
        .chunks_exact(2)
        .map(|p| (Bytes::copy_from_slice(p[0]), Bytes::copy_from_slice(p[1])))
        .collect();
    r.store.set_many(pairs);
    out(ctx, c).ok();
}

pub(super) fn append(r: &Resp, c: &mut Client, a: &[&[u8]], ctx: &mut Ctx<'_>) {
    let mut db = r.store.db(a[1], ctx.now);
    let mut o = out(ctx, c);
    let len = match db.get(a[1]) {
        None => {
            db.set(
                Bytes::copy_from_slice(a[1]),
                Value::Str(Bytes::copy_from_slice(a[2])),
                Ttl::Set(None),
            );
            a[2].len()
        }
        Some(Value::Str(v)) => {
            if v.len() + a[2].len() > r.config.max_bulk_len {
                return o.err("string exceeds maximum allowed size (proto-max-bulk-len)");
            }
            db.update(a[1], |v| {
                if let Value::Str(s) = v {
                    // In place when this is the only handle (the usual case).
                    let mut m = std::mem::take(s)
                        .try_into_mut()
                        .unwrap_or_else(|b| bytes::BytesMut::from(&b[..]));
                    m.extend_from_slice(a[2]);
                    *s = m.freeze();
                    s.len()
                } else {
                    0
                }
            })
            .unwrap_or(0)
        }
        Some(_) => return o.error(WRONGTYPE),
    };
    o.int(len as i64);
}

pub(super) fn strlen(r: &Resp, c: &mut Client, a: &[&[u8]], ctx: &mut Ctx<'_>) {
    let mut db = r.store.db(a[1], ctx.now);
    let mut o = out(ctx, c);
    match db.get(a[1]) {
        None => o.int(0),
        Some(Value::Str(v)) => o.int(v.len() as i64),
        Some(_) => o.error(WRONGTYPE),
    }
}

/// INCR, DECR, INCRBY, DECRBY.
pub(super) fn incr(r: &Resp, c: &mut Client, a: &[&[u8]], ctx: &mut Ctx<'_>) {
    let now = ctx.now;
    let mut o = out(ctx, c);
    let name = a[0].to_ascii_lowercase();
    let by = match &name[..] {
        b"incr" => 1,
        b"decr" => -1,
        b"incrby" => match int_arg(&mut o, a[2]) {
            Some(v) => v,
            None => return,
        },
        _ => match int_arg(&mut o, a[2]) {
            Some(i64::MIN) => return o.err("decrement would overflow"),
            Some(v) => -v,
            None => return,
        },
    };
    let mut db = r.store.db(a[1], now);
    let old = match db.get(a[1]) {
        None => 0,
        Some(Value::Str(v)) => match parse_i64(v) {
            Some(n) => n,
            None => return o.err(NOT_INT),
        },
        Some(_) => return o.error(WRONGTYPE),
    };
    let Some(new) = old.checked_add(by) else {
        return o.err("increment or decrement would overflow");
    };
    db.set(
        Bytes::copy_from_slice(a[1]),
        Value::Str(Bytes::from(new.to_string())),
        Ttl::Keep,
    );
    o.int(new);
}

pub(super) fn del(r: &Resp, c: &mut Client, a: &[&[u8]], ctx: &mut Ctx<'_>) {
    let now = ctx.now;
    let n = a[1..]
        .iter()
        .filter(|k| r.store.db(k, now).remove(k).is_some())
        .count();
    out(ctx, c).int(n as i64);
}

pub(super) fn exists(r: &Resp, c: &mut Client, a: &[&[u8]], ctx: &mut Ctx<'_>) {
    let now = ctx.now;
    let n = a[1..]
        .iter()
        .filter(|k| r.store.db(k, now).exists(k))
        .count();
    out(ctx, c).int(n as i64);
}

pub(super) fn type_(r: &Resp, c: &mut Client, a: &[&[u8]], ctx: &mut Ctx<'_>) {
    let t = r.store.db(a[1], ctx.now).type_of(a[1]).unwrap_or("none");
    out(ctx, c).simple(t);
}

pub(super) fn dbsize(r: &Resp, c: &mut Client, _: &[&[u8]], ctx: &mut Ctx<'_>) {
    let (keys, _) = r.store.counts();
    out(ctx, c).int(keys as i64);
}

/// FLUSHDB and FLUSHALL (one database: the same).
pub(super) fn flush(r: &Resp, c: &mut Client, a: &[&[u8]], ctx: &mut Ctx<'_>) {
    let ok = match a {
        [_] => true,
        [_, m] => m.eq_ignore_ascii_case(b"async") || m.eq_ignore_ascii_case(b"sync"),
        _ => false,
    };
    if !ok {
        return out(ctx, c).err("syntax error");
    }
    r.store.flush();
    out(ctx, c).ok();
}

/// EXPIRE and PEXPIRE, with NX, XX, GT, LT.
pub(super) fn expire(r: &Resp, c: &mut Client, a: &[&[u8]], ctx: &mut Ctx<'_>) {
    let now = ctx.now;
    let mut o = out(ctx, c);
    let secs = a[0].eq_ignore_ascii_case(b"expire");
    let name = if secs { "expire" } else { "pexpire" };
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for opt in &a[3..] {
        match &opt.to_ascii_lowercase()[..] {
            b"nx" => nx = true,
            b"xx" => xx = true,
            b"gt" => gt = true,
            b"lt" => lt = true,
            _ => {
                let mut m = b"ERR Unsupported option ".to_vec();
                m.extend_from_slice(opt);
                return o.error(&m);
            }
        }
    }
    if nx && (xx || gt || lt) {
        return o.err("NX and XX, GT or LT options at the same time are not compatible");
    }
    if gt && lt {
        return o.err("GT and LT options at the same time are not compatible");
    }
    let Some(mut when) = int_arg(&mut o, a[2]) else {
        return;
    };
    if secs {
        if !(i64::MIN / 1000..=i64::MAX / 1000).contains(&when) {
            return invalid_expire(&mut o, name);
        }
        when *= 1000;
    }
    if when > i64::MAX - UNIX_MS_BOUND {
        return invalid_expire(&mut o, name);
    }
    let mut db = r.store.db(a[1], now);
    let Some(current) = db.deadline(a[1]) else {
        return o.int(0);
    };
    // The current deadline in ms from now (`None`: never).
    let cur = current.map(|t| t.saturating_duration_since(now).as_millis() as i64);
    let refused = (nx && cur.is_some())
        || (xx && cur.is_none())
        || (gt && cur.is_none_or(|cur| when <= cur))
        || (lt && cur.is_some_and(|cur| when >= cur));
    if refused {
        return o.int(0);
    }
    if when <= 0 {
        db.remove(a[1]);
        return o.int(1);
    }
    match deadline_after(now, when) {
        Some(d) => {
            db.set_deadline(a[1], Some(d));
            o.int(1);
        }
        None => invalid_expire(&mut o, name),
    }
}

/// TTL and PTTL.
pub(super) fn ttl(r: &Resp, c: &mut Client, a: &[&[u8]], ctx: &mut Ctx<'_>) {
    let now = ctx.now;
    let ms_out = a[0].eq_ignore_ascii_case(b"pttl");
    let v = match r.store.db(a[1], now).deadline(a[1]) {
        None => -2,
        Some(None) => -1,
        Some(Some(t)) => {
            let ms = t.saturating_duration_since(now).as_millis() as i64;
            if ms_out { ms } else { (ms + 500) / 1000 }
        }
    };
    out(ctx, c).int(v);
}

pub(super) fn persist(r: &Resp, c: &mut Client, a: &[&[u8]], ctx: &mut Ctx<'_>) {
    let mut db = r.store.db(a[1], ctx.now);
    let n = match db.deadline(a[1]) {
        Some(Some(_)) => i64::from(db.set_deadline(a[1], None)),
        _ => 0,
    };
    out(ctx, c).int(n);
}

/// LPUSH and RPUSH.
pub(super) fn push(r: &Resp, c: &mut Client, a: &[&[u8]], ctx: &mut Ctx<'_>) {
    let left = a[0].eq_ignore_ascii_case(b"lpush");
    let mut db = r.store.db(a[1], ctx.now);
    let mut o = out(ctx, c);
    let items = a[2..].iter().map(|v| Bytes::copy_from_slice(v));
    let len = match db.get(a[1]) {
        None => {
            let mut l = List::default();
            items.for_each(|i| l.push(i, left));
            let n = l.items.len();
            db.set(Bytes::copy_from_slice(a[1]), Value::List(l), Ttl::Set(None));
            n
        }
        Some(Value::List(_)) => db
            .update(a[1], |v| match v {
                Value::List(l) => {
                    items.for_each(|i| l.push(i, left));
                    l.items.len()
                }
                Value::Str(_) => 0,
            })
            .unwrap_or(0),
        Some(_) => return o.error(WRONGTYPE),
    };
    o.int(len as i64);
}

/// LPOP and RPOP, with a count.
pub(super) fn pop(r: &Resp, c: &mut Client, a: &[&[u8]], ctx: &mut Ctx<'_>) {
    let left = a[0].eq_ignore_ascii_case(b"lpop");
    let now = ctx.now;
    let mut o = out(ctx, c);
    if a.len() > 3 {
        return arity_error(&mut o, if left { "lpop" } else { "rpop" });
    }
    let count = match a.get(2) {
        None => None,
        Some(n) => match parse_i64(n) {
            Some(n) if n >= 0 => Some(n as u64),
            _ => return o.err("value is out of range, must be positive"),
        },
    };
    let mut db = r.store.db(a[1], now);
    match db.get(a[1]) {
        None if count.is_some() => return o.null_array(),
        None => return o.null(),
        Some(Value::List(_)) => {}
        Some(_) => return o.error(WRONGTYPE),
    }
    let popped = db
        .update(a[1], |v| match v {
            Value::List(l) => {
                let n = count.unwrap_or(1).min(l.items.len() as u64) as usize;
                (0..n).filter_map(|_| l.pop(left)).collect::<Vec<_>>()
            }
            Value::Str(_) => Vec::new(),
        })
        .unwrap_or_default();
    match count {
        None => match popped.first() {
            Some(v) => o.bulk(v),
            None => o.null(),
        },
        Some(_) => {
            o.array(popped.len());
            popped.iter().for_each(|v| o.bulk(v));
        }
    }
}

pub(super) fn llen(r: &Resp, c: &mut Client, a: &[&[u8]], ctx: &mut Ctx<'_>) {
    let mut db = r.store.db(a[1], ctx.now);
    let mut o = out(ctx, c);
    match db.get(a[1]) {
        None => o.int(0),
        Some(Value::List(l)) => o.int(l.items.len() as i64),
        Some(_) => o.error(WRONGTYPE),
    }
}

pub(super) fn lrange(r: &Resp, c: &mut Client, a: &[&[u8]], ctx: &mut Ctx<'_>) {
    let now = ctx.now;
    let mut o = out(ctx, c);
    let Some(mut start) = int_arg(&mut o, a[2]) else {
        return;
    };
    let Some(mut end) = int_arg(&mut o, a[3]) else {
        return;
    };
    let mut db = r.store.db(a[1], now);
    let l = match db.get(a[1]) {
        None => return o.array(0),
        Some(Value::List(l)) => l,
        Some(_) => return o.error(WRONGTYPE),
    };
    let len = l.items.len() as i64;
    if start < 0 {
        start += len;
    }
    if end < 0 {
        end += len;
    }
    start = start.max(0);
    if start > end || start >= len {
        return o.array(0);
    }
    end = end.min(len - 1);
    let (s, e) = (start as usize, end as usize);
    o.array(e - s + 1);
    l.items.range(s..=e).for_each(|v| o.bulk(v));
}

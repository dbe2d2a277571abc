//! The Redis protocol on the engine's deterministic harness: every
//! command's replies and errors to the byte (as Redis 7.0 gives them),
//! protocol errors, pipelining, input split anywhere, random input, RESP3,
//! expiry on the virtual clock, maxmemory, pub/sub between connections.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use warpwire_engine::testing::{Harness, PeerId};
use warpwire_engine::{ServerConfig, UserDb};
use warpwire_resp::{Resp, RespConfig};

fn harness_with(config: RespConfig, users: Option<UserDb>, require_auth: bool) -> Harness<Resp> {
    Harness::new(ServerConfig::default(), move |_| {
        Resp::new(config, users.map(Arc::new), require_auth)
    })
}

fn harness() -> Harness<Resp> {
    harness_with(RespConfig::default(), None, false)
}

/// A command as redis-cli sends it.
fn cmd(args: &[&str]) -> Vec<u8> {
    let mut b = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        b.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    b
}

fn talk(h: &mut Harness<Resp>, p: PeerId, bytes: &[u8]) -> String {
    h.send(p, bytes);
    h.settle();
    String::from_utf8_lossy(&h.received(p)).into_owned()
}

/// Sends each command in turn and checks its whole reply.
fn check(h: &mut Harness<Resp>, p: PeerId, cases: &[(&[&str], &str)]) {
    for (args, want) in cases {
        assert_eq!(talk(h, p, &cmd(args)), *want, "{args:?}");
    }
}

fn conn(h: &mut Harness<Resp>) -> PeerId {
    let p = h.connect();
    h.settle();
    p
}

#[test]
fn connection_commands() {
    let mut h = harness();
    let p = conn(&mut h);
    check(
        &mut h,
        p,
        &[
            (&["PING"], "+PONG\r\n"),
            (&["ping", "hi"], "$2\r\nhi\r\n"),
            (
                &["ping", "a", "b"],
                "-ERR wrong number of arguments for 'ping' command\r\n",
            ),
            (&["ECHO", "x y"], "$3\r\nx y\r\n"),
            (
                &["echo"],
                "-ERR wrong number of arguments for 'echo' command\r\n",
            ),
            (&["SELECT", "0"], "+OK\r\n"),
            (&["SELECT", "1"], "-ERR DB index is out of range\r\n"),
            (
                &["SELECT", "x"],
                "-ERR value is not an integer or out of range\r\n",
            ),
            (&["CLIENT", "GETNAME"], "$-1\r\n"),
            (&["CLIENT", "SETNAME", "app"], "+OK\r\n"),
            (&["client", "getname"], "$3\r\napp\r\n"),
            (
                &["CLIENT", "SETNAME", "a b"],
                "-ERR Client names cannot contain spaces, newlines or special characters.\r\n",
            ),
            (&["CLIENT", "ID"], ":1\r\n"),
            (
                &["CLIENT"],
                "-ERR wrong number of arguments for 'client' command\r\n",
            ),
            (
                &["CLIENT", "SETNAME"],
                "-ERR wrong number of arguments for 'client|setname' command\r\n",
            ),
            (
                &["CLIENT", "foo"],
                "-ERR unknown subcommand 'foo'. Try CLIENT HELP.\r\n",
            ),
            (&["COMMAND", "DOCS"], "*0\r\n"),
            (&["COMMAND"], "*0\r\n"),
            (&["CONFIG", "GET", "save"], "*2\r\n$4\r\nsave\r\n$0\r\n\r\n"),
            (
                &["CONFIG", "GET", "appendonly"],
                "*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n",
            ),
            (&["CONFIG", "GET", "nothing"], "*0\r\n"),
            (
                &["AUTH", "x"],
                "-ERR AUTH <password> called without any password configured for the default \
                 user. Are you sure your configuration is correct?\r\n",
            ),
            (
                &["AUTH", "u", "x"],
                "-WRONGPASS invalid username-password pair or user is disabled.\r\n",
            ),
            (&["AUTH", "a", "b", "c"], "-ERR syntax error\r\n"),
            (
                &["FOO", "bar", "baz"],
                "-ERR unknown command 'FOO', with args beginning with: 'bar' 'baz' \r\n",
            ),
            (
                &["foo"],
                "-ERR unknown command 'foo', with args beginning with: \r\n",
            ),
            (&["HELLO", "4"], "-NOPROTO unsupported protocol version\r\n"),
            (
                &["HELLO", "x"],
                "-ERR Protocol version is not an integer or out of range\r\n",
            ),
            (
                &["HELLO", "2", "foo"],
                "-ERR Syntax error in HELLO option 'foo'\r\n",
            ),
        ],
    );
    let count = talk(&mut h, p, &cmd(&["COMMAND", "COUNT"]));
    assert!(count.starts_with(':'), "{count}");
    let info = talk(&mut h, p, &cmd(&["INFO"]));
    for s in [
        "# Server\r\n",
        "# Clients\r\n",
        "# Memory\r\n",
        "# Stats\r\n",
        "# Keyspace\r\n",
    ] {
        assert!(info.contains(s), "{info}");
    }
    assert!(info.contains("connected_clients:1\r\n"), "{info}");
    let ks = talk(&mut h, p, &cmd(&["INFO", "keyspace"]));
    assert_eq!(ks, "$12\r\n# Keyspace\r\n\r\n");
    assert_eq!(talk(&mut h, p, &cmd(&["QUIT"])), "+OK\r\n");
    assert!(h.closed(p).is_some());
}

#[test]
fn strings_and_counters() {
    let mut h = harness();
    let p = conn(&mut h);
    let wrongtype = "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n";
    let not_int = "-ERR value is not an integer or out of range\r\n";
    check(
        &mut h,
        p,
        &[
            (&["GET", "k"], "$-1\r\n"),
            (&["SET", "k", "v"], "+OK\r\n"),
            (&["GET", "k"], "$1\r\nv\r\n"),
            (&["SET", "k", "w", "NX"], "$-1\r\n"),
            (&["SET", "k", "w", "XX", "GET"], "$1\r\nv\r\n"),
            (&["SET", "k", "x", "NX", "GET"], "$1\r\nw\r\n"),
            (&["SET", "n", "1", "XX"], "$-1\r\n"),
            (&["SET", "k", "v", "NX", "XX"], "-ERR syntax error\r\n"),
            (
                &["SET", "k", "v", "EX", "10", "PX", "10"],
                "-ERR syntax error\r\n",
            ),
            (
                &["SET", "k", "v", "KEEPTTL", "EX", "1"],
                "-ERR syntax error\r\n",
            ),
            (&["SET", "k", "v", "EX"], "-ERR syntax error\r\n"),
            (
                &["SET", "k", "v", "EX", "0"],
                "-ERR invalid expire time in 'set' command\r\n",
            ),
            (&["SET", "k", "v", "EX", "x"], not_int),
            (
                &["SET", "k", "v", "EX", "9223372036854775807"],
                "-ERR invalid expire time in 'set' command\r\n",
            ),
            (
                &["SET"],
                "-ERR wrong number of arguments for 'set' command\r\n",
            ),
            (&["APPEND", "k", "yz"], ":3\r\n"),
            (&["GET", "k"], "$3\r\nwyz\r\n"),
            (&["STRLEN", "k"], ":3\r\n"),
            (&["STRLEN", "none"], ":0\r\n"),
            (&["APPEND", "new", "ab"], ":2\r\n"),
            (&["MSET", "a", "1", "b", "2"], "+OK\r\n"),
            (
                &["MSET", "a", "1", "b"],
                "-ERR wrong number of arguments for 'mset' command\r\n",
            ),
            (
                &["MGET", "a", "none", "b"],
                "*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n2\r\n",
            ),
            (&["GETDEL", "a"], "$1\r\n1\r\n"),
            (&["GETDEL", "a"], "$-1\r\n"),
            (&["INCR", "c"], ":1\r\n"),
            (&["INCRBY", "c", "10"], ":11\r\n"),
            (&["DECR", "c"], ":10\r\n"),
            (&["DECRBY", "c", "-5"], ":15\r\n"),
            (&["INCRBY", "c", "x"], not_int),
            (
                &["DECRBY", "c", "-9223372036854775808"],
                "-ERR decrement would overflow\r\n",
            ),
            (&["SET", "c", "9223372036854775807"], "+OK\r\n"),
            (
                &["INCR", "c"],
                "-ERR increment or decrement would overflow\r\n",
            ),
            (&["SET", "c", " 1"], "+OK\r\n"),
            (&["INCR", "c"], not_int),
            (&["SET", "c", "01"], "+OK\r\n"),
            (&["INCR", "c"], not_int),
            (&["RPUSH", "l", "a"], ":1\r\n"),
            (&["GET", "l"], wrongtype),
            (&["INCR", "l"], wrongtype),
            (&["APPEND", "l", "x"], wrongtype),
            (&["SET", "l", "v", "GET"], wrongtype),
            (&["MGET", "l"], "*1\r\n$-1\r\n"),
            (&["SET", "l", "v"], "+OK\r\n"),
            (&["TYPE", "l"], "+string\r\n"),
        ],
    );
}

#[test]
fn keys_and_lists() {
    let mut h = harness();
    let p = conn(&mut h);
    let wrongtype = "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n";
    check(
        &mut h,
        p,
        &[
            (&["MSET", "a", "1", "b", "2"], "+OK\r\n"),
            (&["EXISTS", "a", "a", "x"], ":2\r\n"),
            (&["DEL", "a", "x"], ":1\r\n"),
            (&["TYPE", "a"], "+none\r\n"),
            (&["TTL", "a"], ":-2\r\n"),
            (&["TTL", "b"], ":-1\r\n"),
            (&["EXPIRE", "b", "100"], ":1\r\n"),
            (&["TTL", "b"], ":100\r\n"),
            (&["PTTL", "b"], ":100000\r\n"),
            (&["EXPIRE", "b", "10", "NX"], ":0\r\n"),
            (&["EXPIRE", "b", "50", "GT"], ":0\r\n"),
            (&["EXPIRE", "b", "50", "LT"], ":1\r\n"),
            (&["PEXPIRE", "b", "60000", "XX"], ":1\r\n"),
            (&["TTL", "b"], ":60\r\n"),
            (
                &["EXPIRE", "b", "1", "NX", "XX"],
                "-ERR NX and XX, GT or LT options at the same time are not compatible\r\n",
            ),
            (
                &["EXPIRE", "b", "1", "GT", "LT"],
                "-ERR GT and LT options at the same time are not compatible\r\n",
            ),
            (
                &["EXPIRE", "b", "1", "foo"],
                "-ERR Unsupported option foo\r\n",
            ),
            (
                &["EXPIRE", "b", "9223372036854775807"],
                "-ERR invalid expire time in 'expire' command\r\n",
            ),
            (&["EXPIRE", "none", "10"], ":0\r\n"),
            (&["PERSIST", "b"], ":1\r\n"),
            (&["PERSIST", "b"], ":0\r\n"),
            (&["TTL", "b"], ":-1\r\n"),
            (&["EXPIRE", "b", "-1"], ":1\r\n"),
            (&["EXISTS", "b"], ":0\r\n"),
            (&["DBSIZE"], ":0\r\n"),
            (&["RPUSH", "l", "a", "b", "c"], ":3\r\n"),
            (&["LPUSH", "l", "z"], ":4\r\n"),
            (&["LLEN", "l"], ":4\r\n"),
            (
                &["LRANGE", "l", "0", "-1"],
                "*4\r\n$1\r\nz\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n",
            ),
            (
                &["LRANGE", "l", "-2", "100"],
                "*2\r\n$1\r\nb\r\n$1\r\nc\r\n",
            ),
            (&["LRANGE", "l", "5", "10"], "*0\r\n"),
            (
                &["LRANGE", "l", "0", "x"],
                "-ERR value is not an integer or out of range\r\n",
            ),
            (&["LPOP", "l"], "$1\r\nz\r\n"),
            (&["RPOP", "l", "2"], "*2\r\n$1\r\nc\r\n$1\r\nb\r\n"),
            (&["LPOP", "l", "0"], "*0\r\n"),
            (
                &["LPOP", "l", "-1"],
                "-ERR value is out of range, must be positive\r\n",
            ),
            (&["LPOP", "none", "1"], "*-1\r\n"),
            (&["LPOP", "none"], "$-1\r\n"),
            (
                &["LPOP", "l", "1", "2"],
                "-ERR wrong number of arguments for 'lpop' command\r\n",
            ),
            (&["TYPE", "l"], "+list\r\n"),
            (&["LPOP", "l", "5"], "*1\r\n$1\r\na\r\n"),
            (&["EXISTS", "l"], ":0\r\n"),
            (&["SET", "s", "v"], "+OK\r\n"),
            (&["LPUSH", "s", "x"], wrongtype),
            (&["LLEN", "s"], wrongtype),
            (&["LRANGE", "s", "0", "1"], wrongtype),
            (&["LPOP", "s"], wrongtype),
            (&["FLUSHDB", "x"], "-ERR syntax error\r\n"),
            (&["FLUSHALL", "ASYNC"], "+OK\r\n"),
            (&["DBSIZE"], ":0\r\n"),
        ],
    );
    assert!(talk(&mut h, p, &cmd(&["INFO", "memory"])).contains("used_memory:0\r\n"));
}

#[test]
fn protocol_errors_answer_then_close() {
    for (input, want) in [
        (
            &b"*abc\r\n"[..],
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*1\r\nx\r\n",
            "-ERR Protocol error: expected '$', got 'x'\r\n",
        ),
        (
            b"*1\r\n$-1\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*1\r\n$x\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"set a \"b\r\n",
            "-ERR Protocol error: unbalanced quotes in request\r\n",
        ),
        (
            b"PING\r\n*2000000\r\n",
            "+PONG\r\n-ERR Protocol error: invalid multibulk length\r\n",
        ),
    ] {
        let mut h = harness();
        let p = conn(&mut h);
        assert_eq!(talk(&mut h, p, input), want, "{input:?}");
        assert!(h.closed(p).is_some(), "{input:?}");
    }
    // Too long a line without its end.
    let mut h = harness();
    let p = conn(&mut h);
    let out = talk(&mut h, p, &vec![b'a'; 70_000]);
    assert_eq!(out, "-ERR Protocol error: too big inline request\r\n");
    // A bulk over the limit.
    let mut h = harness_with(
        RespConfig {
            max_bulk_len: 10,
            ..RespConfig::default()
        },
        None,
        false,
    );
    let p = conn(&mut h);
    let out = talk(&mut h, p, b"*1\r\n$11\r\n");
    assert_eq!(out, "-ERR Protocol error: invalid bulk length\r\n");
}

#[test]
fn inline_commands_and_skips() {
    let mut h = harness();
    let p = conn(&mut h);
    let out = talk(
        &mut h,
        p,
        b"\r\n*0\r\n*-1\r\nset k \"a\\x41 b\"\r\nget k\nGET 'k'\r\n",
    );
    assert_eq!(out, "+OK\r\n$4\r\naA b\r\n$4\r\naA b\r\n");
    // An HTTP request is dropped without a reply, as Redis does.
    assert_eq!(talk(&mut h, p, b"POST / HTTP/1.1\r\n"), "");
    assert!(h.closed(p).is_some());
}

#[test]
fn pipelining_keeps_order() {
    let mut h = harness();
    let p = conn(&mut h);
    let mut req = Vec::new();
    let mut want = String::new();
    for i in 0..500 {
        req.extend(cmd(&["SET", &format!("k{i}"), &i.to_string()]));
        req.extend(cmd(&["GET", &format!("k{i}")]));
        want.push_str(&format!("+OK\r\n${}\r\n{i}\r\n", i.to_string().len()));
    }
    assert_eq!(talk(&mut h, p, &req), want);
}

#[test]
fn large_values_round_trip() {
    let mut h = harness();
    let p = conn(&mut h);
    let v = "x".repeat(3 << 20);
    assert_eq!(talk(&mut h, p, &cmd(&["SET", "big", &v])), "+OK\r\n");
    let got = talk(&mut h, p, &cmd(&["GET", "big"]));
    assert_eq!(got, format!("${}\r\n{v}\r\n", v.len()));
}

#[test]
fn resp3_after_hello() {
    let mut h = harness();
    let p = conn(&mut h);
    let hello = talk(&mut h, p, &cmd(&["HELLO", "3"]));
    assert!(hello.starts_with("%7\r\n$6\r\nserver\r\n"), "{hello}");
    assert!(hello.contains("$5\r\nproto\r\n:3\r\n"), "{hello}");
    check(
        &mut h,
        p,
        &[
            (&["GET", "none"], "_\r\n"),
            (&["LPOP", "none", "1"], "_\r\n"),
            (&["CONFIG", "GET", "save"], "%1\r\n$4\r\nsave\r\n$0\r\n\r\n"),
            (&["INFO", "keyspace"], "=16\r\ntxt:# Keyspace\r\n\r\n"),
            (&["COMMAND", "DOCS"], "%0\r\n"),
        ],
    );
    let two = talk(&mut h, p, &cmd(&["HELLO", "2"]));
    assert!(two.starts_with("*14\r\n"), "{two}");
    assert_eq!(talk(&mut h, p, &cmd(&["GET", "none"])), "$-1\r\n");
}

#[test]
fn auth_against_the_users_file() {
    let dir = std::env::temp_dir().join(format!("warpwire-resp-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("users.toml");
    UserDb::add_to_file(&file, "alice", b"secret").unwrap();
    UserDb::add_to_file(&file, "default", b"pw").unwrap();
    let users = UserDb::load(&file).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let mut h = harness_with(RespConfig::default(), Some(users), true);
    let p = conn(&mut h);
    let wrongpass = "-WRONGPASS invalid username-password pair or user is disabled.\r\n";
    check(
        &mut h,
        p,
        &[
            (&["GET", "k"], "-NOAUTH Authentication required.\r\n"),
            (&["PING"], "-NOAUTH Authentication required.\r\n"),
            (&["AUTH", "alice", "wrong"], wrongpass),
            (&["AUTH", "bob", "secret"], wrongpass),
            (&["AUTH", "alice", "secret"], "+OK\r\n"),
            (&["GET", "k"], "$-1\r\n"),
        ],
    );
    let q = conn(&mut h);
    assert_eq!(talk(&mut h, q, &cmd(&["AUTH", "pw"])), "+OK\r\n");
    // HELLO with AUTH authenticates and switches protocol at once.
    let r = conn(&mut h);
    assert!(talk(&mut h, r, &cmd(&["HELLO", "3"])).starts_with("-NOAUTH HELLO must be called"));
    let hello = talk(&mut h, r, &cmd(&["HELLO", "3", "AUTH", "alice", "secret"]));
    assert!(hello.starts_with("%7\r\n"), "{hello}");
    // Before AUTH, large requests are protocol errors.
    let s = conn(&mut h);
    let big = cmd(&["x"; 11]);
    assert_eq!(
        talk(&mut h, s, &big),
        "-ERR Protocol error: unauthenticated multibulk length\r\n"
    );
}

#[test]
fn expiry_on_the_virtual_clock() {
    let mut h = harness();
    let p = conn(&mut h);
    check(
        &mut h,
        p,
        &[
            (&["SET", "lazy", "v", "PX", "1500"], "+OK\r\n"),
            (&["SET", "keep", "v", "EX", "10"], "+OK\r\n"),
            (&["SET", "keep", "w", "KEEPTTL"], "+OK\r\n"),
            (&["INCR", "n"], ":1\r\n"),
            (&["EXPIRE", "n", "1"], ":1\r\n"),
            (&["INCR", "n"], ":2\r\n"),
        ],
    );
    h.advance(Duration::from_millis(1400));
    check(
        &mut h,
        p,
        &[
            (&["GET", "lazy"], "$1\r\nv\r\n"),
            (&["PTTL", "lazy"], ":100\r\n"),
            (&["TTL", "keep"], ":9\r\n"),
            (&["EXISTS", "n"], ":0\r\n"),
        ],
    );
    h.advance(Duration::from_millis(100));
    assert_eq!(talk(&mut h, p, &cmd(&["GET", "lazy"])), "$-1\r\n");
    // Active expiry: keys nobody reads go within a housekeeping round.
    for i in 0..1000 {
        h.send(p, &cmd(&["SET", &format!("t{i}"), "v", "PX", "50"]));
    }
    h.settle();
    h.received(p);
    assert_eq!(talk(&mut h, p, &cmd(&["DBSIZE"])), ":1001\r\n");
    // 1,000 keys at 256 per housekeeping round: four rounds.
    h.advance(Duration::from_millis(500));
    assert_eq!(talk(&mut h, p, &cmd(&["DBSIZE"])), ":1\r\n");
    let stats = talk(&mut h, p, &cmd(&["INFO", "stats"]));
    assert!(stats.contains("expired_keys:1002\r\n"), "{stats}");
}

#[test]
fn maxmemory_refuses_writes_not_reads() {
    let mut h = harness_with(
        RespConfig {
            maxmemory: 4096,
            ..RespConfig::default()
        },
        None,
        false,
    );
    let p = conn(&mut h);
    let oom = "-OOM command not allowed when used memory > 'maxmemory'.\r\n";
    let v = "x".repeat(1000);
    check(
        &mut h,
        p,
        &[
            (&["SET", "a", &v], "+OK\r\n"),
            (&["SET", "b", &v], "+OK\r\n"),
            (&["SET", "c", &v], "+OK\r\n"),
            (&["SET", "d", &v], oom),
            (&["RPUSH", "l", &v], oom),
            (&["APPEND", "a", &v], oom),
            (&["GET", "d"], "$-1\r\n"),
            (&["STRLEN", "a"], ":1000\r\n"),
            (&["DEL", "a"], ":1\r\n"),
            (&["SET", "d", &v], "+OK\r\n"),
        ],
    );
    let mem = talk(&mut h, p, &cmd(&["INFO", "memory"]));
    assert!(mem.contains("maxmemory:4096\r\n"), "{mem}");
    assert!(
        mem.contains(&format!("used_memory:{}\r\n", 3 * (96 + 1001))),
        "{mem}"
    );
}

#[test]
fn pubsub_between_connections() {
    let mut h = harness();
    let (a, b, c, publisher) = (conn(&mut h), conn(&mut h), conn(&mut h), conn(&mut h));
    assert_eq!(
        talk(&mut h, a, &cmd(&["SUBSCRIBE", "news", "sport"])),
        "*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$5\r\nsport\r\n:2\r\n"
    );
    assert!(talk(&mut h, b, &cmd(&["HELLO", "3"])).starts_with('%'));
    assert_eq!(
        talk(&mut h, b, &cmd(&["SUBSCRIBE", "news"])),
        ">3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n"
    );
    assert_eq!(
        talk(&mut h, publisher, &cmd(&["PUBLISH", "news", "rain"])),
        ":2\r\n"
    );
    assert_eq!(
        talk(&mut h, publisher, &cmd(&["PUBLISH", "sport", "2-1"])),
        ":1\r\n"
    );
    assert_eq!(
        talk(&mut h, publisher, &cmd(&["PUBLISH", "none", "x"])),
        ":0\r\n"
    );
    assert_eq!(
        String::from_utf8(h.received(a)).unwrap(),
        "*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$4\r\nrain\r\n\
         *3\r\n$7\r\nmessage\r\n$5\r\nsport\r\n$3\r\n2-1\r\n"
    );
    assert_eq!(
        String::from_utf8(h.received(b)).unwrap(),
        ">3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$4\r\nrain\r\n"
    );
    assert_eq!(String::from_utf8(h.received(c)).unwrap(), "");
    // RESP2 subscribed mode: only the pub/sub commands.
    check(
        &mut h,
        a,
        &[
            (
                &["GET", "k"],
                "-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT \
                 / RESET are allowed in this context\r\n",
            ),
            (&["PING"], "*2\r\n$4\r\npong\r\n$0\r\n\r\n"),
            (
                &["UNSUBSCRIBE", "sport"],
                "*3\r\n$11\r\nunsubscribe\r\n$5\r\nsport\r\n:1\r\n",
            ),
        ],
    );
    // RESP3 subscribers may run anything, and hear their own publish first.
    check(
        &mut h,
        b,
        &[
            (&["PING"], "+PONG\r\n"),
            (
                &["PUBLISH", "news", "self"],
                ">3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$4\r\nself\r\n:2\r\n",
            ),
        ],
    );
    h.received(a);
    // A subscriber that leaves is no longer counted.
    h.reset(b);
    h.settle();
    assert_eq!(
        talk(&mut h, publisher, &cmd(&["PUBLISH", "news", "x"])),
        ":1\r\n"
    );
    check(
        &mut h,
        a,
        &[
            (
                &["RESET"],
                "*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$1\r\nx\r\n+RESET\r\n",
            ),
            (
                &["UNSUBSCRIBE"],
                "*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n",
            ),
            (&["GET", "k"], "$-1\r\n"),
        ],
    );
    assert_eq!(
        talk(&mut h, publisher, &cmd(&["PUBLISH", "news", "x"])),
        ":0\r\n"
    );
}

/// Commands whose replies do not depend on anything but the keyspace.
fn script() -> Vec<u8> {
    let mut s = Vec::new();
    for c in [
        &["SET", "a", "hello"][..],
        &["GET", "a"],
        &["APPEND", "a", " world"],
        &["RPUSH", "l", "x", "y", "z"],
        &["LRANGE", "l", "0", "-1"],
        &["INCR", "n"],
        &["GET", "l"],
        &["NOPE", "x"],
        &["MGET", "a", "n", "l"],
        &["LPOP", "l", "2"],
    ] {
        s.extend(cmd(c));
    }
    s.extend_from_slice(b"set q \"quoted \\\"x\\\"\"\r\nget q\r\n");
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the reads look like, the replies are the same.
    #[test]
    fn split_anywhere(cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12)) {
        let whole = script();
        let mut h = harness();
        let p = conn(&mut h);
        let want = talk(&mut h, p, &whole);
        let mut h = harness();
        let p = conn(&mut h);
        let mut at: Vec<usize> = cuts.iter().map(|i| i.index(whole.len())).collect();
        at.sort_unstable();
        let mut got = String::new();
        let mut from = 0;
        for cut in at.into_iter().chain([whole.len()]) {
            got.push_str(&talk(&mut h, p, &whole[from..cut]));
            from = cut;
        }
        prop_assert_eq!(got, want);
    }

    /// Random bytes never panic the server, and whatever it answers is
    /// whole RESP lines.
    #[test]
    fn random_input(chunks in proptest::collection::vec(
        proptest::collection::vec(
            prop_oneof![any::<u8>(), Just(b'\r'), Just(b'\n'), Just(b'*'), Just(b'$'), Just(b'1')],
            0..64,
        ),
        1..8,
    )) {
        let mut h = harness_with(RespConfig { max_bulk_len: 100, ..RespConfig::default() }, None, false);
        let p = conn(&mut h);
        let mut out = Vec::new();
        for c in chunks {
            h.send(p, &c);
            h.settle();
            out.extend(h.received(p));
        }
        prop_assert!(out.is_empty() || out.ends_with(b"\r\n"));
    }
}

/// Command names to draw from: every command, a few subcommands, junk.
const NAMES: &[&str] = &[
    "get",
    "set",
    "ping",
    "echo",
    "hello",
    "auth",
    "select",
    "reset",
    "client",
    "command",
    "config",
    "info",
    "dbsize",
    "flushdb",
    "flushall",
    "getdel",
    "mget",
    "mset",
    "append",
    "strlen",
    "incr",
    "decr",
    "incrby",
    "decrby",
    "del",
    "exists",
    "expire",
    "pexpire",
    "ttl",
    "pttl",
    "persist",
    "type",
    "lpush",
    "rpush",
    "lpop",
    "rpop",
    "llen",
    "lrange",
    "publish",
    "subscribe",
    "unsubscribe",
    "nope",
];

/// Arguments to draw from: keys, options, numbers at the edges, globs.
const ARGS: &[&str] = &[
    "k",
    "l",
    "n",
    "0",
    "1",
    "-1",
    "3",
    "100",
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775808",
    "x",
    "",
    "NX",
    "XX",
    "GT",
    "LT",
    "GET",
    "EX",
    "PX",
    "KEEPTTL",
    "AUTH",
    "SETNAME",
    "GETNAME",
    "ID",
    "COUNT",
    "DOCS",
    "*",
    "[a-",
    "\\",
    "?*[^x]",
    "2",
    "all",
    "ASYNC",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random commands with random arguments, in RESP2 or RESP3: no panic,
    /// and every command gets a reply (or the connection closes).
    #[test]
    fn random_commands(
        resp3 in any::<bool>(),
        cmds in proptest::collection::vec(
            (0..NAMES.len(), proptest::collection::vec(0..ARGS.len(), 0..6)),
            1..40,
        ),
    ) {
        let mut h = harness_with(RespConfig { maxmemory: 2048, ..RespConfig::default() }, None, false);
        let p = conn(&mut h);
        if resp3 {
            talk(&mut h, p, &cmd(&["HELLO", "3"]));
        }
        for (name, args) in cmds {
            let mut c = vec![NAMES[name]];
            c.extend(args.iter().map(|&a| ARGS[a]));
            let out = talk(&mut h, p, &cmd(&c));
            prop_assert!(
                h.closed(p).is_some() || (!out.is_empty() && out.ends_with("\r\n")),
                "{c:?} -> {out:?}"
            );
            if h.closed(p).is_some() {
                break;
            }
        }
    }
}

/// A subscriber waits for messages and is never closed for being idle, as
/// in Redis; a connection that is not subscribed is (the engine's
/// idle_timeout, 60 s by default).
#[test]
fn a_subscriber_outlives_the_idle_timeout() {
    let mut h = harness();
    let (sub, idle) = (conn(&mut h), conn(&mut h));
    talk(&mut h, sub, &cmd(&["SUBSCRIBE", "news"]));
    talk(&mut h, idle, &cmd(&["PING"]));
    for _ in 0..70 {
        h.advance(std::time::Duration::from_secs(1));
    }
    assert_eq!(h.closed(sub), None, "the subscriber stays");
    assert!(h.closed(idle).is_some(), "the idle connection is closed");
    let publisher = conn(&mut h);
    assert_eq!(
        talk(&mut h, publisher, &cmd(&["PUBLISH", "news", "late"])),
        ":1\r\n"
    );
    assert!(
        String::from_utf8(h.received(sub))
            .unwrap()
            .ends_with("$4\r\nlate\r\n")
    );
}

//! The `warpwire` binary end to end: serve, every client action, bench,
//! probe, users, auth, and a graceful SIGTERM, over loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{BIN, Server};

use common::run;

fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// `warpwire client ADDR --transport CLIENT ACTION...`.
fn client(addr: &str, transport: &str, action: &[&str]) -> String {
    let mut args = vec!["client", addr, "--transport", transport];
    args.extend_from_slice(action);
    ok(&args)
}

/// Every one-shot client action from a client on `transport` against a
/// server on `server` (which STATS names).
fn one_shot_actions(a: &str, transport: &str, server: &str) {
    let c = |action: &[&str]| client(a, transport, action);
    assert_eq!(c(&["echo", "hello wire"]).trim(), "hello wire");
    assert!(c(&["ping", "--count", "2", "--interval", "10ms"]).contains("seq=1 rtt="));
    assert_eq!(c(&["app", "0x80", "abc"]).trim(), "cba");
    assert_eq!(c(&["app", "0x81", "abc"]).trim(), "ABC");
    assert!(c(&["data", "some bytes"]).contains("10 bytes accepted"));
    let stats = c(&["stats"]);
    assert!(
        stats.contains(&format!("transport     {server}\n")),
        "{transport} client, {server} server: {stats}"
    );
    assert!(c(&["broadcast", "hi"]).contains("delivered to 0 recipient"));
}

/// A listener on `transport` receives a broadcast sent by another client
/// on `transport`, once it says it listens (it has connected and
/// subscribed by then).
fn listener_gets_a_broadcast(a: &str, transport: &str) {
    let mut listener = Command::new(BIN)
        .args(["client", a, "--transport", transport])
        .args(["listen", "--count", "1", "--duration", "10s"])
        .env("WARPWIRE_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = {
        use std::io::BufRead;
        let out = listener.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        rx
    };
    let first = lines.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(first.starts_with("listening for broadcasts"), "{first}");
    // Its connection may still wait in the server's accept queue: send
    // until it has one (every broadcast carries the same text).
    let mut got = None;
    for _ in 0..100 {
        client(a, transport, &["broadcast", "to the listener"]);
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(100)) {
            got = Some(line);
            break;
        }
    }
    let got = got.expect("the listener printed no broadcast");
    assert!(got.contains("to the listener"), "{got}");
    assert!(listener.wait().unwrap().success());
}

#[test]
fn client_actions_against_a_running_server() {
    let s = Server::start(&["--transport", "socket"]);
    let a = s.addr.to_string();
    one_shot_actions(&a, "socket", "socket");
    listener_gets_a_broadcast(&a, "socket");

    // Unknown application type: a clear error, non-zero exit.
    let o = run(&["client", &a, "app", "0x99", "x"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("UNKNOWN_TYPE"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    assert!(s.terminate().success(), "graceful shutdown exits 0");
}

/// `warpwire probe`'s line for uring: `None` when it is available, the
/// probe's reason when this machine cannot run it (old kernel,
/// `kernel.io_uring_disabled`, a seccomp filter). It is always compiled in.
fn uring_unavailable() -> Option<String> {
    let out = ok(&["probe"]);
    let line = out
        .lines()
        .find(|l| l.starts_with("uring "))
        .unwrap_or_else(|| panic!("probe lists no uring line: {out}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols[1], "yes", "uring is always compiled in: {line}");
    match cols[2] {
        "yes" => None,
        "no" => Some(line.to_owned()),
        _ => panic!("unexpected probe line {line:?}"),
    }
}

/// When io_uring is off here, what can still be checked: forcing it fails
/// with the probe's reason. Says that the uring data path was not run.
fn uring_refused(why: &str, test: &str) {
    println!("{test}: io_uring is unavailable here, its data path is not exercised: {why}");
    let o = run(&["serve", "--transport", "uring", "--listen", "127.0.0.1:0"]);
    assert!(
        !o.status.success(),
        "forcing an unavailable uring must fail"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("transport uring was requested but is unavailable"),
        "{err}"
    );
}

/// The uring backend end to end: a uring server answers every client
/// action from uring clients, relays a broadcast, serves a bench cleanly
/// and shuts down gracefully.
#[test]
fn uring_serves_every_client_action_and_bench() {
    if let Some(why) = uring_unavailable() {
        return uring_refused(&why, "uring_serves_every_client_action_and_bench");
    }
    let s = Server::start(&["--transport", "uring"]);
    let a = s.addr.to_string();
    one_shot_actions(&a, "uring", "uring");
    listener_gets_a_broadcast(&a, "uring");
    let out = ok(&[
        "bench",
        &a,
        "--transport",
        "uring",
        "--count",
        "2000",
        "--connections",
        "4",
        "--depth",
        "8",
        "--json",
    ]);
    common::assert_bench_clean(&out);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["messages"].as_u64().unwrap() >= 2000, "{out}");
    assert!(s.terminate().success(), "graceful shutdown exits 0");
}

/// uring and socket are the same kernel TCP on the wire: a uring client
/// talks to a socket server and a socket client to a uring server.
#[test]
fn uring_and_socket_interoperate() {
    if let Some(why) = uring_unavailable() {
        return uring_refused(&why, "uring_and_socket_interoperate");
    }
    for (server, client) in [("socket", "uring"), ("uring", "socket")] {
        let s = Server::start(&["--transport", server]);
        one_shot_actions(&s.addr.to_string(), client, server);
        assert!(s.terminate().success(), "{server} server exits 0");
    }
}

/// 1 MiB through an echo listener from a kernel socket, then a half-close:
/// every byte back in order, then EOF.
fn echo_round_trip(addr: SocketAddr) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let sent: Vec<u8> = (0..1u32 << 20).map(|i| (i % 253) as u8).collect();
    let mut w = s.try_clone().unwrap();
    let data = sent.clone();
    let writer = std::thread::spawn(move || {
        w.write_all(&data).unwrap();
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    assert!(
        got == sent,
        "echo returned {} of {} bytes, or other bytes",
        got.len(),
        sent.len()
    );
}

/// Warpwire and echo served by one process on two ports, over each kernel
/// backend; the listener from a flag, and from the config file.
#[test]
fn a_second_protocol_on_a_second_listener() {
    let mut transports = vec!["socket"];
    match uring_unavailable() {
        None => transports.push("uring"),
        Some(why) => println!("uring not run: {why}"),
    }
    for t in transports {
        let s = Server::start(&["--transport", t, "--listener", "echo=127.0.0.1:0"]);
        echo_round_trip(s.addr_of("echo"));
        assert!(client(&s.addr.to_string(), "socket", &["ping"]).contains("rtt"));
        assert!(s.terminate().success(), "{t}: graceful shutdown exits 0");
    }
    // From the file: `[[server.listeners]]`.
    let path = std::env::temp_dir().join(format!("ww-cli-listeners-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        "[[server.listeners]]\nprotocol = \"echo\"\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let mut c = Command::new(BIN);
    c.args(["--config", path.to_str().unwrap(), "serve"]).args([
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
    ]);
    let s = Server::spawn_with(c, 1);
    let _ = std::fs::remove_file(&path);
    echo_round_trip(s.addr_of("echo"));
    assert!(s.terminate().success());
    // An unknown protocol: refused at start, naming the ones served.
    let o = run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--listener",
        "gopher=127.0.0.1:0",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("`gopher`") && err.contains("warpwire, echo"),
        "{err}"
    );
}

#[test]
fn bench_reports_json() {
    let s = Server::start(&[]);
    let a = s.addr.to_string();
    let out = ok(&[
        "bench",
        &a,
        "--connections",
        "2",
        "--depth",
        "8",
        "--count",
        "5000",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["messages"].as_u64().unwrap() >= 5000, "{out}");
    assert_eq!(v["errors"].as_u64(), Some(0));
    drop(s);
}

/// One load thread opens 5,000 kernel connections (paced, 256 handshakes
/// at a time) and every one echoes; the report says how long the ramp
/// took. Before pacing, thousands of simultaneous connects overflowed the
/// server's accept queue and ended in `request timed out`. (5,000, not
/// 10,000: tests run side by side under one descriptor limit; the root
/// tests and scripts/bench-scale.sh go to 10,000 and 50,000.)
#[test]
fn bench_opens_thousands_of_connections_from_one_thread() {
    let s = Server::start(&["--max-connections", "8000", "--workers", "1"]);
    let a = s.addr.to_string();
    let out = ok(&[
        "bench",
        &a,
        "--transport",
        "socket",
        "--connections",
        "5000",
        "--depth",
        "1",
        "--count",
        "5000",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["messages"].as_u64(), Some(5000), "{out}");
    assert_eq!(v["errors"].as_u64(), Some(0), "{out}");
    let ramp = v["ramp_s"].as_f64().unwrap();
    assert!(ramp > 0.0 && ramp < 30.0, "{out}");
    drop(s);
}

/// `bench --protocol echo` against an RFC 862 echo server on kernel TCP
/// (testkit's, not this binary's): every reply verified, a corrupting
/// server's replies counted as errors (exit status 1), and a warpwire
/// `--type` refused.
#[test]
fn bench_speaks_echo() {
    use warpwire_testkit::kernel_echo::{Fault, KernelEcho};
    let srv = KernelEcho::start().unwrap();
    let a = srv.addr().to_string();
    let bench = |addr: &str, extra: &[&str]| {
        let mut args = vec![
            "bench",
            addr,
            "--protocol",
            "echo",
            "--transport",
            "socket",
            "--connections",
            "2",
            "--depth",
            "4",
            "--size",
            "50",
            "--count",
            "1000",
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    let out = bench(&a, &["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["messages"].as_u64(), Some(1000), "{v}");
    assert_eq!(v["errors"].as_u64(), Some(0), "{v}");
    assert_eq!(v["protocol"], "echo");
    assert_eq!(srv.echoed(), 1000 * 50);

    let refused = bench(&a, &["--type", "ping"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(err.contains("--protocol echo sends raw bytes"), "{err}");

    let bad = KernelEcho::with_fault(Fault::FlipEvery(500)).unwrap();
    let out = bench(&bad.addr().to_string(), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("100 errors, 0 requests lost"), "{err}");
}

/// `bench --protocol PROTOCOL` of 2,000 requests (4 connections, depth 8)
/// with `extra`: exactly the count answered, no errors, nothing lost, and
/// the report names the protocol and `size`.
fn bench_2000_clean(addr: &str, protocol: &str, extra: &[&str], size: u64) {
    let mut args = vec![
        "bench",
        addr,
        "--protocol",
        protocol,
        "--transport",
        "socket",
        "--count",
        "2000",
        "--connections",
        "4",
        "--depth",
        "8",
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = ok(&args);
    common::assert_bench_clean(&out);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["messages"].as_u64(), Some(2000), "{out}");
    assert_eq!(v["protocol"], protocol);
    assert_eq!(v["body_size"].as_u64(), Some(size), "{out}");
}

/// `bench --protocol http` against this binary's HTTP listener: pipelined
/// `POST /echo` (every body checked) and, with `--size 0`, `GET /ping`;
/// exactly the count answered, no errors; a warpwire `--type` refused.
#[test]
fn bench_speaks_http() {
    let s = Server::start(&["--transport", "socket", "--listener", "http=127.0.0.1:0"]);
    let a = s.addr_of("http").to_string();
    for (size, extra) in [(64, &[][..]), (0, &["--size", "0"][..])] {
        bench_2000_clean(&a, "http", extra, size);
    }
    let refused = run(&["bench", &a, "--protocol", "http", "--type", "ping"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(err.contains("--protocol http sends POST /echo"), "{err}");
    assert!(s.terminate().success());
}

/// `bench --protocol resp` against this binary's RESP listener: pipelined
/// `SET`s, then `GET`s of the same keys (every value checked), then
/// `PING`s; exactly the count answered, no errors; warpwire's `--type`
/// and resp's options on another protocol refused.
#[test]
fn bench_speaks_resp() {
    let s = Server::start(&["--transport", "socket", "--listener", "resp=127.0.0.1:0"]);
    let a = s.addr_of("resp").to_string();
    for (size, extra) in [
        (64, &["--keyspace", "500"][..]),
        (64, &["--command", "get", "--keyspace", "500"][..]),
        (0, &["--command", "ping"][..]),
    ] {
        bench_2000_clean(&a, "resp", extra, size);
    }
    // GETs expecting another size find values of 64 bytes: errors.
    let out = run(&[
        "bench",
        &a,
        "--protocol",
        "resp",
        "--transport",
        "socket",
        "--count",
        "100",
        "--command",
        "get",
        "--keyspace",
        "500",
        "--size",
        "65",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("errors, 0 requests lost"), "{err}");
    let refused = run(&["bench", &a, "--protocol", "resp", "--type", "ping"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        err.contains("--protocol resp sends SET, GET or PING"),
        "{err}"
    );
    let refused = run(&["bench", &a, "--protocol", "http", "--command", "get"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(err.contains("apply to --protocol resp only"), "{err}");
    assert!(s.terminate().success());
}

#[test]
fn probe_and_forced_unavailable_transport() {
    let out = ok(&["probe"]);
    assert!(out.contains("socket   yes       yes"), "{out}");
    // Latencies are expectations for named hardware, not measurements.
    assert!(out.contains("available expected latency"), "{out}");
    assert!(out.contains("~10-70 us (kernel TCP, loopback)"), "{out}");
    assert!(
        out.contains("~10-70 us (kernel TCP via io_uring, loopback)"),
        "{out}"
    );
    assert!(out.contains("soft-RoCE"), "{out}");
    assert!(!out.contains("~1us"), "{out}");
    // Both kernel-TCP backends are always compiled in.
    assert!(ok(&["--version"]).contains("backends: socket,uring"));
    // Every policy prefers uring to socket; without io_uring, socket.
    let compatible = ok(&["probe", "--latency-policy", "compatible"]);
    match uring_unavailable() {
        None => {
            assert!(out.contains("uring    yes       yes"), "{out}");
            assert!(out.contains("kernel TCP via io_uring (multishot"), "{out}");
            assert!(out.contains("choice: uring"), "{out}");
            assert!(compatible.contains("choice: uring"), "{compatible}");
        }
        Some(why) => {
            println!("io_uring is unavailable here: {why}");
            assert!(out.contains("choice: socket"), "{out}");
            assert!(compatible.contains("choice: socket"), "{compatible}");
        }
    }
    let o = run(&["serve", "--transport", "rdma", "--listen", "127.0.0.1:0"]);
    assert!(
        !o.status.success(),
        "a forced unavailable transport must fail"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("transport rdma was requested but is unavailable"),
        "{err}"
    );
}

#[test]
fn users_file_and_required_auth() {
    let users = std::env::temp_dir().join(format!("ww-cli-users-{}.toml", std::process::id()));
    let _ = std::fs::remove_file(&users);
    let u = users.to_str().unwrap();
    let out = ok(&["users", "add", "alice", "--users", u]);
    let token = out
        .lines()
        .find_map(|l| l.strip_prefix("token (shown once, store it now): "))
        .expect("generated token printed")
        .to_owned();
    assert!(!std::fs::read_to_string(&users).unwrap().contains(&token));
    let s = Server::start(&["--require-auth", "--users", u]);
    let a = s.addr.to_string();
    assert_eq!(
        ok(&[
            "client", &a, "--user", "alice", "--token", &token, "echo", "in"
        ])
        .trim(),
        "in"
    );
    let o = run(&["client", &a, "echo", "no auth"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("UNAUTHENTICATED"));
    drop(s);
    std::fs::remove_file(&users).unwrap();
}

#[test]
fn data_dir_stores_each_sessions_bytes() {
    let dir = std::env::temp_dir().join(format!("ww-cli-data-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let file = std::env::temp_dir().join(format!("ww-cli-payload-{}", std::process::id()));
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &payload).unwrap();
    let s = Server::start(&["--data-dir", dir.to_str().unwrap()]);
    let a = s.addr.to_string();
    let out = ok(&[
        "client",
        &a,
        "data",
        "--file",
        file.to_str().unwrap(),
        "--chunk",
        "10000",
    ]);
    assert!(out.contains("sent 300000 bytes"), "{out}");
    let stored: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(stored.len(), 1);
    assert_eq!(std::fs::read(&stored[0]).unwrap(), payload);
    drop(s);
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_file(&file).unwrap();
}

/// `serve --print-config` with a config file, an environment and flags:
/// the effective settings, one process per combination.
fn effective(file: &str, env: &[(&str, &str)], flags: &[&str]) -> String {
    let case = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (file, env, flags).hash(&mut h);
        h.finish()
    };
    // One directory per case, removed when it is dropped.
    let dir = common::data_dir(&format!("cli-cfg-{case:x}"));
    std::fs::create_dir_all(&*dir).unwrap();
    let path = dir.join("config.toml");
    std::fs::write(&path, file).unwrap();
    let mut c = Command::new(BIN);
    c.args([
        "--config",
        path.to_str().unwrap(),
        "serve",
        "--print-config",
    ])
    .args(flags)
    .env("WARPWIRE_LOG", "warn");
    // Only the variables this case sets: none leak in from the test's own
    // environment.
    for (k, _) in std::env::vars() {
        if k.starts_with("WARPWIRE_") {
            c.env_remove(k);
        }
    }
    c.envs(env.iter().copied());
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "{file:?} {env:?} {flags:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// The value of `key` in the printed config (first match).
fn key<'a>(toml: &'a str, key: &str) -> &'a str {
    toml.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in\n{toml}"))
}

/// Precedence flag > environment > file > default, for every kind of
/// setting: bool (both ways, so a file's `true` can be turned off), number,
/// duration, path, address, and a bypass option.
#[test]
fn every_kind_of_setting_follows_flag_env_file_default() {
    // (key, file value, env var, env value, flag, flag value, default)
    #[allow(clippy::type_complexity)]
    let cases: &[(&str, &str, &str, &str, &str, &str, Option<&str>)] = &[
        (
            "require_auth",
            "true",
            "WARPWIRE_REQUIRE_AUTH",
            "false",
            "--require-auth=true",
            "true",
            Some("false"),
        ),
        (
            "busy_poll",
            "true",
            "WARPWIRE_BUSY_POLL",
            "false",
            "--busy-poll=true",
            "true",
            Some("false"),
        ),
        (
            "max_connections",
            "5",
            "WARPWIRE_MAX_CONNECTIONS",
            "6",
            "--max-connections=7",
            "7",
            Some("10000"),
        ),
        (
            "idle_timeout",
            "\"3s\"",
            "WARPWIRE_IDLE_TIMEOUT",
            "4s",
            "--idle-timeout=5s",
            "\"5s\"",
            Some("\"1m\""),
        ),
        (
            "data_dir",
            "\"/f\"",
            "WARPWIRE_DATA_DIR",
            "/e",
            "--data-dir=/g",
            "\"/g\"",
            None,
        ),
        (
            "listen",
            "\"localhost:9\"",
            "WARPWIRE_LISTEN",
            "127.0.0.2:8",
            "--listen=[::1]:7",
            "\"[::1]:7\"",
            Some("\"127.0.0.1:7077\""),
        ),
        (
            "users_file",
            "\"/u1\"",
            "WARPWIRE_USERS",
            "/u2",
            "--users=/u3",
            "\"/u3\"",
            None,
        ),
    ];
    for &(k, file_v, env_k, env_v, flag, flag_out, default) in cases {
        let file = format!("[server]\n{k} = {file_v}\n");
        let out = effective("", &[], &[]);
        match default {
            Some(d) => assert_eq!(key(&out, k), d, "{k}: default"),
            None => assert!(!out.contains(&format!("{k} = ")), "{k}: unset by default"),
        }
        assert_eq!(
            key(&effective(&file, &[], &[]), k),
            file_v,
            "{k}: file over default"
        );
        let env_out = effective(&file, &[(env_k, env_v)], &[]);
        assert_eq!(
            key(&env_out, k).trim_matches('"'),
            env_v,
            "{k}: environment over file"
        );
        assert_eq!(
            key(&effective(&file, &[(env_k, env_v)], &[flag]), k),
            flag_out,
            "{k}: flag over environment"
        );
    }
    // The latency policy implies busy-polling only where nothing set it.
    let lowest = "latency_policy = \"lowest\"\n";
    assert_eq!(key(&effective(lowest, &[], &[]), "busy_poll"), "true");
    assert_eq!(
        key(
            &effective(&format!("{lowest}[server]\nbusy_poll = false\n"), &[], &[]),
            "busy_poll"
        ),
        "false"
    );
    // A bypass option from the [bypass] table, overridden by its flag.
    let b = "[bypass]\nqueues = 2\niface = \"veth0\"\n";
    assert_eq!(key(&effective(b, &[], &[]), "queues"), "2");
    assert_eq!(
        key(&effective(b, &[("WARPWIRE_QUEUES", "3")], &[]), "queues"),
        "3"
    );
    assert_eq!(
        key(
            &effective(b, &[("WARPWIRE_QUEUES", "3")], &["--queues=4"]),
            "queues"
        ),
        "4"
    );
    assert_eq!(key(&effective(b, &[], &[]), "iface"), "\"veth0\"");
}

/// A misspelt key anywhere in the file is an error naming it.
#[test]
fn unknown_config_keys_are_refused() {
    for (text, word) in [
        ("[server]\nmax_conections = 3\n", "max_conections"),
        ("[bypass]\nifcae = \"x\"\n", "ifcae"),
        ("transprot = \"socket\"\n", "transprot"),
    ] {
        let dir = common::data_dir("cli-bad");
        std::fs::create_dir_all(&*dir).unwrap();
        let path = dir.join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let o = run(&[
            "--config",
            path.to_str().unwrap(),
            "serve",
            "--print-config",
        ]);
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains(word), "{text}");
    }
}

/// Host names in every address argument: `serve --listen localhost:0`,
/// `--metrics localhost:0`, and the client and bench to `localhost:PORT`
/// of a server on 127.0.0.1 (where localhost resolves to ::1 first, that
/// address refuses and the next is tried).
#[test]
fn host_names_are_resolved_and_each_address_tried() {
    let by_name = Server::start(&["--listen", "localhost:0", "--metrics", "localhost:0"]);
    assert!(by_name.addr.ip().is_loopback());
    let a = by_name.addr.to_string();
    assert_eq!(
        ok(&["client", &a, "echo", "named listen"]).trim(),
        "named listen"
    );
    drop(by_name);

    let s = Server::start(&[]);
    let port = s.addr.port();
    let target = format!("localhost:{port}");
    assert!(s.addr.ip().is_loopback());
    assert!(ok(&["client", &target, "ping", "--count", "1"]).contains("seq=0"));
    assert_eq!(
        ok(&["client", &target, "echo", "by name"]).trim(),
        "by name"
    );
    let bench = ok(&["bench", &target, "--count", "200", "--connections", "2"]);
    assert!(bench.contains("200"), "{bench}");
    // A name whose every address refuses: one error naming them all, or the
    // single address's own error.
    let o = run(&[
        "client",
        "localhost:1",
        "--timeout",
        "2s",
        "ping",
        "--count",
        "1",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("refused"), "{err}");
    // Not a host name at all.
    let o = run(&["client", "local host:1", "ping"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a host name"));
    let o = run(&["client", "no-such-host.invalid:7077", "ping"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot resolve"));
}

/// `client data --file` streams: a 2 GiB file (sparse, so it costs no
/// disk) goes through with the client's peak RSS far below the file's
/// size (the whole file was read into memory before).
#[test]
fn data_file_is_streamed_with_bounded_memory() {
    let s = Server::start(&["--transport", "socket", "--workers", "1"]);
    let path = std::env::temp_dir().join(format!("ww-stream-{}.bin", std::process::id()));
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(2 << 30).unwrap();
    drop(f);
    let mut child = Command::new(BIN)
        .args([
            "client",
            &s.addr.to_string(),
            "--transport",
            "socket",
            "data",
        ])
        .args(["--file", path.to_str().unwrap()])
        .env("WARPWIRE_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut peak_kib = 0u64;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "2 GiB took over 120 s"
        );
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()));
        if let Some(kib) = status.ok().and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        }) {
            peak_kib = peak_kib.max(kib);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = std::fs::remove_file(&path);
    let mut out = String::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(status.success(), "{out}");
    assert!(out.starts_with("sent 2147483648 bytes of DATA"), "{out}");
    println!("peak RSS {peak_kib} KiB");
    assert!(
        peak_kib > 0 && peak_kib < 256 * 1024,
        "peak RSS {peak_kib} KiB"
    );
    assert!(s.terminate().success());
}

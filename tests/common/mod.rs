//! Helpers shared by the binary's integration tests (each test file
//! includes this module and uses what it needs).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The first line a child prints on stdout (its `listening on` line), or
/// `None` if none comes within `within`. The child must have been spawned
/// with `stdout(Stdio::piped())`; the rest of its output is drained.
pub fn first_line(child: &mut Child, within: Duration) -> Option<String> {
    first_lines(child, 1, within).map(|mut v| v.remove(0))
}

/// The first `n` lines a child prints on stdout, or `None` if they do not
/// all come within `within` (as [`first_line`]).
pub fn first_lines(child: &mut Child, n: usize, within: Duration) -> Option<Vec<String>> {
    let out = child.stdout.take().expect("stdout piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + within;
    (0..n)
        .map(|_| rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())))
        .collect::<Result<_, _>>()
        .ok()
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"))
}

/// SHA-256 of a file, as sha256sum prints it.
pub fn sha256_file(path: &std::path::Path) -> String {
    let o = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8(o.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// The release build of `warpwire`, for the tests whose bound is a
/// throughput: users run release builds, and the workspace's own crates
/// are not optimised in the test profile. scripts/test.sh builds it and
/// names it in `WARPWIRE_RELEASE_BIN`; without that these tests fail and
/// say why (never a silent pass).
pub fn release_bin() -> &'static str {
    let path = std::env::var("WARPWIRE_RELEASE_BIN").unwrap_or_else(|_| {
        panic!(
            "WARPWIRE_RELEASE_BIN is not set: this throughput test needs the release binary \
             (scripts/test.sh builds it: cargo build --release --all-features --bin warpwire)"
        )
    });
    assert!(
        std::path::Path::new(&path).is_file(),
        "WARPWIRE_RELEASE_BIN={path} is not a file"
    );
    Box::leak(path.into_boxed_str())
}

/// A file of random bytes in the temp dir for DATA transfers, removed on
/// drop.
pub struct Payload {
    /// Where it is.
    pub path: std::path::PathBuf,
    /// Its size in bytes.
    pub len: u64,
    sha256: String,
}

impl Payload {
    /// `len` bytes from /dev/urandom, named after `tag` and this process.
    pub fn random(tag: &str, len: u64) -> Self {
        let path = std::env::temp_dir().join(format!("ww-{tag}-payload-{}", std::process::id()));
        let status = Command::new("sh")
            .args([
                "-c",
                &format!("head -c {len} /dev/urandom > {}", path.display()),
            ])
            .status()
            .unwrap();
        assert!(status.success(), "cannot write {}", path.display());
        let sha256 = sha256_file(&path);
        Self { path, len, sha256 }
    }

    /// The path as the CLI takes it.
    pub fn arg(&self) -> &str {
        self.path.to_str().unwrap()
    }

    /// The server stored exactly these bytes: one session file in
    /// `data_dir` of this length with the same SHA-256.
    pub fn assert_stored_in(&self, data_dir: &std::path::Path) {
        let stored: Vec<_> = std::fs::read_dir(data_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        let got = stored
            .iter()
            .find(|f| std::fs::metadata(f).unwrap().len() == self.len)
            .unwrap_or_else(|| panic!("no {}-byte session file in {stored:?}", self.len));
        assert_eq!(sha256_file(got), self.sha256, "DATA corrupted or reordered");
    }
}

impl Drop for Payload {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A fresh directory for a server's DATA files, on tmpfs (/dev/shm) when
/// there is one: a transfer whose rate is checked should measure the
/// network path more than the disk. Removed on drop, a failed test
/// included (a gigabyte left in tmpfs is a gigabyte of memory).
pub fn data_dir(tag: &str) -> DataDir {
    let shm = std::path::Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let d = base.join(format!("ww-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    DataDir(d)
}

/// See [`data_dir`].
pub struct DataDir(std::path::PathBuf);

impl std::ops::Deref for DataDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Payload {
    /// How fast this machine writes the payload into `dir` by itself, in
    /// MB/s, with the 64 KiB writes the server's sink makes (dd): the
    /// floor of a transfer that ends in a file there.
    pub fn write_floor_mb_s(&self, dir: &std::path::Path) -> f64 {
        std::fs::create_dir_all(dir).unwrap();
        let out = dir.join("floor");
        let started = std::time::Instant::now();
        let status = Command::new("dd")
            .arg(format!("if={}", self.path.display()))
            .arg(format!("of={}", out.display()))
            .args(["bs=64k", "status=none"])
            .status()
            .unwrap();
        let took = started.elapsed().as_secs_f64();
        let _ = std::fs::remove_file(&out);
        assert!(status.success(), "dd into {} failed", dir.display());
        self.len as f64 / took / 1e6
    }
}

/// The transfer rate `client data` printed ("... in S s (R MB/s) ..."),
/// in MB/s.
pub fn data_rate(out: &str) -> f64 {
    out.split_once(" s (")
        .and_then(|(_, r)| r.split_once(" MB/s)"))
        .and_then(|(r, _)| r.parse().ok())
        .unwrap_or_else(|| panic!("no rate in {out:?}"))
}

/// A `bench --count N --json` run in which every one of the `n` requests
/// was answered and checked, nothing lost; prints how long it took and the
/// connection ramp, labelled `what`.
#[allow(dead_code)]
pub fn assert_each_answered(json: &str, n: u64, what: &str, took: std::time::Duration) {
    assert_bench_clean(json);
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(v["messages"].as_u64(), Some(n), "{json}");
    eprintln!("{what} in {took:?} (ramp {} s)", v["ramp_s"]);
}

/// Asserts that a `warpwire bench --json` report had no errors and lost nothing.
pub fn assert_bench_clean(json: &str) {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(
        (v["errors"].as_u64(), v["lost"].as_u64()),
        (Some(0), Some(0)),
        "{json}"
    );
}

/// The warpwire binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_warpwire");

/// `warpwire serve` on loopback (port 0), killed on drop.
pub struct Server {
    /// The process.
    pub child: Child,
    /// Where it listens (warpwire).
    pub addr: SocketAddr,
    /// Each `--listener`'s protocol and bound address, as printed.
    pub listeners: Vec<(String, SocketAddr)>,
}

impl Server {
    /// Starts a server with 2 workers on 127.0.0.1:0 (unless `extra` has
    /// `--listen`) and waits for its address.
    pub fn start(extra: &[&str]) -> Self {
        let listen: &[&str] = if extra.contains(&"--listen") {
            &[]
        } else {
            &["--listen", "127.0.0.1:0"]
        };
        let workers: &[&str] = if extra.contains(&"--workers") {
            &[]
        } else {
            &["--workers", "2"]
        };
        let mut c = Command::new(BIN);
        c.arg("serve").args(workers).args(listen).args(extra);
        let listeners = extra.iter().filter(|a| **a == "--listener").count();
        Self::spawn_with(c, listeners)
    }

    /// The address `--listener PROTOCOL=...` got.
    pub fn addr_of(&self, protocol: &str) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(p, _)| p == protocol)
            .unwrap_or_else(|| panic!("no {protocol} listener in {:?}", self.listeners))
            .1
    }

    /// Starts `cmd` (a `warpwire serve`, possibly behind `sh -c ... exec`)
    /// and waits for its address; the server is killed on drop, whatever
    /// the test does.
    pub fn spawn(cmd: Command) -> Self {
        Self::spawn_with(cmd, 0)
    }

    /// [`Server::spawn`] for a server with `listeners` more listeners,
    /// each printed as `PROTOCOL listening on ADDR` after the first line.
    pub fn spawn_with(mut cmd: Command, listeners: usize) -> Self {
        let mut child = cmd
            .env("WARPWIRE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = first_lines(&mut child, 1 + listeners, Duration::from_secs(10))
            .expect("server printed its addresses");
        let addr = lines[0]
            .strip_prefix("warpwire listening on ")
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line {:?}", lines[0]))
            .parse()
            .unwrap();
        let listeners = lines[1..]
            .iter()
            .map(|l| {
                let (p, a) = l
                    .split_once(" listening on ")
                    .unwrap_or_else(|| panic!("unexpected line {l:?}"));
                // `ADDR` or `ADDR with TLS`.
                let a = a.split_whitespace().next().unwrap_or(a);
                (p.to_owned(), a.parse().unwrap())
            })
            .collect();
        Self {
            child,
            addr,
            listeners,
        }
    }

    /// SIGTERM (to our own child, by pid) and the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        for _ in 0..100 {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("server did not exit within 5 s of SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `warpwire-hostile` peer (crates/testkit), built beside the warpwire
/// binary by `cargo build --workspace` (nextest builds it too).
pub fn hostile_bin() -> String {
    let p = std::path::Path::new(BIN).with_file_name("warpwire-hostile");
    assert!(
        p.exists(),
        "{} missing: build the workspace first (scripts/test.sh does)",
        p.display()
    );
    p.display().to_string()
}

/// Resident memory of a process, KiB (VmRSS).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Runs `warpwire-hostile ARGS` (bounded at 120 s) through `prefix`, e.g.
/// `["ip", "netns", "exec", NS]`, and returns its report line; panics with
/// its output when it fails.
pub fn hostile_in(prefix: &[&str], args: &[&str]) -> String {
    let bin = hostile_bin();
    let mut argv: Vec<&str> = prefix.to_vec();
    argv.extend_from_slice(&["timeout", "120", &bin]);
    argv.extend_from_slice(args);
    let o = Command::new(argv[0]).args(&argv[1..]).output().unwrap();
    assert!(
        o.status.success(),
        "warpwire-hostile {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// A `key=value` number of a hostile report.
pub fn report_field(out: &str, key: &str) -> u64 {
    out.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key} in {out}"))
        .parse()
        .unwrap()
}

/// How hard the hostile battery pushes a backend (the slow ones get less).
pub struct HostileLoad {
    /// Half-close trials per request count (1, 100, 200 x 64 KiB).
    pub trials: u32,
    /// Connections sending a header that declares 1 MiB.
    pub flood_conns: usize,
    /// Bound on the server's RSS growth meanwhile, MiB.
    pub flood_rss_mib: u64,
    /// Bound on the bystander's slowest ping meanwhile, ms.
    pub flood_ping_ms: u64,
    /// Broadcast storm: listeners, body bytes, duration ms.
    pub storm: (usize, usize, u64),
}

/// The hostile peers against a running server at `addr` (pid `server` for
/// its memory), from wherever `prefix` runs them: half-close gets every
/// reply whole, a header flood costs memory by bytes received and keeps a
/// bystander's pings quick, and a broadcast storm evicts no reader.
pub fn hostile_battery(prefix: &[&str], addr: &str, server: u32, load: &HostileLoad) {
    let trials = load.trials.to_string();
    for count in ["1", "100", "200"] {
        println!(
            "{}",
            hostile_in(prefix, &["half-close", addr, count, "65536", &trials]).trim()
        );
    }

    let before = rss_kib(server);
    let (conns, prefix_owned) = (
        load.flood_conns.to_string(),
        prefix.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    );
    let a = addr.to_owned();
    let flood = std::thread::spawn(move || {
        let p: Vec<&str> = prefix_owned.iter().map(String::as_str).collect();
        hostile_in(&p, &["header-flood", &a, &conns, "1048576", "500"])
    });
    let mut peak = before;
    while !flood.is_finished() {
        peak = peak.max(rss_kib(server));
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = flood.join().unwrap();
    let grew = peak.saturating_sub(before) / 1024;
    println!("{} ; server RSS +{grew} MiB", out.trim());
    assert!(grew < load.flood_rss_mib, "RSS grew {grew} MiB: {out}");
    assert!(
        report_field(&out, "max_us") < load.flood_ping_ms * 1000,
        "bystander pings during the flood: {out}"
    );

    let (listeners, body, ms) = load.storm;
    let out = hostile_in(
        prefix,
        &[
            "broadcast-storm",
            addr,
            &listeners.to_string(),
            &body.to_string(),
            &ms.to_string(),
        ],
    );
    println!("{}", out.trim());
    assert_eq!(
        report_field(&out, "listeners_left"),
        listeners as u64,
        "{out}"
    );
    assert!(report_field(&out, "acked") > 0, "{out}");
}

/// The binary with `args`, logging warnings only; its output.
pub fn run(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env("WARPWIRE_LOG", "warn")
        .output()
        .unwrap()
}

/// `warpwire certs` into a temporary directory, removed on drop: a
/// development CA and a server certificate for `names` (the default set
/// when empty).
pub struct DevCerts {
    /// The directory.
    pub dir: std::path::PathBuf,
    /// ca.pem, server.pem and server-key.pem in it.
    pub ca: String,
    /// The server certificate.
    pub cert: String,
    /// Its key.
    pub key: String,
    /// The server certificate's SHA-256 fingerprint (hex).
    pub fingerprint: String,
}

impl DevCerts {
    pub fn new(tag: &str, names: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("ww-certs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let d = dir.display().to_string();
        let mut args = vec!["certs", "--dir", &d];
        for n in names {
            args.extend_from_slice(&["--name", n]);
        }
        let o = Command::new(BIN).args(&args).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let out = String::from_utf8_lossy(&o.stdout);
        let fingerprint = out
            .lines()
            .find_map(|l| l.strip_prefix("server certificate: sha256:"))
            .expect("the fingerprint line")
            .to_owned();
        Self {
            ca: format!("{d}/ca.pem"),
            cert: format!("{d}/server.pem"),
            key: format!("{d}/server-key.pem"),
            dir,
            fingerprint,
        }
    }

    /// A file in the directory.
    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

impl Drop for DevCerts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `warpwire_<name>{worker="i",...} value` per worker, from a Prometheus page.
pub fn per_worker(metrics: &str, name: &str) -> Vec<u64> {
    let prefix = format!("warpwire_{name}{{worker=\"");
    let mut v: Vec<(usize, u64)> = metrics
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (worker, rest) = rest.split_once('"')?;
            let value = rest.rsplit_once(' ')?.1;
            Some((worker.parse().ok()?, value.parse().ok()?))
        })
        .collect();
    v.sort_unstable();
    v.into_iter().map(|(_, n)| n).collect()
}

/// The sum over workers of `warpwire_<name>` in a Prometheus page.
pub fn metric_sum(metrics: &str, name: &str) -> u64 {
    per_worker(metrics, name).iter().sum()
}

/// A server's metrics page at `url`, fetched with curl (run under
/// `prefix`, say `ip netns exec NS`, or none) every 100 ms for up to 5 s
/// (servers publish every 100 ms) until `warpwire_<name>` is above zero.
pub fn metrics_showing(prefix: &[&str], url: &str, name: &str) -> Option<String> {
    let argv: Vec<&str> = prefix
        .iter()
        .copied()
        .chain(["curl", "-sS", "--max-time", "5", url])
        .collect();
    (0..50).find_map(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let o = std::process::Command::new(argv[0])
            .args(&argv[1..])
            .output()
            .ok()?;
        let m = String::from_utf8(o.stdout).ok()?;
        (metric_sum(&m, name) > 0).then_some(m)
    })
}

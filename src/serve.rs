//! `warpwire serve` and `warpwire users`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use warpwire_engine::{Both, Echo, Server, ServerHandle, UserDb};
use warpwire_http::{Http, HttpConfig};
use warpwire_resp::{Resp, RespConfig};
use warpwire_transport::{Transport, TransportError};

use crate::backend::{Backend, Role, UseTransport};
use crate::cli::{ServeArgs, UsersAction, UsersArgs};
use crate::settings::{FileConfig, ServeSettings};

/// Errors reaching `main` (each printed with its cause chain).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The first of `addrs` a TCP listener can be bound to (a name may resolve
/// to addresses this machine does not have, or an IPv6 one where IPv6 is
/// off).
fn first_bindable(what: &str, hp: &crate::addr::HostPort) -> Result<SocketAddr, BoxError> {
    let addrs = hp.resolve()?;
    if let [only] = addrs.as_slice() {
        return Ok(*only);
    }
    let (a, _) = hp
        .try_each(&addrs, std::net::TcpListener::bind)
        .map_err(|e| format!("{what}: {e}"))?;
    Ok(a)
}

/// Descriptors a kernel-TCP server needs besides one per connection: a
/// listener, an epoll instance or io_uring, and a waker per worker, the metrics
/// listener and its connections (capped at 64), the DATA sink's open
/// files (64), logs and libraries, with room to accept a connection only
/// to refuse it with SERVER_BUSY.
const FD_RESERVE: u64 = 256;

/// Raises the soft limit on open files to what `max_connections` needs
/// (each kernel-TCP connection holds a descriptor). Where the hard limit is
/// lower, says so and lowers `max_connections` to fit, so connections past
/// it get SERVER_BUSY instead of failed accepts.
fn fit_fd_limit(cfg: &mut warpwire_engine::ServerConfig) {
    let need = cfg.max_connections as u64 + FD_RESERVE;
    match rlimit::increase_nofile_limit(need) {
        Ok(got) if got >= need => {
            tracing::debug!(limit = got, "open-file limit fits max_connections");
        }
        Ok(got) => {
            let fit = got.saturating_sub(FD_RESERVE).max(1) as usize;
            tracing::warn!(
                hard_limit = got,
                max_connections = cfg.max_connections,
                lowered_to = fit,
                "the open-file hard limit is too low for max_connections: lowering it \
                 (raise `ulimit -Hn` or LimitNOFILE= to serve more)"
            );
            cfg.max_connections = fit;
        }
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the open-file limit"),
    }
}

/// `serve`'s code generic over the transport: warpwire on `--listen`, and
/// beside it every other protocol a `--listener` may name.
struct ServeWith {
    server: Server,
    http: HttpConfig,
    resp: RespConfig,
    tls: Option<crate::tls::ServerSetup>,
}

impl UseTransport for ServeWith {
    type Output = ServerHandle;

    fn run<T, F>(self, factory: F) -> Result<ServerHandle, BoxError>
    where
        T: Transport + 'static,
        F: Fn(usize) -> Result<T, TransportError> + Send + Sync + 'static,
    {
        let (http, resp) = (self.http, self.resp);
        let require_auth = self.server.config().require_auth;
        let protocols = move |parts: &warpwire_engine::ServerParts| {
            let http = Http::new(http, parts.metrics.clone()).with_handlers(parts.handlers.clone());
            // Redis AUTH checks the users warpwire's AUTH does.
            let resp = Resp::new(resp, parts.users.clone(), require_auth);
            Both::new(Echo, Both::new(http, resp))
        };
        Ok(match self.tls {
            // TLS lives in the transport: the engine and the protocols
            // see plaintext on every listener.
            Some(tls) => self
                .server
                .start_with(move |i| Ok(tls.wrap(factory(i)?)), protocols)?,
            None => self.server.start_with(factory, protocols)?,
        })
    }
}

/// Runs the server until SIGINT or SIGTERM, then shuts down gracefully; a
/// second signal exits at once.
pub fn run(file: &FileConfig, a: ServeArgs) -> Result<(), BoxError> {
    let settings = ServeSettings::merge(file, &a);
    if a.print_config {
        print!("{}", settings.to_toml()?);
        return Ok(());
    }
    let bypass = &settings.bypass;
    let mut cfg = settings.server.clone();
    cfg.listen = first_bindable("--listen", &settings.listen)?;
    cfg.metrics = settings
        .metrics
        .as_ref()
        .map(|m| first_bindable("--metrics", m))
        .transpose()?;
    let target = crate::probe::Target::Listen(cfg.listen);
    let selection = crate::probe::choose(settings.choice, settings.policy, bypass, target)?;
    let backend = Backend::new(selection.kind, bypass)?;
    cfg.busy_poll = settings.busy_poll();
    if backend.facts().kernel_fds {
        fit_fd_limit(&mut cfg);
    }
    cfg.workers = backend.workers(cfg.workers);
    cfg.listen = backend.listen_addr(cfg.listen);
    for l in &mut cfg.listeners {
        l.listen = backend.listen_addr(l.listen);
    }
    tracing::info!(transport = %selection.kind, reason = %selection.reason, "transport selected");

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Second signal: exit immediately (status 1) instead of waiting.
        signal_hook::flag::register_conditional_shutdown(sig, 1, stop.clone())?;
        signal_hook::flag::register(sig, stop.clone())?;
    }

    let tls = crate::tls::ServerSetup::new(&settings.tls, &cfg)?;
    // Whether each listener, in the order the handle lists them, is TLS.
    let tls_flags: Vec<bool> = std::iter::once(settings.tls.tls_listen == Some(true))
        .chain(cfg.listeners.iter().map(|l| l.tls))
        .collect();
    let data_dir = cfg.data_dir.clone();
    let mut server = Server::new(cfg);
    if tls.as_ref().is_some_and(|t| t.shared.mutual()) {
        server.identities_from_transport();
    }
    if let Some(dir) = &data_dir {
        let sink = warpwire_engine::DirectorySink::new(dir)
            .map_err(|e| format!("--data-dir {}: {e}", dir.display()))?;
        server.data_handler(sink);
    }
    let handle = backend.run(
        Role::Server,
        ServeWith {
            server,
            http: settings.http.clone(),
            resp: settings.resp.clone(),
            tls: tls.clone(),
        },
    )?;
    let with_tls = |i: usize| match tls_flags.get(i) {
        Some(true) => " with TLS",
        _ => "",
    };
    println!(
        "warpwire listening on {}{} ({})",
        handle.local_addr(),
        with_tls(0),
        selection.kind
    );
    for (i, (protocol, addr)) in handle.listeners().iter().enumerate().skip(1) {
        println!("{protocol} listening on {addr}{}", with_tls(i));
    }
    let reload = Arc::new(AtomicBool::new(false));
    if let Some(t) = &tls {
        signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone())?;
        tracing::info!(fingerprint = %t.shared.cert().fingerprint(), mutual = t.shared.mutual(),
            "TLS certificate loaded (SIGHUP reloads it)");
    }
    if let Some(m) = handle.metrics_addr() {
        println!("metrics on http://{m}/metrics");
    }
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if reload.swap(false, Ordering::Relaxed)
            && let Some(t) = &tls
        {
            // New handshakes get the new certificate; open connections
            // keep theirs. A bad file leaves the old one in place.
            match t.shared.cert().reload() {
                Ok(()) => tracing::info!(fingerprint = %t.shared.cert().fingerprint(),
                    "SIGHUP: TLS certificate reloaded"),
                Err(e) => tracing::error!(error = %e,
                    "SIGHUP: TLS certificate not reloaded, the old one stays"),
            }
        }
    }
    tracing::info!("signal received: shutting down");
    handle.stop()?;
    tracing::info!("shutdown complete");
    Ok(())
}

/// `warpwire users add`.
pub fn users(a: UsersArgs) -> Result<(), BoxError> {
    match a.action {
        UsersAction::Add { name, users, token } => {
            let generated = token.is_none();
            let token = token.unwrap_or_else(warpwire_engine::generate_token);
            UserDb::add_to_file(&users, &name, token.as_bytes())?;
            println!("user {name} written to {}", users.display());
            if generated {
                println!("token (shown once, store it now): {token}");
            }
            Ok(())
        }
    }
}

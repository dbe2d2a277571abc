//! Application handlers: message types 0x80-0xFE, and the DATA sink.

use std::sync::Arc;

use bytes::Bytes;
use warpwire_frame::Frame;

/// A failed handler; the peer gets INTERNAL and the connection stays open.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    /// Sent to the peer in the ERROR body; keep it free of secrets.
    pub message: String,
}

impl HandlerError {
    /// A handler error with a message for the peer.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

/// What a handler knows about the connection it serves.
#[derive(Debug, Clone, Copy)]
pub struct SessionInfo<'a> {
    /// The 16-byte session id (also the `from` of relayed broadcasts).
    pub session_id: &'a [u8; 16],
    /// The authenticated user, if any.
    pub user: Option<&'a str>,
    /// The worker serving the connection.
    pub worker: usize,
}

/// Handles one application message type. Registered with
/// [`Handlers::register`] it is called on the I/O worker and must not
/// block; with [`Handlers::register_blocking`] it runs on an application
/// worker and may. The reply goes out with the same type, the RESPONSE flag
/// and the request's id; `Ok(None)` sends nothing.
pub trait AppHandler: Send + Sync + 'static {
    /// Handles a request.
    fn handle(
        &self,
        session: &SessionInfo<'_>,
        request: &Frame,
    ) -> Result<Option<Bytes>, HandlerError>;
}

impl<F> AppHandler for F
where
    F: Fn(&SessionInfo<'_>, &Frame) -> Result<Option<Bytes>, HandlerError> + Send + Sync + 'static,
{
    fn handle(
        &self,
        session: &SessionInfo<'_>,
        request: &Frame,
    ) -> Result<Option<Bytes>, HandlerError> {
        self(session, request)
    }
}

/// Receives DATA bodies in arrival order per connection. Returns how many
/// bytes it accepted (echoed in DATA_ACK).
pub trait DataHandler: Send + Sync + 'static {
    /// Takes one DATA body. The `Bytes` is a zero-copy slice of the receive
    /// buffer; keep it (cheap clone) or copy what you need.
    fn on_data(&self, session: &SessionInfo<'_>, body: &Bytes) -> Result<u64, HandlerError>;

    /// The session that sent DATA has ended (closed by either side, reset,
    /// or dropped at shutdown): release what `on_data` kept for it. Called
    /// once per session that had at least one `on_data` call, after its
    /// last `on_data` has returned.
    fn on_session_end(&self, _session: &SessionInfo<'_>) {}

    /// Whether `on_data` may block (file or network I/O): then it runs on
    /// the application workers, never on an I/O worker.
    fn blocking(&self) -> bool {
        false
    }
}

impl<T: DataHandler> DataHandler for std::sync::Arc<T> {
    fn on_data(&self, session: &SessionInfo<'_>, body: &Bytes) -> Result<u64, HandlerError> {
        (**self).on_data(session, body)
    }

    fn on_session_end(&self, session: &SessionInfo<'_>) {
        (**self).on_session_end(session)
    }

    fn blocking(&self) -> bool {
        (**self).blocking()
    }
}

/// The default sink: accepts and discards (counters still count it).
#[derive(Debug, Default, Clone, Copy)]
pub struct DiscardData;

impl DataHandler for DiscardData {
    fn on_data(&self, _: &SessionInfo<'_>, body: &Bytes) -> Result<u64, HandlerError> {
        Ok(body.len() as u64)
    }
}

/// A DATA sink that appends each session's bytes to `DIR/<session-id>.data`
/// (session id in hex), in arrival order: what was accepted is on disk.
///
/// A session's file is closed when the session ends; at most
/// `max_open` files are open at once (the least recently written is closed
/// first and reopened in append mode when its session sends again), so
/// sessions cannot exhaust the process's file descriptors.
#[derive(Debug)]
pub struct DirectorySink {
    dir: std::path::PathBuf,
    max_open: usize,
    files: std::sync::Mutex<OpenFiles>,
}

/// The open files by session, with a use stamp for closing the least
/// recently written one.
#[derive(Debug, Default)]
struct OpenFiles {
    by_session: std::collections::HashMap<[u8; 16], (std::fs::File, u64)>,
    clock: u64,
}

impl DirectorySink {
    /// Open files kept by default: far below a default `ulimit -n` of 1024,
    /// so the sink never competes with connections for descriptors.
    pub const DEFAULT_MAX_OPEN: usize = 64;

    /// A sink writing into `dir` (created if missing).
    pub fn new(dir: impl Into<std::path::PathBuf>) -> std::io::Result<Self> {
        Self::with_max_open(dir, Self::DEFAULT_MAX_OPEN)
    }

    /// A sink keeping at most `max_open` (at least 1) files open.
    pub fn with_max_open(
        dir: impl Into<std::path::PathBuf>,
        max_open: usize,
    ) -> std::io::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            dir,
            max_open: max_open.max(1),
            files: std::sync::Mutex::default(),
        })
    }

    /// The file a session's DATA goes to.
    pub fn path_of(&self, session_id: &[u8; 16]) -> std::path::PathBuf {
        self.dir.join(format!("{}.data", hex_id(session_id)))
    }

    /// Files open now.
    pub fn open_files(&self) -> usize {
        self.files.lock().map_or(0, |f| f.by_session.len())
    }
}

fn hex_id(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

impl DataHandler for DirectorySink {
    fn on_data(&self, session: &SessionInfo<'_>, body: &Bytes) -> Result<u64, HandlerError> {
        use std::io::Write;
        let store =
            |e: std::io::Error| HandlerError::new(format!("cannot store data: {}", e.kind()));
        let mut files = self
            .files
            .lock()
            .map_err(|_| HandlerError::new("data sink unavailable"))?;
        files.clock += 1;
        let now = files.clock;
        let id = *session.session_id;
        if !files.by_session.contains_key(&id) {
            if files.by_session.len() >= self.max_open {
                let oldest = files
                    .by_session
                    .iter()
                    .min_by_key(|(_, (_, used))| *used)
                    .map(|(k, _)| *k);
                if let Some(k) = oldest {
                    files.by_session.remove(&k);
                }
            }
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.path_of(&id))
                .map_err(store)?;
            files.by_session.insert(id, (f, now));
        }
        let Some((file, used)) = files.by_session.get_mut(&id) else {
            return Err(HandlerError::new("data sink unavailable"));
        };
        *used = now;
        file.write_all(body).map_err(store)?;
        Ok(body.len() as u64)
    }

    fn on_session_end(&self, session: &SessionInfo<'_>) {
        if let Ok(mut files) = self.files.lock() {
            files.by_session.remove(session.session_id);
        }
    }

    /// File writes block: the sink runs on the application workers.
    fn blocking(&self) -> bool {
        true
    }
}

/// Example application type 0x80: replies with the body's bytes reversed.
pub const REVERSE: u8 = 0x80;
/// Example application type 0x81: replies with the body ASCII-uppercased.
pub const UPPERCASE: u8 = 0x81;

/// The REVERSE example handler.
pub fn reverse(_: &SessionInfo<'_>, req: &Frame) -> Result<Option<Bytes>, HandlerError> {
    let mut v = req.body.to_vec();
    v.reverse();
    Ok(Some(v.into()))
}

/// The UPPERCASE example handler.
pub fn uppercase(_: &SessionInfo<'_>, req: &Frame) -> Result<Option<Bytes>, HandlerError> {
    Ok(Some(req.body.to_ascii_uppercase().into()))
}

/// The handler table shared by all workers.
pub struct Handlers {
    app: Vec<Option<AppEntry>>,
    data: Arc<dyn DataHandler>,
}

/// A registered application handler and where it runs.
#[derive(Clone)]
pub(crate) struct AppEntry {
    pub(crate) handler: Arc<dyn AppHandler>,
    /// Runs on the application workers.
    pub(crate) blocking: bool,
}

impl std::fmt::Debug for Handlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let types: Vec<String> = self
            .app
            .iter()
            .enumerate()
            .filter(|(_, h)| h.is_some())
            .map(|(i, _)| format!("{:#04x}", i + 0x80))
            .collect();
        f.debug_struct("Handlers").field("app", &types).finish()
    }
}

impl Default for Handlers {
    fn default() -> Self {
        Self {
            app: (0x80..=0xFE).map(|_| None).collect(),
            data: Arc::new(DiscardData),
        }
    }
}

impl Handlers {
    /// A table with the REVERSE and UPPERCASE examples registered.
    pub fn with_examples() -> Self {
        let mut h = Self::default();
        // Both codes are in range, so registration cannot fail.
        let _ = h.register(REVERSE, reverse);
        let _ = h.register(UPPERCASE, uppercase);
        h
    }

    /// Registers `handler` for `msg_type` (0x80..=0xFE), called on the I/O
    /// worker (it must not block); replaces an earlier one.
    pub fn register(
        &mut self,
        msg_type: u8,
        handler: impl AppHandler,
    ) -> Result<(), crate::EngineError> {
        self.set(msg_type, Arc::new(handler), false)
    }

    /// Registers `handler` for `msg_type` to run on the application
    /// workers (`--app-workers`): it may block. The connection's later
    /// requests wait for its reply (replies keep request order); other
    /// connections are not held up.
    pub fn register_blocking(
        &mut self,
        msg_type: u8,
        handler: impl AppHandler,
    ) -> Result<(), crate::EngineError> {
        self.set(msg_type, Arc::new(handler), true)
    }

    fn set(
        &mut self,
        msg_type: u8,
        handler: Arc<dyn AppHandler>,
        blocking: bool,
    ) -> Result<(), crate::EngineError> {
        let slot = msg_type
            .checked_sub(0x80)
            .and_then(|i| self.app.get_mut(usize::from(i)))
            .ok_or(crate::EngineError::NotApplicationType(msg_type))?;
        *slot = Some(AppEntry { handler, blocking });
        Ok(())
    }

    /// Sets the DATA sink.
    pub fn set_data_handler(&mut self, handler: impl DataHandler) {
        self.data = Arc::new(handler);
    }

    /// The handler registered for `msg_type`, and whether it may block
    /// (then it must run on the application workers, `Ctx::offload`). For
    /// gateways from other protocols (HTTP's `POST /app/{type}`).
    pub fn app_handler(&self, msg_type: u8) -> Option<(Arc<dyn AppHandler>, bool)> {
        self.app(msg_type).map(|e| (e.handler.clone(), e.blocking))
    }

    pub(crate) fn app(&self, msg_type: u8) -> Option<&AppEntry> {
        let i = usize::from(msg_type.checked_sub(0x80)?);
        self.app.get(i)?.as_ref()
    }

    pub(crate) fn data(&self) -> &Arc<dyn DataHandler> {
        &self.data
    }
}

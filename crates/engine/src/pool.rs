//! Application workers: threads that run what may block (a handler that
//! reads a disk or calls a database, the DATA directory sink), so the I/O
//! workers never do.
//!
//! ```text
//!  I/O worker i                         application workers (N threads)
//!  protocol: ctx.offload(job) ──► jobs (bounded MPMC channel) ──► run job
//!   session waits (stepping paused,                                 │
//!   later requests stay buffered)      done[i] (bounded queue) ◄────┘
//!  loop: take done[i] ◄──────────────── + wake I/O worker i
//!   protocol.complete(conn, result) ─► reply queued, session resumes
//! ```
//!
//! Order: a connection has at most one job out; its later requests wait in
//! its parser until the job is done, so replies leave in request order.
//! Memory: a job that finds the channel full waits in its I/O worker's
//! backlog, which holds at most one job per connection (the connection is
//! paused meanwhile): nothing grows without bound. A connection closed
//! while its job runs is finished (`closed`) only when the job is back, so
//! a protocol never sees a result for a connection it forgot, and a reply
//! is never sent on a reused connection id.
//!
//! A job that panics is reported to the protocol as `Err(message)`.

use std::any::Any;
use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use crossbeam_queue::ArrayQueue;
use warpwire_transport::{ConnId, Wake};

/// What a job returns to its protocol (downcast in `Protocol::complete`).
pub type Done = Box<dyn Any + Send>;

/// A job's outcome: what it returned, or the message of its panic.
pub type Outcome = Result<Done, String>;

/// Work handed to the application workers.
pub type Work = Box<dyn FnOnce() -> Done + Send>;

pub(crate) struct Job {
    worker: usize,
    conn: ConnId,
    work: Work,
}

/// The pool: its channel, threads, and one completion queue per I/O worker.
/// With no threads it runs each job at once on the submitting thread (the
/// deterministic test harness).
pub(crate) struct Pool {
    jobs: Option<Sender<Job>>,
    inline: bool,
    done: Arc<Vec<ArrayQueue<(ConnId, Outcome)>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Pool {
    /// `threads` application workers taking from a channel of `queue` jobs,
    /// for `io_workers` I/O workers woken through `wakers` (set later).
    /// Zero threads: jobs run inline when submitted.
    pub(crate) fn new(
        threads: usize,
        queue: usize,
        io_workers: usize,
        wakers: Arc<std::sync::OnceLock<Vec<Arc<dyn Wake>>>>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = crossbeam_channel::bounded::<Job>(queue.max(1));
        // Every job in the channel or running can complete at once.
        let cap = queue.max(1) + threads.max(1);
        let done: Arc<Vec<_>> = Arc::new((0..io_workers).map(|_| ArrayQueue::new(cap)).collect());
        let mut handles = Vec::with_capacity(threads);
        for t in 0..threads {
            let (rx, done, wakers): (Receiver<Job>, _, _) =
                (rx.clone(), done.clone(), wakers.clone());
            handles.push(
                std::thread::Builder::new()
                    .name(format!("warpwire-app{t}"))
                    .spawn(move || run(rx, &done, &wakers))?,
            );
        }
        Ok(Self {
            jobs: Some(tx),
            inline: threads == 0,
            done,
            threads: handles,
        })
    }

    /// Queues a job, or gives it back when the channel is full.
    pub(crate) fn submit(&self, job: Job) -> Result<(), Job> {
        if self.inline {
            let Some(q) = self.done.get(job.worker) else {
                return Err(job);
            };
            let outcome = run_one(job.work);
            // Room is certain: one job per connection, and the queue holds
            // `queue + 1` of them while the harness serves far fewer.
            let _ = q.push((job.conn, outcome));
            return Ok(());
        }
        let Some(tx) = &self.jobs else {
            return Err(job);
        };
        tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(j) | TrySendError::Disconnected(j) => j,
        })
    }

    /// The next finished job of I/O worker `worker`.
    pub(crate) fn take_done(&self, worker: usize) -> Option<(ConnId, Outcome)> {
        self.done.get(worker)?.pop()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing the channel ends the threads once it is empty.
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Job {
    pub(crate) fn new(worker: usize, conn: ConnId, work: Work) -> Self {
        Self { worker, conn, work }
    }
}

fn run(
    rx: Receiver<Job>,
    done: &[ArrayQueue<(ConnId, Outcome)>],
    wakers: &std::sync::OnceLock<Vec<Arc<dyn Wake>>>,
) {
    for job in rx {
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(job.work)).map_err(|p| {
                p.downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "handler panicked".to_owned())
            });
        let Some(q) = done.get(job.worker) else {
            continue;
        };
        // Sized for every job that can be out at once, so this push finds
        // room; should it not, the worker still learns of it below.
        let mut item = (job.conn, outcome);
        while let Err(back) = q.push(item) {
            item = back;
            std::thread::yield_now();
        }
        if let Some(w) = wakers.get().and_then(|w| w.get(job.worker)) {
            w.wake();
        }
    }
}

/// Runs a job, turning a panic into its message.
fn run_one(work: Work) -> Outcome {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).map_err(|p| {
        p.downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "handler panicked".to_owned())
    })
}

/// Jobs an I/O worker could not hand over yet (the channel was full):
/// at most one per connection.
#[derive(Default)]
pub(crate) struct Backlog {
    jobs: VecDeque<Job>,
}

impl Backlog {
    pub(crate) fn push(&mut self, job: Job) {
        self.jobs.push_back(job);
    }

    /// Hands over what the channel takes now; whether anything is left.
    pub(crate) fn drain_into(&mut self, pool: &Pool) -> bool {
        while let Some(job) = self.jobs.pop_front() {
            if let Err(job) = pool.submit(job) {
                self.jobs.push_front(job);
                return true;
            }
        }
        false
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }
}

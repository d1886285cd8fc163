//! The worker pool behind [`Threading`](super::Threading) servers: crossbeam channels, a
//! bounded queue, elastic between a minimum and a maximum number of workers.
//!
//! - The serving thread is the producer, workers are the consumers. (Threading datagram
//!   servers use the pool only for `handle_request`: `serve_forever` runs their handlers on
//!   receiver threads, see `server/receivers.rs`.)
//! - After each submit, if more jobs are queued than workers are idle and the pool is below
//!   its maximum, one worker is started (so the pool grows exactly when all are busy).
//! - A worker above the minimum that waits `keep_alive` without work exits; so does one that
//!   finishes a job, or has waited another second (`SPARE_CHECK`), while `max_spare` others
//!   already wait and nothing is queued. (Under a
//!   steady load every worker gets work now and then and none would ever wait out its
//!   keep-alive: without the spare limit a pool would keep the size of its largest burst.)
//! - With [`Overload::Block`] the serving thread stops accepting while the queue is full
//!   (crossbeam `Select::ready` on "queue has room" or "stop requested"), so the kernel's
//!   listen backlog absorbs the excess; with [`Overload::Reject`] it accepts and closes.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Select, Sender, TrySendError, bounded};
use parking_lot::{Condvar, Mutex, RwLock};

use super::{Disposition, Job, Refusal};
use crate::context::Context;
use crate::options::{Overload, PoolConfig};

#[derive(Debug)]
struct Shared {
    rx: Receiver<Job>,
    config: PoolConfig,
    /// Workers alive.
    total: AtomicUsize,
    /// Workers blocked in `recv`.
    idle: AtomicUsize,
    /// Set when the grace period is over: queued jobs are refused, not run.
    forced: AtomicBool,
    exited: Mutex<()>,
    exited_cv: Condvar,
    /// When the pool-saturated warning was last logged.
    saturated_log: Mutex<Option<Instant>>,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

/// The pool. Dropping the sender (on close) lets workers finish the queue and exit.
#[derive(Debug)]
pub struct Pool {
    tx: RwLock<Option<Sender<Job>>>,
    shared: Arc<Shared>,
}

impl Pool {
    pub(crate) fn new(config: PoolConfig) -> Pool {
        let (tx, rx) = bounded(config.queue_capacity.max(1));
        Pool {
            tx: RwLock::new(Some(tx)),
            shared: Arc::new(Shared {
                rx,
                config,
                total: AtomicUsize::new(0),
                idle: AtomicUsize::new(0),
                forced: AtomicBool::new(false),
                exited: Mutex::new(()),
                exited_cv: Condvar::new(),
                saturated_log: Mutex::new(None),
                handles: Mutex::new(Vec::new()),
            }),
        }
    }

    /// See [`Executor::wait_for_capacity`](super::Executor::wait_for_capacity).
    /// `waiting` runs every second while the queue stays full.
    pub(crate) fn wait_for_capacity(&self, stop: &Receiver<()>, waiting: &dyn Fn()) -> bool {
        if self.shared.config.overload != Overload::Block {
            return true;
        }
        let guard = self.tx.read();
        let Some(tx) = guard.as_ref() else {
            return true;
        };
        if !tx.is_full() {
            return true;
        }
        let mut sel = Select::new();
        let send = sel.send(tx);
        sel.recv(stop);
        loop {
            match sel.ready_timeout(Duration::from_secs(1)) {
                Ok(i) => return i == send,
                Err(_) => waiting(),
            }
        }
    }

    pub(crate) fn has_room(&self) -> bool {
        self.shared.config.overload != Overload::Block
            || self.tx.read().as_ref().is_none_or(|tx| !tx.is_full())
    }

    /// Queues a job, or disposes of it per the overload policy.
    pub(crate) fn submit(&self, ctx: &Context, job: Job) {
        let guard = self.tx.read();
        let Some(tx) = guard.as_ref() else {
            job(Disposition::Refuse(Refusal::Closed));
            return;
        };
        match tx.try_send(job) {
            Ok(()) => {
                if !self.maybe_grow(tx) {
                    self.note_saturation(ctx, tx);
                }
            }
            Err(TrySendError::Full(job)) => match self.shared.config.overload {
                Overload::Reject => {
                    ctx.stats.rejected.inc();
                    job(Disposition::Refuse(Refusal::Overloaded));
                }
                Overload::Block => {
                    // Only reachable from `handle_request` (the serving loop waits for room
                    // before accepting): wait for a worker to take a job.
                    match tx.send(job) {
                        Ok(()) => {
                            self.maybe_grow(tx);
                        }
                        Err(e) => (e.into_inner())(Disposition::Refuse(Refusal::Closed)),
                    }
                }
            },
            Err(TrySendError::Disconnected(job)) => job(Disposition::Refuse(Refusal::Closed)),
        }
    }

    /// A job was queued with every worker busy at the maximum: count it, and warn (at most
    /// every 10 s) — connections that wait here get no service until a worker frees.
    fn note_saturation(&self, ctx: &Context, tx: &Sender<Job>) {
        let s = &self.shared;
        if s.total.load(Ordering::SeqCst) < s.config.max_workers
            || s.idle.load(Ordering::SeqCst) > 0
            || tx.is_empty()
        {
            return;
        }
        ctx.stats.saturated.inc();
        let mut last = s.saturated_log.lock();
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            *last = Some(Instant::now());
            log::warn!(
                "socketserver: all {} workers busy, {} request(s) waiting for one: raise \
                 the pool's maximum (Builder::workers) or bound connections \
                 (Builder::max_connections)",
                s.config.max_workers,
                tx.len()
            );
        }
    }

    /// Starts a worker if every one is busy and the pool is below its maximum; `true` if
    /// it did.
    fn maybe_grow(&self, tx: &Sender<Job>) -> bool {
        let s = &self.shared;
        let queued = tx.len();
        if queued == 0 || s.idle.load(Ordering::SeqCst) >= queued {
            return false;
        }
        let mut total = s.total.load(Ordering::SeqCst);
        loop {
            if total >= s.config.max_workers {
                return false;
            }
            match s
                .total
                .compare_exchange(total, total + 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => break,
                Err(now) => total = now,
            }
        }
        let shared = self.shared.clone();
        let mut b = thread::Builder::new().name("socketserver-worker".into());
        if let Some(n) = s.config.stack_size {
            b = b.stack_size(n);
        }
        match b.spawn(move || worker(shared)) {
            Ok(h) => {
                let mut hs = s.handles.lock();
                hs.retain(|h| !h.is_finished());
                hs.push(h);
                true
            }
            Err(e) => {
                s.total.fetch_sub(1, Ordering::SeqCst);
                log::error!("socketserver: cannot start a worker thread: {e}");
                false
            }
        }
    }

    pub(crate) fn fill_stats(&self, stats: &mut crate::stats::Stats) {
        let s = &self.shared;
        stats.workers = s.total.load(Ordering::Relaxed);
        stats.idle = s.idle.load(Ordering::Relaxed);
        stats.queued = s.rx.len();
    }

    /// Closes the queue, waits for the workers to drain it until `deadline`, then forces:
    /// queued requests are closed (and logged), in-flight connections are shut down so that
    /// blocked handlers return, and the workers are joined.
    pub(crate) fn close(&self, ctx: &Arc<Context>, deadline: Instant) -> bool {
        let s = &self.shared;
        // Workers blocked in `recv` see the disconnection once the queue is empty.
        drop(self.tx.write().take());
        let clean = self.wait_exited(ctx, deadline);
        if !clean {
            s.forced.store(true, Ordering::SeqCst);
            let n = ctx.tracker.shutdown_all();
            if n > 0 {
                log::warn!("socketserver: grace period over: shut down {n} connection(s)");
            }
            // Handlers see EOF or an error now; give them a moment to unwind.
            if !self.wait_exited(ctx, Instant::now() + Duration::from_secs(2)) {
                log::error!(
                    "socketserver: {} worker(s) still busy after the forced close; detached",
                    s.total.load(Ordering::SeqCst)
                );
                return false;
            }
        }
        for h in s.handles.lock().drain(..) {
            let _ = h.join();
        }
        clean
    }

    fn wait_exited(&self, ctx: &Context, deadline: Instant) -> bool {
        let s = &self.shared;
        let mut g = s.exited.lock();
        loop {
            if s.total.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if ctx.is_forced() && !s.forced.load(Ordering::SeqCst) {
                return false;
            }
            // Re-check at least every 50 ms: a second Ctrl-C (force) does not signal this
            // condvar.
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let step = (deadline - now).min(Duration::from_millis(50));
            s.exited_cv.wait_for(&mut g, step);
            // New connections that have sent nothing become idle after a while
            // (`NEW_IDLE_AFTER`): close those too, without waiting for the grace period.
            ctx.tracker.drain_idle();
        }
    }
}

/// How often a waiting worker above the minimum looks whether it is a spare one too many
/// (at most its keep-alive).
const SPARE_CHECK: Duration = Duration::from_secs(1);

fn worker(s: Arc<Shared>) {
    let mut waited = Duration::ZERO;
    loop {
        s.idle.fetch_add(1, Ordering::SeqCst);
        let above_min = s.total.load(Ordering::SeqCst) > s.config.min_workers;
        let wait = s.config.keep_alive.saturating_sub(waited).min(SPARE_CHECK);
        let got = if above_min {
            s.rx.recv_timeout(wait)
        } else {
            s.rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
        };
        s.idle.fetch_sub(1, Ordering::SeqCst);
        match got {
            Ok(job) => {
                waited = Duration::ZERO;
                let d = if s.forced.load(Ordering::SeqCst) {
                    Disposition::Refuse(Refusal::Forced)
                } else {
                    Disposition::Run
                };
                // The pipeline catches handler panics itself; this guards the worker against
                // anything else (a panicking hook, say).
                if catch_unwind(AssertUnwindSafe(|| job(d))).is_err() {
                    log::error!("socketserver: a request job panicked outside its handler");
                }
                if s.retire_spare() {
                    notify_exit(&s);
                    return;
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                waited += wait;
                // Workers that finished a burst together may each have seen too few idle
                // ones to retire as spares: look again while waiting, not only after a job.
                if waited < s.config.keep_alive {
                    if s.retire_spare() {
                        notify_exit(&s);
                        return;
                    }
                    continue;
                }
                // Retire only if still above the minimum (another worker may have retired).
                let total = s.total.load(Ordering::SeqCst);
                if total > s.config.min_workers
                    && s.total
                        .compare_exchange(total, total - 1, Ordering::SeqCst, Ordering::SeqCst)
                        .is_ok()
                {
                    notify_exit(&s);
                    return;
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    s.total.fetch_sub(1, Ordering::SeqCst);
    notify_exit(&s);
}

impl Shared {
    /// A worker that just finished a job leaves if the pool is above its minimum, nothing
    /// is queued, and `max_spare` workers already wait.
    fn retire_spare(&self) -> bool {
        let total = self.total.load(Ordering::SeqCst);
        total > self.config.min_workers
            && self.idle.load(Ordering::SeqCst) >= self.config.max_spare
            && self.rx.is_empty()
            && self
                .total
                .compare_exchange(total, total - 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
    }
}

fn notify_exit(s: &Shared) {
    let _g = s.exited.lock();
    s.exited_cv.notify_all();
}

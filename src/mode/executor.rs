//! The runtime half of a mode: what `process_request` does with a request.
//!
//! [`Executor`] is the boundary between the serving loop and whatever runs requests. The
//! server holds it concretely; the context sees it only as a [`Runtime`] (its gauges and
//! its part of a forced close), so a new runtime is one more variant here and one more
//! `Runtime` arm, with no change to transports, requests or handlers.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[cfg(unix)]
use super::Forker;
use super::{Pool, Reactor};
use crate::context::{Context, Runtime};
use crate::stats::Stats;

/// A request waiting for a worker. `Disposition` says whether to run it or close it.
pub type Job = Box<dyn FnOnce(Disposition) + Send>;

/// What a worker does with a [`Job`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Run the handler pipeline.
    Run,
    /// Close the request without handling it, logging why.
    Refuse(Refusal),
}

/// Why an accepted request is closed unhandled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The queue was full and the overload policy is `Reject` (counted as `rejected`).
    Overloaded,
    /// The server was closed before a worker took it (counted as `dropped`).
    Closed,
    /// The grace period ended, or the close was forced (counted as `dropped`).
    Forced,
}

impl Refusal {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Refusal::Overloaded => "worker queue is full (overload policy Reject)",
            Refusal::Closed => "the server is closed",
            Refusal::Forced => "the grace period is over (forced close)",
        }
    }
}

/// The runtime half of a mode.
#[derive(Debug)]
pub enum Executor {
    /// Run on the serving thread.
    Inline,
    /// Hand to the worker pool.
    Pool(Pool),
    /// Fork a child per request.
    #[cfg(unix)]
    Fork(Forker),
    /// Park connections in a poller; run messages on its threads.
    Reactor(Reactor),
}

impl Executor {
    /// Waits until the executor can take a request (the pool's queue has room), or the loop
    /// is asked to stop (returns `false`). Never blocks in other modes.
    /// `waiting` runs every second while the pool's queue stays full.
    pub(crate) fn wait_for_capacity(&self, ctx: &Context, waiting: &dyn Fn()) -> bool {
        match self {
            Executor::Inline => true,
            Executor::Pool(p) => p.wait_for_capacity(&ctx.control.stop_rx, waiting),
            #[cfg(unix)]
            Executor::Fork(f) => f.wait_for_capacity(ctx),
            Executor::Reactor(_) => true,
        }
    }

    /// Can a request be taken without waiting (always, except a full pool under `Block`)?
    pub(crate) fn has_room(&self) -> bool {
        match self {
            Executor::Inline => true,
            Executor::Pool(p) => p.has_room(),
            #[cfg(unix)]
            Executor::Fork(_) => false, // re-check max_children before each fork
            Executor::Reactor(_) => true,
        }
    }

    /// Drains: waits for queued and in-flight requests until `deadline`, then forces what is
    /// left. Returns `true` if everything finished before the deadline.
    pub(crate) fn close(&self, ctx: &Arc<Context>, deadline: Instant) -> bool {
        match self {
            Executor::Inline => wait_idle(ctx, deadline),
            Executor::Pool(p) => p.close(ctx, deadline),
            #[cfg(unix)]
            Executor::Fork(f) => f.close(ctx, deadline),
            Executor::Reactor(r) => r.close(ctx, deadline),
        }
    }

    /// How often the serving loop must wake even when idle (forking: to reap children).
    pub(crate) fn service_interval(&self) -> Option<std::time::Duration> {
        match self {
            #[cfg(unix)]
            Executor::Fork(_) => Some(std::time::Duration::from_millis(200)),
            // The reactor's starvation tick (see `Reactor::tick`).
            Executor::Reactor(_) => Some(std::time::Duration::from_millis(5)),
            _ => None,
        }
    }

    /// Runs on every wake-up of the serving loop.
    pub(crate) fn tick(&self) {
        if let Executor::Reactor(r) = self {
            r.tick();
        }
    }
}

impl Runtime for Executor {
    fn fill_stats(&self, stats: &mut Stats) {
        match self {
            Executor::Inline => {}
            Executor::Pool(p) => p.fill_stats(stats),
            #[cfg(unix)]
            Executor::Fork(f) => stats.workers = f.count(),
            Executor::Reactor(r) => r.fill_stats(stats),
        }
    }

    fn on_shutdown(&self, ctx: &Context) {
        // Synchronous mode runs its request on the serving thread: the loop returns, and
        // `server_close` can drain, only once that request ends. So the drain's first step
        // is taken now: a connection whose handler waits for a new request is closed (its
        // read returns end of file), as `server_close` does in the other modes; one in the
        // middle of a request finishes it.
        if let Executor::Inline = self {
            let idle = ctx.tracker.drain_idle();
            if idle > 0 {
                log::info!("socketserver: shutting down: closed {idle} idle connection(s)");
            }
        }
    }

    fn on_force_close(&self, ctx: &Context) {
        // Inline mode has no pool to do it at the end of the grace period; the pool forces
        // its own connections; forking mode never tracks in the parent (the children hold
        // the connections).
        match self {
            Executor::Inline => {
                ctx.tracker.shutdown_all();
            }
            Executor::Reactor(r) => r.force(),
            _ => {}
        }
    }
}

/// Synchronous mode's drain: waits for the request running on the serving thread, then
/// forces it (`shutdown(2)`), as the pool does for its workers.
fn wait_idle(ctx: &Context, deadline: Instant) -> bool {
    let idle = |until: Instant| loop {
        if ctx.in_flight.load(Ordering::SeqCst) == 0 {
            return true;
        }
        if Instant::now() >= until || ctx.is_forced() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    if idle(deadline) {
        return true;
    }
    ctx.tracker.shutdown_all();
    idle(Instant::now() + Duration::from_secs(2));
    false
}

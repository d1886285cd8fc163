//! The server context: what requests, handlers and executors need from a running server,
//! owned by the server and handed *down* to them (the way mio hands a `Registry` to its
//! sources instead of the `Poll`), so that no layer below `server` names `server`.
//!
//! | piece | what it is | who uses it |
//! |---|---|---|
//! | [`Context::options`] | every knob | requests (timeouts, buffer sizes), executors |
//! | [`Hooks`] | `verify_request`, `handle_error`, `service_actions`, `handle_timeout` | the serving loop, [`Context::report_error`] |
//! | counters and gauges | [`Counters`], `in_flight`, `open` | every layer; read by [`ServerHandle::stats`] |
//! | [`Control`] | the shutdown signal: `serve_forever` / `shutdown` coordination | the serving loop, executors waiting for room |
//! | [`Tracker`] | in-flight connections, for the forced close and the connection deadline | stream requests register, executors force |
//! | [`Runtime`] | the executor's view: its gauges and its part of a forced close | [`ServerHandle`] |
//!
//! [`ServerHandle`] is the public face of a context: an `Arc<Context>`.

mod control;
mod handle;
mod summary;
mod tracker;

pub(crate) use control::Control;
pub use handle::{ServerHandle, StateError};
pub(crate) use summary::Event;
use summary::Summary;
pub(crate) use tracker::{Activity, NEW_IDLE_AFTER, Registration, Tracker};

use std::any::Any;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use parking_lot::Mutex;
use socket2::SockAddr;

use crate::addr::ClientAddr;
use crate::error::HandlerError;
use crate::options::Options;
use crate::stats::{Counters, Stats};

type VerifyHook = dyn Fn(&ClientAddr) -> bool + Send + Sync;
type ErrorHook = dyn Fn(&ClientAddr, &HandlerError) + Send + Sync;
type ServerHook = dyn Fn(&ServerHandle) + Send + Sync;

/// The overridable methods of Python's `BaseServer`, as closures.
#[derive(Default)]
pub(crate) struct Hooks {
    pub(crate) verify_request: Option<Box<VerifyHook>>,
    pub(crate) handle_error: Option<Box<ErrorHook>>,
    pub(crate) service_actions: Option<Box<ServerHook>>,
    pub(crate) handle_timeout: Option<Box<ServerHook>>,
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("verify_request", &self.verify_request.is_some())
            .field("handle_error", &self.handle_error.is_some())
            .field("service_actions", &self.service_actions.is_some())
            .field("handle_timeout", &self.handle_timeout.is_some())
            .finish()
    }
}

/// What the context needs from the executor that runs the server's requests (the pool,
/// the forker, the serving thread itself — and any runtime added later). The executor is
/// built by the mode layer, above this one; the server hands it down as this trait object.
pub(crate) trait Runtime: Send + Sync + fmt::Debug {
    /// Fills the executor's gauges (`workers`, `idle`, `queued`) into a snapshot.
    fn fill_stats(&self, stats: &mut Stats);
    /// A forced close was asked ([`ServerHandle::force_close`]): do at once what this
    /// executor cannot leave to the end of its own grace period.
    fn on_force_close(&self, ctx: &Context) {
        let _ = ctx;
    }
    /// A shutdown was asked while the loop serves, after its stop flag was set: do at once
    /// what this executor cannot leave to `server_close`.
    fn on_shutdown(&self, ctx: &Context) {
        let _ = ctx;
    }
}

/// Everything a running server shares with its requests, handlers, executors and handles.
/// Each field belongs to this layer; the listening socket, the executor itself and the
/// serving loop's threads stay with the server.
#[derive(Debug)]
pub struct Context {
    pub(crate) options: Options,
    pub(crate) hooks: Hooks,
    pub(crate) stats: Counters,
    /// The shutdown signal.
    pub(crate) control: Control,
    pub(crate) tracker: Tracker,
    /// The address to bind (before `server_bind`), then the bound one (`getsockname`).
    pub(crate) address: Mutex<SockAddr>,
    /// IP transport (TCP options apply to accepted sockets).
    pub(crate) inet: bool,
    /// Set by a forced close (second Ctrl-C, `ServerHandle::force_close`).
    pub(crate) forced: AtomicBool,
    /// Requests between `open` and `shutdown_request`, in every mode.
    pub(crate) in_flight: AtomicUsize,
    /// Stream connections accepted and not yet closed (queued or running).
    pub(crate) open: AtomicUsize,
    /// Per-kind line budgets of the per-connection log lines.
    pub(crate) summary: Summary,
    pub(crate) state: Option<Arc<dyn Any + Send + Sync>>,
    /// The type name of `state`, for [`StateError`](crate::StateError).
    pub(crate) state_type: &'static str,
    /// The executor's view.
    runtime: Arc<dyn Runtime>,
}

impl Context {
    /// A context for a server about to bind `address`.
    pub(crate) fn new(
        options: Options,
        hooks: Hooks,
        state: Option<(Arc<dyn Any + Send + Sync>, &'static str)>,
        address: SockAddr,
        runtime: Arc<dyn Runtime>,
    ) -> std::io::Result<Context> {
        let inet = address.domain() != socket2::Domain::UNIX;
        Ok(Context {
            tracker: Tracker::new(options.connection_deadline),
            options,
            hooks,
            stats: Counters::default(),
            control: Control::new()?,
            address: Mutex::new(address),
            inet,
            forced: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            summary: Summary::default(),
            state_type: state.as_ref().map_or("", |s| s.1),
            state: state.map(|s| s.0),
            runtime,
        })
    }

    /// Has a forced close been asked?
    pub(crate) fn is_forced(&self) -> bool {
        self.forced.load(Ordering::SeqCst)
    }

    /// Python's `handle_error`: the hook if set, else one log line — ERROR for errors and
    /// panics, INFO for timeouts and peers gone. Timeouts and peers gone (and, once the
    /// drain has started, errors and panics) get at most one line a second per kind; the
    /// lines left out are counted on the next one and in the close's summary.
    pub(crate) fn report_error(&self, addr: &ClientAddr, err: &HandlerError) {
        let kind = Event::of(err);
        match kind {
            Event::Panic => self.stats.panics.inc(),
            Event::Timeout => self.stats.timeouts.inc(),
            Event::Disconnect => self.stats.disconnects.inc(),
            Event::Tls => self.stats.tls_failures.inc(),
            _ => self.stats.errors.inc(),
        }
        match &self.hooks.handle_error {
            Some(hook) => {
                if catch_unwind(AssertUnwindSafe(|| hook(addr, err))).is_err() {
                    log::error!("socketserver: the handle_error hook panicked");
                }
            }
            #[cfg(unix)]
            None if crate::sys::in_forked_child() => crate::sys::raw_stderr_line(&format!(
                "socketserver: exception occurred during processing of request from {addr}: {err}"
            )),
            None => {
                // Errors and panics are each worth a line while serving; from the drain on
                // they are mostly the close's own doing, and summarised like the rest.
                let summarised =
                    !matches!(kind, Event::Error | Event::Panic) || self.tracker.is_draining();
                let skipped = if summarised {
                    match self.summary.admit(kind) {
                        Some(skipped) => skipped,
                        None => return,
                    }
                } else {
                    summary::Skipped::NONE
                };
                match kind {
                    Event::Timeout | Event::Disconnect => log::log!(
                        kind.level(),
                        "socketserver: request from {addr} ended: {err}{skipped}"
                    ),
                    Event::Tls => log::log!(
                        kind.level(),
                        "socketserver: closed the connection from {addr}: {err}{skipped}"
                    ),
                    _ => log::log!(
                        kind.level(),
                        "socketserver: exception occurred during processing of request from \
                         {addr}: {err}{skipped}"
                    ),
                }
            }
        }
    }

    /// Is the `max_connections` limit reached?
    pub(crate) fn at_connection_limit(&self) -> bool {
        self.options
            .max_connections
            .is_some_and(|max| self.open.load(Ordering::SeqCst) >= max)
    }

    /// A connection counted in `open` has closed; wakes a loop waiting at the limit.
    pub(crate) fn release_connection(&self) {
        let before = self.open.fetch_sub(1, Ordering::SeqCst);
        if self.options.max_connections == Some(before) {
            self.control.waker.wake();
        }
    }

    /// Logs a refused connection at most once a second.
    pub(crate) fn log_rejected(&self, addr: &ClientAddr, why: &str) {
        if let Some(skipped) = self.summary.admit(Event::Rejected) {
            log::warn!(
                "socketserver: closed the connection from {addr} unhandled: {why} \
                 ({} rejected so far){skipped}",
                self.stats.rejected.get()
            );
        }
    }

    /// Python's `verify_request` (the hook, if set) for `addr`: `false` refuses it
    /// (counted in `refused`). A panicking hook refuses.
    pub(crate) fn verify(&self, addr: &ClientAddr) -> bool {
        let Some(verify) = &self.hooks.verify_request else {
            return true;
        };
        let ok = catch_unwind(AssertUnwindSafe(|| verify(addr))).unwrap_or_else(|_| {
            log::error!("socketserver: the verify_request hook panicked; refusing {addr}");
            false
        });
        if !ok {
            self.stats.refused.inc();
        }
        ok
    }

    /// A connection closed over its PROXY protocol header (missing, malformed, too long,
    /// late, or from an untrusted peer): counted in `proxy_refused`, and one WARN line a
    /// second for all of them together.
    pub(crate) fn proxy_failed(&self, peer: &ClientAddr, err: &std::io::Error) {
        self.stats.proxy_refused.inc();
        // A forked child takes no lock and has no logger: one raw line (and its count
        // stays in the child).
        #[cfg(unix)]
        if crate::sys::in_forked_child() {
            crate::sys::raw_stderr_line(&format!(
                "socketserver: closed the connection from {peer}: {err}"
            ));
            return;
        }
        if let Some(skipped) = self.summary.admit(Event::Proxy) {
            log::warn!(
                "socketserver: closed the connection from {peer}: {err} ({} refused so \
                 far){skipped}",
                self.stats.proxy_refused.get()
            );
        }
    }

    /// Logs a request closed unhandled by the drain, at most once a second.
    pub(crate) fn log_dropped(&self, addr: &ClientAddr, why: &str) {
        if let Some(skipped) = self.summary.admit(Event::Dropped) {
            log::warn!(
                "socketserver: closed the request from {addr} unhandled: {why} \
                 ({} dropped so far){skipped}",
                self.stats.dropped.get()
            );
        }
    }

    /// The close's summary: if per-connection lines were left out, one line with the
    /// totals.
    pub(crate) fn log_summary(&self) {
        if let Some(left_out) = self.summary.left_out() {
            log::info!(
                "socketserver: closed; log lines left out (at most one a second per kind): \
                 {left_out}; totals: {}",
                self.snapshot()
            );
        }
    }

    /// A snapshot of the counters and gauges.
    pub(crate) fn snapshot(&self) -> Stats {
        let mut s = self.stats.snapshot();
        s.active = self.in_flight.load(Ordering::Relaxed);
        s.open = self.open.load(Ordering::Relaxed);
        s.deadline_expired = self.tracker.expired();
        self.runtime.fill_stats(&mut s);
        s
    }

    /// `shutdown()` (waiting for the loop to return if `wait`): the stop flag, then what
    /// the executor does at once ([`Runtime::on_shutdown`]).
    pub(crate) fn shutdown(&self, wait: bool) {
        if self.control.is_serving() {
            self.control.shutdown(false);
            self.runtime.on_shutdown(self);
        }
        self.control.shutdown(wait);
    }

    /// Marks the server as forced and lets the executor act on it at once.
    pub(crate) fn force_close(&self) {
        self.forced.store(true, Ordering::SeqCst);
        self.control.shutdown(false);
        self.runtime.on_force_close(self);
    }
}

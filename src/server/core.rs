//! The state a server shares with its workers and handles.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use socket2::{SockAddr, Socket};

use super::control::Control;
use super::tracker::Tracker;
use crate::addr::ClientAddr;
use crate::handler::HandlerError;
use crate::mode::Executor;
use crate::options::Options;
use crate::server::ServerHandle;
use crate::stats::Counters;

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

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("verify_request", &self.verify_request.is_some())
            .field("handle_error", &self.handle_error.is_some())
            .field("service_actions", &self.service_actions.is_some())
            .field("handle_timeout", &self.handle_timeout.is_some())
            .finish()
    }
}

/// Everything a server shares with its workers, its handles and its handlers.
#[derive(Debug)]
pub struct Core {
    pub(crate) options: Options,
    pub(crate) hooks: Hooks,
    pub(crate) stats: Counters,
    pub(crate) control: Control,
    pub(crate) tracker: Tracker,
    pub(crate) executor: Executor,
    /// The listening (stream) or receiving (datagram) socket; `None` once closed.
    pub(crate) socket: RwLock<Option<Arc<Socket>>>,
    /// The address to bind (before `server_bind`), then the bound one (`getsockname`).
    pub(crate) address: Mutex<SockAddr>,
    pub(crate) bound: AtomicBool,
    pub(crate) activated: AtomicBool,
    pub(crate) closed: AtomicBool,
    /// Set by a forced close (second Ctrl-C, `ServerHandle::force_close`).
    pub(crate) forced: AtomicBool,
    /// IP transport (TCP options apply to accepted sockets).
    pub(crate) inet: bool,
    /// Requests between `open` and `shutdown_request`, in every mode.
    pub(crate) in_flight: AtomicUsize,
    /// Stream connections accepted and not yet closed (queued or running).
    pub(crate) open: AtomicUsize,
    /// When the last "connection refused: limit" line was logged.
    pub(crate) reject_log: Mutex<Option<Instant>>,
    pub(crate) state: Option<Arc<dyn Any + Send + Sync>>,
    /// The Unix socket file to remove on close.
    pub(crate) socket_file: Mutex<Option<crate::transport::SocketFile>>,
    /// Datagram receiver threads (threading mode), joined by `server_close`.
    pub(crate) receivers: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Core {
    /// Python's `handle_error`: the hook if set, else one `log::error!` line.
    pub(crate) fn report_error(&self, addr: &ClientAddr, err: &HandlerError) {
        match err {
            HandlerError::Panic(_) => self.stats.panics.inc(),
            _ => self.stats.errors.inc(),
        }
        match &self.hooks.handle_error {
            Some(hook) => {
                if catch_unwind(AssertUnwindSafe(|| hook(addr, err))).is_err() {
                    log::error!("socketserver: the handle_error hook panicked");
                }
            }
            #[cfg(unix)]
            None if crate::mode::in_forked_child() => crate::mode::raw_stderr_line(&format!(
                "socketserver: exception occurred during processing of request from {addr}: {err}"
            )),
            None => log::error!(
                "socketserver: exception occurred during processing of request from {addr}: {err}"
            ),
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
        let mut last = self.reject_log.lock();
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            *last = Some(Instant::now());
            log::warn!(
                "socketserver: closed the connection from {addr} unhandled: {why} \
                 ({} rejected so far)",
                self.stats.rejected.get()
            );
        }
    }

    /// The socket, if the server is not closed.
    pub(crate) fn socket(&self) -> Option<Arc<Socket>> {
        self.socket.read().clone()
    }

    /// Synchronous mode's drain: waits for the request running on the serving thread, then
    /// forces it (`shutdown(2)`), as the pool does for its workers.
    pub(crate) fn wait_idle(&self, deadline: Instant) -> bool {
        let idle = |until: Instant| loop {
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if Instant::now() >= until || self.forced.load(Ordering::SeqCst) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        if idle(deadline) {
            return true;
        }
        self.tracker.shutdown_all();
        idle(Instant::now() + Duration::from_secs(2));
        false
    }
}

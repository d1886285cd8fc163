//! [`ServerHandle`]: the `Clone + Send + Sync` view of a server that handlers, other
//! threads and signal handlers use.

use std::sync::Arc;

use super::Context;
use crate::addr::ClientAddr;
use crate::stats::Stats;

/// A cheap, clonable handle to a running server (Python's `self.server` inside a handler).
///
/// Use it to stop the server from anywhere — another thread, a signal handler, or a handler
/// of this very server — to read its statistics, or to reach the shared state given to
/// [`Builder::state`](crate::Builder::state).
#[derive(Debug, Clone)]
pub struct ServerHandle(pub(crate) Arc<Context>);

impl ServerHandle {
    pub(crate) fn new(ctx: Arc<Context>) -> ServerHandle {
        ServerHandle(ctx)
    }

    /// Python's `shutdown()`: stops `serve_forever` and waits until it has returned.
    ///
    /// Unlike Python's it wakes the loop at once (no 0.5 s poll), never deadlocks — called
    /// from a handler of a synchronous server (the serving thread itself) it only asks and
    /// returns; the loop stops after that request — is idempotent, and leaves no stale state:
    /// `serve_forever` may be called again. Called before `serve_forever` has started, it
    /// makes that first loop return at once.
    ///
    /// Requests already accepted are not abandoned: queued and running requests keep being
    /// served; [`Server::server_close`](crate::Server::server_close) drains them.
    pub fn shutdown(&self) {
        self.0.control.shutdown(true);
    }

    /// Like [`shutdown`](Self::shutdown) but returns without waiting for the loop to exit.
    pub fn request_shutdown(&self) {
        self.0.control.shutdown(false);
    }

    /// Ends the drain now: stops the loop and marks the server as forced, so that a running
    /// or later [`server_close`](crate::Server::server_close) skips the rest of its grace
    /// period, shuts down in-flight connections and closes queued ones (each logged). This
    /// is what a second Ctrl-C does.
    pub fn force_close(&self) {
        self.0.force_close();
    }

    /// `true` once the server drains: [`Server::server_close`](crate::Server::server_close)
    /// (or `Drop`, or the Ctrl-C handler's close) has started. A handler can end its
    /// keep-alive loop after the current request; in classic modes a read that waits for a
    /// new request returns end of file from then on anyway.
    pub fn is_draining(&self) -> bool {
        self.0.tracker.is_draining()
    }

    /// `true` while `serve_forever` runs.
    pub fn is_serving(&self) -> bool {
        self.0.control.is_serving()
    }

    /// A snapshot of the server's counters and gauges.
    pub fn stats(&self) -> Stats {
        self.0.snapshot()
    }

    /// The address the server is bound to (after `server_bind`; port 0 resolved).
    pub fn server_address(&self) -> ClientAddr {
        ClientAddr::from_sockaddr(&self.0.address.lock())
    }

    /// The shared state given to [`Builder::state`](crate::Builder::state), if it has type
    /// `T`.
    pub fn state<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.0.state.as_ref()?.downcast_ref::<T>()
    }
}

//! [`ServerHandle`]: the `Clone + Send + Sync` view of a server that handlers, other
//! threads and signal handlers use.

use std::sync::Arc;

use super::Context;
use crate::addr::ClientAddr;
use crate::stats::Stats;

/// [`ServerHandle::state_arc`] found no state of the type asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateError {
    wanted: &'static str,
    stored: Option<&'static str>,
}

impl StateError {
    /// The type asked for.
    pub fn wanted(&self) -> &'static str {
        self.wanted
    }

    /// The type given to [`Builder::state`](crate::Builder::state), if any.
    pub fn stored(&self) -> Option<&'static str> {
        self.stored
    }
}

impl std::fmt::Display for StateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.stored {
            Some(stored) => write!(
                f,
                "the server's state is `{stored}`, not `{}` (Builder::state)",
                self.wanted
            ),
            None => write!(
                f,
                "the server has no state (`{}` asked for; set it with Builder::state)",
                self.wanted
            ),
        }
    }
}

impl std::error::Error for StateError {}

impl From<StateError> for std::io::Error {
    fn from(e: StateError) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, e)
    }
}

/// A cheap, clonable handle to a running server (Python's `self.server` inside a handler).
///
/// Use it to stop the server from anywhere — another thread, a signal handler, or a handler
/// of this very server — to read its statistics, or to reach the shared state given to
/// [`Builder::state`](crate::Builder::state).
#[derive(Debug, Clone)]
pub struct ServerHandle(pub(crate) Arc<Context>);

impl ServerHandle {
    /// Replaces the TLS configuration (a renewed certificate and key, say) for the
    /// connections accepted from now on; connections already open keep the one their
    /// handshake used. Feature `tls`. In a [`Prefork`](crate::prefork::Prefork) pool each
    /// worker process has its own server: call it in each.
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidInput`](std::io::ErrorKind::InvalidInput) if the server was
    /// built without TLS ([`Builder::tls`](crate::Builder::tls)).
    #[cfg(feature = "tls")]
    pub fn set_tls_config(&self, config: Arc<rustls::ServerConfig>) -> std::io::Result<()> {
        match &self.0.options.tls {
            Some(slot) => {
                slot.set(config);
                Ok(())
            }
            None => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "set_tls_config: the server was built without TLS (Builder::tls)",
            )),
        }
    }

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
    /// One bound (datagram servers on Linux): under load, a loop that has just received
    /// waits for the next datagram in `recvmmsg(2)` itself, with a 2 ms `SO_RCVTIMEO` that
    /// the kernel rounds up to its ticks. A shutdown asked in that window takes effect when
    /// the wait ends: within about 8 ms at `HZ=250` (measured median 7.6 ms, worst 13 ms
    /// for `ThreadingUdpServer`), or at once if a datagram arrives first. An idle datagram
    /// server, or one that has received nothing yet, stops at once.
    ///
    /// Requests already accepted are not abandoned: queued and running requests keep being
    /// served; [`Server::server_close`](crate::Server::server_close) drains them. A
    /// synchronous stream server, whose loop can return only once the request on its
    /// thread ends, closes that connection now if its handler waits for a new request
    /// (as `server_close` closes idle keep-alive connections); one in the middle of a
    /// request finishes it.
    pub fn shutdown(&self) {
        self.0.shutdown(true);
    }

    /// Like [`shutdown`](Self::shutdown) but returns without waiting for the loop to exit.
    pub fn request_shutdown(&self) {
        self.0.shutdown(false);
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
    /// `T`: a borrow of this handle (and so of the request it came from). In a handler
    /// that goes on to use `rfile` or `wfile`, take [`state_arc`](Self::state_arc).
    pub fn state<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.0.state.as_ref()?.downcast_ref::<T>()
    }

    /// The shared state given to [`Builder::state`](crate::Builder::state), as an owned
    /// `Arc<T>`: it borrows nothing, so the request's `rfile` and `wfile` stay usable
    /// beside it. A missing state or another type is a [`StateError`] naming both types;
    /// `?` turns it into an `io::Error` (`InvalidInput`) in a handler. One `Arc` clone.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use std::io::{self, BufRead, Write};
    /// use std::sync::Mutex;
    /// use socketserver::{StreamRequest, ThreadingTcpServer};
    ///
    /// #[derive(Default)]
    /// struct KvStore(Mutex<HashMap<String, String>>);
    ///
    /// /// `SET key value` / `GET key`, one per line.
    /// fn kv(req: &mut StreamRequest) -> io::Result<()> {
    ///     let store = req.server().state_arc::<KvStore>()?; // owned: `req` is free again
    ///     let mut line = String::new();
    ///     while req.rfile.read_line(&mut line)? > 0 {
    ///         let mut words = line.split_whitespace();
    ///         match (words.next(), words.next(), words.next()) {
    ///             (Some("SET"), Some(k), Some(v)) => {
    ///                 store.0.lock().unwrap().insert(k.into(), v.into());
    ///                 writeln!(req.wfile, "OK")?;
    ///             }
    ///             (Some("GET"), Some(k), None) => match store.0.lock().unwrap().get(k) {
    ///                 Some(v) => writeln!(req.wfile, "{v}")?,
    ///                 None => writeln!(req.wfile, "NOT FOUND")?,
    ///             },
    ///             _ => writeln!(req.wfile, "ERROR usage: SET key value | GET key")?,
    ///         }
    ///         line.clear();
    ///     }
    ///     Ok(())
    /// }
    ///
    /// let server = ThreadingTcpServer::builder()
    ///     .state(KvStore::default())
    ///     .bind("127.0.0.1:0", kv)?;
    /// # drop(server);
    /// # Ok::<(), io::Error>(())
    /// ```
    ///
    /// In [`Forking`](crate::Forking) mode each child has its own copy of the state.
    pub fn state_arc<T: Send + Sync + 'static>(&self) -> Result<Arc<T>, StateError> {
        let err = |stored| StateError {
            wanted: std::any::type_name::<T>(),
            stored,
        };
        let state = self.0.state.clone().ok_or(err(None))?;
        state
            .downcast::<T>()
            .map_err(|_| err(Some(self.0.state_type)))
    }
}

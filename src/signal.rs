//! Ctrl-C and SIGTERM → graceful shutdown (cargo feature `ctrlc`, opt-in).

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::ServerHandle;
use crate::prefork::PreforkHandle;

/// Something [`shutdown_on_ctrl_c`] can stop: a [`ServerHandle`] or a [`PreforkHandle`].
pub trait Stoppable: Send + Sync + 'static {
    /// Begin a graceful shutdown (first signal).
    fn request_shutdown(&self);
    /// End the grace period now (second signal).
    fn force_close(&self);
}

impl Stoppable for ServerHandle {
    fn request_shutdown(&self) {
        ServerHandle::request_shutdown(self);
    }
    fn force_close(&self) {
        ServerHandle::force_close(self);
    }
}

impl Stoppable for PreforkHandle {
    fn request_shutdown(&self) {
        self.shutdown();
    }
    fn force_close(&self) {
        PreforkHandle::force_close(self);
    }
}

/// Wires SIGINT, SIGTERM and SIGHUP to a graceful shutdown of `servers`; a second signal
/// forces the close (feature `ctrlc`).
///
/// The library never installs a signal handler by itself; call
/// [`shutdown_on_ctrl_c`] once in `main` to opt in:
///
/// ```no_run
/// # use socketserver::{StreamRequest, ThreadingTcpServer};
/// let server = ThreadingTcpServer::bind("127.0.0.1:9000", |req: &mut StreamRequest| {
///     std::io::copy(&mut req.rfile, &mut req.wfile).map(drop)
/// })?;
/// socketserver::shutdown_on_ctrl_c([server.handle()]).expect("signal handler");
/// server.serve_forever()?;   // returns after the first Ctrl-C / SIGTERM
/// server.server_close();     // drains in-flight requests (grace period), then returns
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// The first SIGINT, SIGTERM or SIGHUP stops the serving loops
/// ([`ServerHandle::request_shutdown`]); requests already accepted are still served by
/// `server_close`. A second signal forces: [`ServerHandle::force_close`] ends the grace period at once. The
/// process then leaves `main` normally and exits with status 0.
///
/// It uses the `ctrlc` crate, which runs the closure on its own thread (not in signal
/// context) and allows one handler per process: a second call returns
/// `ctrlc::Error::MultipleHandlers`.
pub fn shutdown_on_ctrl_c<S: Stoppable>(
    servers: impl IntoIterator<Item = S>,
) -> Result<(), ctrlc::Error> {
    shutdown_on_ctrl_c_with(servers, |_| {})
}

/// [`shutdown_on_ctrl_c`] with a callback of your own, for the things a program does on
/// Ctrl-C besides stopping its servers (a flag, a message, flushing a journal) — the
/// `ctrlc` crate allows one handler per process, so this is the way to have both.
///
/// `on_signal(n)` runs on the `ctrlc` thread for the `n`-th signal (1: the drain has just
/// been asked, 2: the close has just been forced, then 3, 4…), after the servers were told.
/// A panic in it is caught and logged; later signals still work.
///
/// ```no_run
/// # use socketserver::{StreamRequest, ThreadingTcpServer};
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use std::sync::Arc;
///
/// let server = ThreadingTcpServer::bind("127.0.0.1:9000", |req: &mut StreamRequest| {
///     std::io::copy(&mut req.rfile, &mut req.wfile).map(drop)
/// })?;
/// let stopping = Arc::new(AtomicBool::new(false));
/// let flag = stopping.clone();
/// socketserver::shutdown_on_ctrl_c_with([server.handle()], move |n| {
///     flag.store(true, Ordering::SeqCst);
///     eprintln!("signal {n}: stopping");
/// })
/// .expect("signal handler");
/// server.serve_forever()?;
/// server.server_close();
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
/// As [`shutdown_on_ctrl_c`]: `ctrlc::Error::MultipleHandlers` if a handler is already set.
pub fn shutdown_on_ctrl_c_with<S: Stoppable>(
    servers: impl IntoIterator<Item = S>,
    on_signal: impl Fn(usize) + Send + 'static,
) -> Result<(), ctrlc::Error> {
    let servers: Vec<S> = servers.into_iter().collect();
    let count = AtomicUsize::new(0);
    ctrlc::set_handler(move || {
        let n = count.fetch_add(1, Ordering::SeqCst);
        stop(&servers, n);
        let callback = std::panic::AssertUnwindSafe(|| on_signal(n + 1));
        if std::panic::catch_unwind(callback).is_err() {
            log::error!("socketserver: the Ctrl-C callback panicked");
        }
    })
}

/// What the `n`-th signal (from 0) does to the servers.
fn stop<S: Stoppable>(servers: &[S], n: usize) {
    if n == 0 {
        log::warn!("socketserver: signal received: shutting down (again to force)");
        for s in servers {
            s.request_shutdown();
        }
    } else {
        log::warn!("socketserver: second signal: closing in-flight connections now");
        for s in servers {
            s.force_close();
        }
    }
}

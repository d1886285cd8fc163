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
    let servers: Vec<S> = servers.into_iter().collect();
    let count = AtomicUsize::new(0);
    ctrlc::set_handler(move || {
        let n = count.fetch_add(1, Ordering::SeqCst);
        if n == 0 {
            log::warn!("socketserver: signal received: shutting down (again to force)");
            for s in &servers {
                s.request_shutdown();
            }
        } else {
            log::warn!("socketserver: second signal: closing in-flight connections now");
            for s in &servers {
                s.force_close();
            }
        }
    })
}

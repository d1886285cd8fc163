//! The registry of in-flight stream connections, so that a close past its grace period can
//! `shutdown(2)` them (releasing handlers blocked in `read`), and so that a connection
//! deadline (slowloris defence) can be enforced by a watchdog thread.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded};
use parking_lot::Mutex;

#[derive(Debug)]
struct Entry {
    fd: RawFd,
    deadline: Option<Instant>,
}

#[derive(Debug)]
struct Inner {
    next: AtomicU64,
    live: Mutex<HashMap<u64, Entry>>,
    /// Connections shut down by the deadline watchdog.
    expired: AtomicU64,
    /// The connection deadline, if any.
    deadline: Option<Duration>,
    /// Dropping this (with the tracker) stops the watchdog.
    _stop: Option<Sender<()>>,
}

/// In-flight connections. A connection unregisters (under the lock) before its descriptor
/// is closed, and every `shutdown(2)` from here holds the same lock, so a forced close
/// never hits a recycled descriptor number.
#[derive(Debug, Clone)]
pub(crate) struct Tracker(Arc<Inner>);

/// A registered connection; dropping it unregisters.
#[derive(Debug)]
pub(crate) struct Registration {
    tracker: Tracker,
    id: u64,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker::new(None)
    }
}

impl Tracker {
    /// A tracker; with a `deadline`, a watchdog thread shuts down connections older than it.
    pub(crate) fn new(deadline: Option<Duration>) -> Tracker {
        let (stop, stopped) = match deadline {
            Some(_) => {
                let (tx, rx) = bounded::<()>(0);
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let inner = Arc::new(Inner {
            next: AtomicU64::new(0),
            live: Mutex::new(HashMap::new()),
            expired: AtomicU64::new(0),
            deadline,
            _stop: stop,
        });
        if let (Some(d), Some(rx)) = (deadline, stopped) {
            let weak = Arc::downgrade(&inner);
            let spawned = std::thread::Builder::new()
                .name("socketserver-deadline".into())
                .spawn(move || watchdog(weak, rx, d));
            if let Err(e) = spawned {
                log::error!("socketserver: cannot start the deadline watchdog: {e}");
            }
        }
        Tracker(inner)
    }

    pub(crate) fn register(&self, fd: RawFd) -> Registration {
        let id = self.0.next.fetch_add(1, Ordering::Relaxed);
        let deadline = self.0.deadline.map(|d| Instant::now() + d);
        self.0.live.lock().insert(id, Entry { fd, deadline });
        Registration {
            tracker: self.clone(),
            id,
        }
    }

    pub(crate) fn expired(&self) -> u64 {
        self.0.expired.load(Ordering::Relaxed)
    }

    /// `shutdown(SHUT_RDWR)` on every in-flight connection: blocked reads return EOF,
    /// blocked writes fail, the peers see the connection end. Returns how many.
    pub(crate) fn shutdown_all(&self) -> usize {
        let live = self.0.live.lock();
        for e in live.values() {
            crate::sys::shutdown_fd(e.fd);
        }
        live.len()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.tracker.0.live.lock().remove(&self.id);
    }
}

/// Shuts down connections past their deadline, checking every quarter of the deadline
/// (10 ms to 1 s). Exits when the tracker is dropped.
fn watchdog(inner: Weak<Inner>, stopped: Receiver<()>, deadline: Duration) {
    let tick = (deadline / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    loop {
        // Returns Err(Disconnected) once the tracker (and its sender) is gone.
        if let Err(crossbeam_channel::RecvTimeoutError::Disconnected) = stopped.recv_timeout(tick) {
            return;
        }
        let Some(inner) = inner.upgrade() else { return };
        let now = Instant::now();
        let mut n = 0;
        for e in inner.live.lock().values_mut() {
            if e.deadline.is_some_and(|d| d <= now) {
                crate::sys::shutdown_fd(e.fd);
                e.deadline = None;
                n += 1;
            }
        }
        if n > 0 {
            inner.expired.fetch_add(n, Ordering::Relaxed);
            log::warn!(
                "socketserver: shut down {n} connection(s) open longer than the \
                 connection deadline ({deadline:?})"
            );
        }
    }
}

//! The registry of in-flight stream connections, so that a close past its grace period can
//! `shutdown(2)` them (releasing handlers blocked in `read`), so that a connection
//! deadline (slowloris defence) can be enforced by a watchdog thread, and so that the
//! drain closes at once the connections whose handler waits for a new request
//! ([`Activity`], Go's `StateIdle`).

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded};
use parking_lot::Mutex;

#[derive(Debug)]
struct Entry {
    fd: RawFd,
    deadline: Option<Instant>,
    activity: Arc<Activity>,
}

/// Where a connection's handler is in its conversation, as its reads and writes show it.
/// A read of the socket that starts with nothing buffered waits for a *new* request — the
/// connection is idle, Go's `StateIdle` — when the handler wrote a reply (or called
/// [`StreamRequest::mark_idle`](crate::StreamRequest::mark_idle)) since the last bytes
/// arrived, or when nothing at all has arrived for [`NEW_IDLE_AFTER`] since the accept (Go
/// gives new connections the same 5 s). The drain closes idle connections at once instead
/// of waiting for the grace period.
#[derive(Debug)]
pub(crate) struct Activity {
    state: AtomicU8,
    /// When the connection was accepted.
    born: Instant,
    /// The tracker's drain flag.
    draining: Arc<AtomicBool>,
}

/// The handler replied since bytes last arrived.
const BOUNDARY: u8 = 1;
/// Blocked in a read of the socket.
const WAITING: u8 = 2;
/// The handler said its next read is part of the current request.
const HOLD: u8 = 4;
/// Nothing has arrived yet.
const NEW: u8 = 8;

/// How long a connection that has sent nothing may wait for its first request before the
/// drain counts it as idle (Go's `http.Server` uses the same 5 s).
pub(crate) const NEW_IDLE_AFTER: Duration = Duration::from_secs(5);

impl Activity {
    /// The handler replied.
    pub(crate) fn replied(&self) {
        self.state.fetch_or(BOUNDARY, Ordering::SeqCst);
    }

    /// The handler declared the end of a request: its next read waits for a new one.
    pub(crate) fn between_requests(&self) {
        self.state.fetch_and(!HOLD, Ordering::SeqCst);
        self.state.fetch_or(BOUNDARY, Ordering::SeqCst);
    }

    /// The handler's next read is part of the current request (until bytes arrive).
    pub(crate) fn hold(&self) {
        self.state.fetch_or(HOLD, Ordering::SeqCst);
    }

    /// Would a read starting now wait for a new request?
    fn idle(&self) -> bool {
        let st = self.state.load(Ordering::SeqCst);
        st & HOLD == 0
            && (st & BOUNDARY != 0 || (st & NEW != 0 && self.born.elapsed() >= NEW_IDLE_AFTER))
    }

    /// A read of the socket starts with nothing buffered. `true` if it waits for a new
    /// request and the server is draining: the caller returns end of file instead (unless
    /// input is pending).
    pub(crate) fn begin_read(&self) -> bool {
        // Dekker-style with `Tracker::drain_idle`: it sets `draining` then reads WAITING;
        // this sets WAITING then reads `draining`. One of the two sees the other.
        self.state.fetch_or(WAITING, Ordering::SeqCst);
        self.draining.load(Ordering::SeqCst) && self.idle()
    }

    /// The read returned `got` bytes (or failed: `None`).
    pub(crate) fn end_read(&self, got: Option<usize>) {
        let clear = match got {
            Some(n) if n > 0 => WAITING | BOUNDARY | HOLD | NEW,
            _ => WAITING,
        };
        self.state.fetch_and(!clear, Ordering::SeqCst);
    }

    /// Is the drain under way?
    pub(crate) fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Blocked in a read that waits for a new request?
    fn waiting_idle(&self) -> bool {
        self.state.load(Ordering::SeqCst) & WAITING != 0 && self.idle()
    }
}

#[derive(Debug)]
struct Inner {
    next: AtomicU64,
    live: Mutex<HashMap<u64, Entry>>,
    /// Connections shut down by the deadline watchdog.
    expired: AtomicU64,
    /// The connection deadline, if any.
    deadline: Option<Duration>,
    /// Set when the drain starts ([`Tracker::drain_idle`]).
    draining: Arc<AtomicBool>,
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
            draining: Arc::new(AtomicBool::new(false)),
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

    /// A new connection's activity, tied to this tracker's drain flag (takes no lock: safe
    /// in a forked child).
    pub(crate) fn activity(&self) -> Arc<Activity> {
        Arc::new(Activity {
            state: AtomicU8::new(NEW),
            born: Instant::now(),
            draining: self.0.draining.clone(),
        })
    }

    pub(crate) fn register(&self, fd: RawFd, activity: Arc<Activity>) -> Registration {
        let id = self.0.next.fetch_add(1, Ordering::Relaxed);
        let deadline = self.0.deadline.map(|d| Instant::now() + d);
        self.0.live.lock().insert(
            id,
            Entry {
                fd,
                deadline,
                activity,
            },
        );
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

impl Tracker {
    /// Starts the drain (or, called again while it runs, continues it): from now on a read
    /// that waits for a new request returns end of file, and the connections whose handler
    /// waits in such a read now, with no input pending, get `shutdown(SHUT_RD)` so that it
    /// returns. Returns how many.
    pub(crate) fn drain_idle(&self) -> usize {
        self.0.draining.store(true, Ordering::SeqCst);
        let live = self.0.live.lock();
        let mut n = 0;
        for e in live.values() {
            if e.activity.waiting_idle() && !crate::sys::has_pending_input(e.fd) {
                crate::sys::shutdown_read_fd(e.fd);
                n += 1;
            }
        }
        n
    }

    /// Ends a drain that `shutdown()` began on a synchronous server whose loop is started
    /// again (`serve_forever` after `shutdown`, not after `server_close`).
    pub(crate) fn resume(&self) {
        self.0.draining.store(false, Ordering::SeqCst);
    }

    /// Is the drain under way?
    pub(crate) fn is_draining(&self) -> bool {
        self.0.draining.load(Ordering::SeqCst)
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

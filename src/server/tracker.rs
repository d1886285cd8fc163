//! The registry of in-flight stream connections, so that a close past its grace period can
//! `shutdown(2)` them and release handlers blocked in `read`.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

#[derive(Debug, Default)]
struct Inner {
    next: AtomicU64,
    live: Mutex<HashMap<u64, RawFd>>,
}

/// In-flight connections. A connection unregisters (under the lock) before its descriptor
/// is closed, and [`shutdown_all`](Tracker::shutdown_all) holds the same lock, so a forced
/// close can never hit a recycled descriptor number.
#[derive(Debug, Default, Clone)]
pub(crate) struct Tracker(Arc<Inner>);

/// A registered connection; dropping it unregisters.
#[derive(Debug)]
pub(crate) struct Registration {
    tracker: Tracker,
    id: u64,
}

impl Tracker {
    pub(crate) fn register(&self, fd: RawFd) -> Registration {
        let id = self.0.next.fetch_add(1, Ordering::Relaxed);
        self.0.live.lock().insert(id, fd);
        Registration {
            tracker: self.clone(),
            id,
        }
    }

    /// `shutdown(SHUT_RDWR)` on every in-flight connection: blocked reads return EOF,
    /// blocked writes fail, the peers see the connection end. Returns how many.
    pub(crate) fn shutdown_all(&self) -> usize {
        let live = self.0.live.lock();
        for fd in live.values() {
            crate::sys::shutdown_fd(*fd);
        }
        live.len()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.tracker.0.live.lock().remove(&self.id);
    }
}

//! Run state of the serving loop: `serve_forever` / `shutdown` coordination.
//!
//! Python's `shutdown()` sets a flag that `serve_forever` polls every 0.5 s, deadlocks when
//! called from the serving thread, and leaves a stale flag behind when no loop runs. Here:
//! `shutdown()` wakes the loop at once (a waker polled next to the listener, plus a channel
//! for a loop blocked on a full queue), returns at once on the serving thread, is idempotent,
//! and `serve_forever()` can run again afterwards.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, ThreadId};

use crossbeam_channel::{Receiver, Sender, bounded};
use parking_lot::{Condvar, Mutex};

use crate::sys::Waker;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No loop has been stopped since the last one started (or none ever ran).
    Idle,
    /// `shutdown()` came before the first `serve_forever()`: that loop returns at once.
    /// (Python blocks the caller until the loop starts; this keeps its guarantee that a
    /// loop started after `shutdown()` exits, without the block.)
    PendingStop,
    /// The last loop was stopped by `shutdown()`; another `shutdown()` is a no-op.
    Stopped,
}

#[derive(Debug)]
struct RunState {
    serving: Option<ThreadId>,
    phase: Phase,
}

#[derive(Debug)]
pub(crate) struct Control {
    state: Mutex<RunState>,
    done: Condvar,
    stop: AtomicBool,
    pub(crate) waker: Waker,
    stop_tx: Sender<()>,
    pub(crate) stop_rx: Receiver<()>,
}

/// Marks the loop as running; dropping it marks the loop as finished and wakes `shutdown()`.
pub(crate) struct Serving<'a>(&'a Control);

impl Control {
    pub(crate) fn new() -> io::Result<Control> {
        let (stop_tx, stop_rx) = bounded(1);
        Ok(Control {
            state: Mutex::new(RunState {
                serving: None,
                phase: Phase::Idle,
            }),
            done: Condvar::new(),
            stop: AtomicBool::new(false),
            waker: Waker::new()?,
            stop_tx,
            stop_rx,
        })
    }

    /// Starts a loop. `Ok(None)`: a shutdown was requested before it started; return at once.
    pub(crate) fn begin(&self) -> io::Result<Option<Serving<'_>>> {
        let mut st = self.state.lock();
        if st.serving.is_some() {
            return Err(io::Error::other(
                "serve_forever is already running on another thread",
            ));
        }
        if st.phase == Phase::PendingStop {
            st.phase = Phase::Stopped;
            return Ok(None);
        }
        st.serving = Some(thread::current().id());
        st.phase = Phase::Idle;
        self.stop.store(false, Ordering::SeqCst);
        while self.stop_rx.try_recv().is_ok() {}
        self.waker.drain();
        Ok(Some(Serving(self)))
    }

    /// Has `shutdown()` been asked of the running loop?
    pub(crate) fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Asks the loop to stop and, unless called on the serving thread (from a handler of a
    /// synchronous server) or `wait` is false, waits until it has returned.
    pub(crate) fn shutdown(&self, wait: bool) {
        let mut st = self.state.lock();
        match st.serving {
            Some(id) => {
                self.stop.store(true, Ordering::SeqCst);
                self.waker.wake();
                let _ = self.stop_tx.try_send(());
                if !wait || id == thread::current().id() {
                    return;
                }
                while st.serving.is_some() {
                    self.done.wait(&mut st);
                }
            }
            None => {
                if st.phase == Phase::Idle {
                    st.phase = Phase::PendingStop;
                }
            }
        }
    }

    pub(crate) fn is_serving(&self) -> bool {
        self.state.lock().serving.is_some()
    }
}

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        let mut st = self.0.state.lock();
        st.serving = None;
        st.phase = if self.0.stop.swap(false, Ordering::SeqCst) {
            Phase::Stopped
        } else {
            Phase::Idle
        };
        self.0.done.notify_all();
    }
}

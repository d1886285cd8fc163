//! Datagram receivers: how a threading server serves a datagram socket without handing
//! every datagram to another thread.
//!
//! A datagram is a whole request, so there is no connection to hand over: any thread can
//! receive one and run its handler. A threading datagram server therefore runs `R`
//! receivers — the serving thread and `R - 1` helper threads, `R` being the pool's
//! minimum — that all wait on the socket. A receiver runs the handler itself (inline, no
//! hand-off, no wake-up of another thread) as long as another receiver stays free to
//! receive; otherwise, or while the pool's queue has room and every other receiver is busy,
//! it hands the datagram to the pool as before, so that handlers that block do not stop the
//! server from receiving. When the pool's queue is full, receivers run handlers inline:
//! the kernel's receive buffer then absorbs the excess, as it does for a synchronous server.
//!
//! Measured (README, Performance): the hand-off cost about twice the CPU per datagram of a
//! plain `recv_from` loop.
//!
//! Helpers wait on the socket — on Linux through `EPOLLEXCLUSIVE`, so that a datagram wakes
//! one idle helper, not all of them — and on a waker of their own run, which fires once
//! when the run ends (never drained), so every helper sees it. A helper finishes the handler it is
//! running, then exits; `server_close` joins them within the grace period.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::Socket;

use super::Core;
use super::accept::Backoff;
use super::serve::take_batch;
use crate::handler::HandlerFactory;
use crate::mode::Executor;
use crate::request::sealed::RequestKind;
use crate::sys;

/// What the receivers of one `serve_forever` run share.
#[derive(Debug)]
pub(crate) struct RecvShared {
    /// Receivers not running a handler.
    free: AtomicUsize,
    /// The run is over: helpers exit.
    over: AtomicBool,
    /// Fires (once, never drained) when the run is over.
    waker: sys::Waker,
}

impl RecvShared {
    /// May this receiver run the request inline? Yes if another receiver stays free to
    /// receive, or if the pool's queue is full (inline is then the back-pressure). A `true`
    /// must be followed by [`release`](Self::release).
    pub(crate) fn claim_inline(&self, core: &Core) -> bool {
        if self.free.fetch_sub(1, Ordering::SeqCst) > 1 {
            return true;
        }
        let full = match &core.executor {
            Executor::Pool(pool) => pool.queue_full(),
            _ => false,
        };
        if !full {
            self.free.fetch_add(1, Ordering::SeqCst);
        }
        full
    }

    /// The inline request is done: this receiver is free again.
    pub(crate) fn release(&self) {
        self.free.fetch_add(1, Ordering::SeqCst);
    }
}

/// The receivers of one run; dropping it ends the run for the helpers.
#[derive(Debug)]
pub(crate) struct Receivers {
    shared: Arc<RecvShared>,
}

impl Receivers {
    /// Starts `count - 1` helpers (the serving thread is the first receiver). `None` when
    /// there is nothing to start (`count` ≤ 1) or the run waker cannot be made; the server
    /// then hands every datagram to the pool, as with one receiver.
    pub(crate) fn start<R: RequestKind + crate::request::Request>(
        core: &Arc<Core>,
        factory: &Arc<dyn HandlerFactory<R>>,
        sock: &Arc<Socket>,
        count: usize,
    ) -> Option<Receivers> {
        if count <= 1 {
            return None;
        }
        let waker = match sys::Waker::new() {
            Ok(w) => w,
            Err(e) => {
                log::error!("socketserver: no datagram receivers ({e}); using the pool only");
                return None;
            }
        };
        let shared = Arc::new(RecvShared {
            free: AtomicUsize::new(count),
            over: AtomicBool::new(false),
            waker,
        });
        let mut handles = core.receivers.lock();
        handles.retain(|h| !h.is_finished());
        for _ in 1..count {
            let (core2, factory, sock, sh) =
                (core.clone(), factory.clone(), sock.clone(), shared.clone());
            let spawned = thread::Builder::new()
                .name("socketserver-receiver".into())
                .spawn(move || helper(&core2, &factory, &sock, &sh));
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    // One receiver fewer: the others (and the pool) carry on.
                    shared.free.fetch_sub(1, Ordering::SeqCst);
                    log::error!("socketserver: cannot start a datagram receiver: {e}");
                }
            }
        }
        Some(Receivers { shared })
    }

    pub(crate) fn shared(&self) -> &RecvShared {
        &self.shared
    }
}

impl Drop for Receivers {
    fn drop(&mut self) {
        self.shared.over.store(true, Ordering::SeqCst);
        self.shared.waker.wake();
    }
}

/// A helper receiver: waits on the socket and the run's waker until the run is over.
fn helper<R: RequestKind + crate::request::Request>(
    core: &Arc<Core>,
    factory: &Arc<dyn HandlerFactory<R>>,
    sock: &Arc<Socket>,
    sh: &RecvShared,
) {
    let mut buf = vec![std::mem::MaybeUninit::uninit(); core.options.max_packet_size];
    let mut backoff = Backoff::default();
    let wait = sys::SharedWait::new(sock.as_raw_fd(), sh.waker.fd());
    let over = || sh.over.load(Ordering::SeqCst);
    while !over() {
        match wait.wait() {
            Ok(ready) if ready & 1 != 0 && !over() => {
                let r = take_batch(
                    core,
                    factory,
                    sock,
                    &mut buf,
                    &mut backoff,
                    &sh.waker,
                    Some(sh),
                    &over,
                );
                if let Err(e) = r {
                    log::error!("socketserver: datagram receiver stopped: {e}");
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => {
                log::error!("socketserver: datagram receiver stopped: {e}");
                break;
            }
        }
    }
}

/// `server_close`: waits for the helpers of past runs to finish their handlers, until
/// `deadline`; those still busy then are left to finish on their own (a datagram handler
/// has no connection that could be shut down to stop it). `true` if all were joined.
pub(crate) fn join_all(core: &Core, deadline: Instant) -> bool {
    let handles: Vec<JoinHandle<()>> = core.receivers.lock().drain(..).collect();
    let mut left = Vec::new();
    for h in handles {
        // A forced close (second Ctrl-C) ends the wait at once, as it does for the pool.
        while !h.is_finished() && Instant::now() < deadline && !core.forced.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(1));
        }
        if h.is_finished() {
            let _ = h.join();
        } else {
            left.push(h);
        }
    }
    if !left.is_empty() {
        log::error!(
            "socketserver: {} datagram receiver(s) still in a handler after the grace period; detached",
            left.len()
        );
    }
    left.is_empty()
}

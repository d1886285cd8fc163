//! Datagram receivers: how a threading server serves a datagram socket without handing
//! every datagram to another thread.
//!
//! A datagram is a whole request, so there is no connection to hand over: any thread can
//! receive one and run its handler. A threading datagram server therefore runs `R`
//! receiver threads (`R` = the pool's minimum, default 4) that all wait on the socket,
//! while the serving thread only waits for `shutdown()` and runs `service_actions`. A
//! receiver runs the handler itself (no hand-off, no wake-up of another thread) as long as
//! another receiver stays free to receive; otherwise it hands the datagram to the pool, so
//! that handlers that block do not stop the server from receiving. When the pool's queue is
//! full, the receiver runs the handler anyway: the kernel's receive buffer then absorbs the
//! excess, as it does for a synchronous server (the overload policy does not apply to
//! datagrams: there is no connection to refuse).
//!
//! Measured (README, Performance): the hand-off cost about twice the CPU per datagram of a
//! plain `recv_from` loop.
//!
//! Receivers wait on the socket — on Linux through `EPOLLEXCLUSIVE`, so that a datagram
//! wakes one idle receiver, not all of them — and on a waker of their own run, which fires
//! once when the run ends (never drained), so every receiver sees it. They check for
//! `shutdown()` before each datagram (a datagram taken in the instant `shutdown()` is
//! called may still be served). A receiver finishes the request it is running, then
//! exits; `server_close` joins them within the grace period (a stuck datagram handler
//! cannot be forced: it is detached, as a pool worker would be).

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::Socket;

use parking_lot::Mutex;

use super::accept::Backoff;
use super::serve::{Dispatcher, take_batch};
use crate::context::Context;
use crate::request::Request;
use crate::sys;

/// What the receivers of one `serve_forever` run share.
#[derive(Debug)]
pub(crate) struct RecvShared {
    /// Receivers alive.
    alive: AtomicUsize,
    /// Receivers running a request.
    busy: AtomicUsize,
    /// The run is over: helpers exit.
    over: AtomicBool,
    /// Fires (once, never drained) when the run is over.
    waker: sys::Waker,
}

impl RecvShared {
    /// May this receiver run the request itself? Yes if another receiver stays free to
    /// receive meanwhile. A `true` counts it busy: hold [`busy_guard`](Self::busy_guard).
    pub(crate) fn claim_inline(&self) -> bool {
        let alive = self.alive.load(Ordering::SeqCst);
        self.busy
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| {
                (b + 1 < alive).then_some(b + 1)
            })
            .is_ok()
    }

    /// Counts this receiver busy whatever the others do (the pool's queue is full).
    pub(crate) fn claim_anyway(&self) {
        self.busy.fetch_add(1, Ordering::SeqCst);
    }

    /// Counts the receiver free again when dropped, even if the request panicked.
    pub(crate) fn busy_guard(&self) -> impl Drop + '_ {
        struct Busy<'a>(&'a AtomicUsize);
        impl Drop for Busy<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        Busy(&self.busy)
    }
}

/// The receivers of one run; dropping it ends the run for the helpers.
#[derive(Debug)]
pub(crate) struct Receivers {
    shared: Arc<RecvShared>,
}

impl Receivers {
    /// Starts `count` receiver threads. `None` when the run waker cannot be made or no
    /// thread starts; the server then hands every datagram to the pool from the serving
    /// thread, as before receivers existed.
    pub(crate) fn start<R: Request>(
        d: &Dispatcher<R>,
        sock: &Arc<Socket>,
        count: usize,
        threads: &Mutex<Vec<JoinHandle<()>>>,
    ) -> Option<Receivers> {
        let waker = match sys::Waker::new() {
            Ok(w) => w,
            Err(e) => {
                log::error!("socketserver: no datagram receivers ({e}); using the pool only");
                return None;
            }
        };
        let shared = Arc::new(RecvShared {
            alive: AtomicUsize::new(count),
            busy: AtomicUsize::new(0),
            over: AtomicBool::new(false),
            waker,
        });
        let mut handles = threads.lock();
        handles.retain(|h| !h.is_finished());
        for _ in 0..count {
            let (d, sock, sh) = (d.clone(), sock.clone(), shared.clone());
            let spawned = thread::Builder::new()
                .name("socketserver-receiver".into())
                .spawn(move || {
                    receive(&d, &sock, &sh);
                    sh.alive.fetch_sub(1, Ordering::SeqCst);
                });
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    shared.alive.fetch_sub(1, Ordering::SeqCst);
                    log::error!("socketserver: cannot start a datagram receiver: {e}");
                }
            }
        }
        if shared.alive.load(Ordering::SeqCst) == 0 {
            shared.over.store(true, Ordering::SeqCst);
            return None;
        }
        Some(Receivers { shared })
    }
}

impl Drop for Receivers {
    fn drop(&mut self) {
        self.shared.over.store(true, Ordering::SeqCst);
        self.shared.waker.wake();
    }
}

/// A receiver: waits on the socket and the run's waker until `shutdown()` is asked or the
/// run is over; takes no request after that.
fn receive<R: Request>(d: &Dispatcher<R>, sock: &Arc<Socket>, sh: &RecvShared) {
    let ctx = &d.ctx;
    // One datagram per receive: a batch taken by a receiver whose handler then blocks
    // would wait behind it, while the point of receivers is that a blocking handler
    // stops nothing else. (The synchronous server, sequential anyway, takes batches.)
    let mut buf = crate::request::RecvBuf::single(ctx.options.max_packet_size);
    let mut backoff = Backoff::default();
    let wait = sys::SharedWait::new(sock.as_raw_fd(), sh.waker.fd());
    let over = || sh.over.load(Ordering::SeqCst) || ctx.control.stop_requested();
    while !over() {
        match wait.wait() {
            Ok(ready) if ready & 1 != 0 && !over() => {
                let r = take_batch(d, sock, &mut buf, &mut backoff, &sh.waker, Some(sh), &over);
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
pub(crate) fn join_all(
    ctx: &Context,
    threads: &Mutex<Vec<JoinHandle<()>>>,
    deadline: Instant,
) -> bool {
    let handles: Vec<JoinHandle<()>> = threads.lock().drain(..).collect();
    let mut left = Vec::new();
    for h in handles {
        // A forced close (second Ctrl-C) ends the wait at once, as it does for the pool.
        while !h.is_finished() && Instant::now() < deadline && !ctx.is_forced() {
            thread::sleep(Duration::from_millis(1));
        }
        if h.thread().id() == thread::current().id() {
            // `server_close` from a handler on a receiver: it ends once the handler returns.
            continue;
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

//! Datagram receivers: how a threading server serves a datagram socket at the cost of a
//! synchronous one, while a handler that blocks never stops it from receiving for long.
//!
//! A datagram is a whole request, so there is no connection to hand over: any thread can
//! receive one and run its handler. A threading datagram server therefore runs the
//! leader/followers pattern (Schmidt, O'Ryan, Pyarali, Kircher and Buschmann, 2000; the
//! evented reactor does the same for connections) with a watchdog:
//!
//! - One receiver, the **leader**, receives (a `recvmmsg(2)` batch, the synchronous
//!   server's) and runs each handler itself: no hand-off, no wake-up of another thread,
//!   replies queued by `wfile` sent together (`sendmmsg(2)`). The others, **followers**,
//!   wait on a condition variable and cost nothing.
//! - The serving thread is the **watchdog** (it otherwise only waits for `shutdown()`). While
//!   datagrams arrive it looks every [`TICK`] (2–4 ms) at which handler call the leader is
//!   in; when it sees the same call twice — a handler has run for 2 to 8 ms — it demotes the
//!   leader and promotes a follower, or starts a receiver if none waits (up to the pool's
//!   maximum, [`Builder::workers`](crate::Builder::workers)). The new leader goes on with the
//!   datagrams the old one had received and not yet handled, sends the replies it had
//!   queued for the handled ones (the batch and its replies belong to the leadership, not
//!   to a thread), and receives. The old leader finishes its handler, sends its own reply
//!   at once, and becomes a follower.
//! - Each receiver runs every datagram it leads for on one request object it keeps and
//!   refills (`RequestKind::next_reused`): no reference count, no lock per datagram but
//!   the batch's, and (IP peers) no allocation.
//! - Replies that cannot leave at once (a full send buffer; on a Unix datagram socket, a
//!   peer whose receive queue is full because it does not read) are taken out of the batch
//!   and sent, waiting up to the write timeout, after the leader lets go of it: a wait the
//!   watchdog sees as a handler that blocks, and hands the leadership on from.
//! - So handlers that block hold up the others for 2–8 ms once, not for their duration,
//!   and short handlers run exactly as on [`UdpServer`](crate::UdpServer). Go's scheduler
//!   does the same for system calls (its `sysmon` hands a processor blocked in a syscall
//!   for more than 20 µs to another thread). When every receiver up to the maximum is in a
//!   handler, datagrams wait in the socket's receive buffer (counted in
//!   [`Stats::saturated`](crate::Stats::saturated), and logged at most every 10 s) until
//!   one returns: there is no connection to refuse, and the kernel's buffer is the queue.
//! - An idle server costs nothing: the watchdog ticks only while handlers start; once a
//!   tick saw none, it sleeps until the leader's next handler wakes it (one `write(2)`, then
//!   again nothing while datagrams keep coming).
//! - Followers above the pool's minimum that wait the pool's keep-alive without being
//!   promoted exit.
//!
//! Receivers check for `shutdown()` before each receive: nothing is taken after it, the
//! datagrams already received in the leader's batch are served. A receiver finishes the
//! request it is running, then exits; `server_close` joins them within the grace period (a
//! stuck datagram handler cannot be forced: it is detached, as a pool worker would be).

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use socket2::Socket;

use super::accept::{Backoff, is_per_connection};
use super::serve::{Dispatcher, run_reused};
use crate::context::Context;
use crate::request::{Polled, RecvBuf, Request, Stalled, send_stalled};
use crate::sys;

/// How often the watchdog looks at the leader while handlers run, at least: each tick also
/// carries as much timer slack (`PR_SET_TIMERSLACK`, Linux), so ticks come 2–4 ms apart and
/// the kernel runs each with an interrupt it takes anyway (its own scheduler tick) instead
/// of one of its own. A handler seen in the same call on two ticks — it ran for at least 2
/// ms, at most 8 — loses the leadership. Measured on the 2-core test machine (a VM, where
/// every timer interrupt is a trip through the hypervisor): without the slack the 2 ms
/// ticks cost about 7 % more CPU per datagram than `UdpServer`, with it about 1.5 %; 1 ms
/// ticks cost more either way.
pub(crate) const TICK: Duration = Duration::from_millis(2);

/// The shortest time between two "every receiver is busy" warnings.
const SATURATED_WARNING_EVERY: Duration = Duration::from_secs(10);

/// Who leads, who waits.
#[derive(Debug)]
struct State {
    /// A receiver leads (receives and runs handlers inline).
    leader: bool,
    /// Leaderships handed out: each leader's id, which makes its handler tokens unique.
    next_id: u64,
    /// Receiver threads alive.
    alive: usize,
    /// Followers waiting to be promoted.
    idle: usize,
    /// When the "every receiver is busy" warning was last logged.
    saturated_log: Option<Instant>,
}

/// What the receivers of one `serve_forever` run share.
#[derive(Debug)]
pub(crate) struct RecvShared {
    state: Mutex<State>,
    /// Followers wait here.
    promote: Condvar,
    /// The receive batch and the replies it queued: the leader's, whoever that is (a
    /// demoted leader sends its own reply itself).
    lead: Mutex<RecvBuf>,
    /// The leader's current handler call: a token unique per call, odd while the handler
    /// runs, even once it returned; 0 after the watchdog demoted the leader.
    running: AtomicU64,
    /// The watchdog sleeps until the leader starts a handler (it wakes it then).
    watchdog_asleep: AtomicBool,
    /// The run is over: receivers exit.
    over: AtomicBool,
    /// Fires (once, never drained) when the run is over: wakes a leader waiting on the socket.
    waker: sys::Waker,
    /// Receivers kept even when idle (the pool's minimum).
    keep: usize,
    /// Receivers at most (the pool's maximum).
    max: usize,
    /// How long a follower above `keep` waits for a promotion before it exits.
    keep_alive: Duration,
}

/// Starts one receiver thread; `Err` if the thread cannot be started.
type Spawn = dyn Fn(&Arc<RecvShared>) -> io::Result<JoinHandle<()>> + Send + Sync;

/// The receivers of one run; dropping it ends the run for them.
pub(crate) struct Receivers {
    shared: Arc<RecvShared>,
    spawn: Box<Spawn>,
}

impl std::fmt::Debug for Receivers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receivers")
            .field("shared", &self.shared)
            .finish()
    }
}

impl Receivers {
    /// Starts `keep` receiver threads (at most `max` will run); the leader's receives wait
    /// in the kernel if `wait` (a `sys::ReceiveWait` holds the socket for the run). `None`
    /// when the run waker cannot be made or no thread starts; the server then hands every
    /// datagram to the pool from the serving thread, as before receivers existed.
    pub(crate) fn start<R: Request>(
        d: &Dispatcher<R>,
        sock: &Arc<Socket>,
        (keep, max, wait): (usize, usize, bool),
        threads: &Mutex<Vec<JoinHandle<()>>>,
    ) -> Option<Receivers> {
        let waker = match sys::Waker::new() {
            Ok(w) => w,
            Err(e) => {
                log::error!("socketserver: no datagram receivers ({e}); using the pool only");
                return None;
            }
        };
        let ctx = &d.ctx;
        let mut lead = RecvBuf::datagrams(ctx.options.max_packet_size, true);
        lead.set_wait(wait);
        let shared = Arc::new(RecvShared {
            state: Mutex::new(State {
                leader: false,
                next_id: 0,
                alive: 0,
                idle: 0,
                saturated_log: None,
            }),
            promote: Condvar::new(),
            lead: Mutex::new(lead),
            running: AtomicU64::new(0),
            watchdog_asleep: AtomicBool::new(false),
            over: AtomicBool::new(false),
            waker,
            keep: keep.max(1),
            max: max.max(keep).max(1),
            keep_alive: ctx.options.pool.keep_alive,
        });
        let spawn: Box<Spawn> = {
            let (d, sock) = (d.clone(), sock.clone());
            Box::new(move |sh: &Arc<RecvShared>| {
                let (d, sock, sh) = (d.clone(), sock.clone(), sh.clone());
                thread::Builder::new()
                    .name("socketserver-receiver".into())
                    .spawn(move || receive(&d, &sock, &sh))
            })
        };
        let rx = Receivers { shared, spawn };
        threads.lock().retain(|h| !h.is_finished());
        for _ in 0..rx.shared.keep {
            rx.add(threads);
        }
        if rx.shared.state.lock().alive == 0 {
            rx.shared.over.store(true, Ordering::SeqCst);
            return None;
        }
        Some(rx)
    }

    /// Starts one more receiver; `false` if it could not be started.
    fn add(&self, threads: &Mutex<Vec<JoinHandle<()>>>) -> bool {
        self.shared.state.lock().alive += 1;
        match (self.spawn)(&self.shared) {
            Ok(h) => {
                threads.lock().push(h);
                true
            }
            Err(e) => {
                self.shared.state.lock().alive -= 1;
                log::error!("socketserver: cannot start a datagram receiver: {e}");
                false
            }
        }
    }

    /// The serving thread's part of the run: the watchdog (see the module doc), and the
    /// `service_actions` hook every `interval`. Returns once `shutdown()` is asked.
    pub(crate) fn watch(
        &self,
        ctx: &Context,
        interval: Option<Duration>,
        threads: &Mutex<Vec<JoinHandle<()>>>,
        service_actions: &dyn Fn(),
    ) -> io::Result<()> {
        let sh = &self.shared;
        let waker = &ctx.control.waker;
        let mut last = 0u64;
        let mut watching = true;
        let mut next_service = interval.map(|i| Instant::now() + i);
        // The ticks need no precision: let the kernel run them with an interrupt it takes
        // anyway (see `TICK`). Restored when the run ends: this is the caller's thread.
        #[cfg(target_os = "linux")]
        let _slack = sys::TimerSlack::set(TICK);
        loop {
            let until_service = next_service.map(|t| t.saturating_duration_since(Instant::now()));
            let timeout = match (watching, until_service) {
                (true, s) => Some(s.map_or(TICK, |s| s.min(TICK))),
                (false, s) => s,
            };
            if sys::poll_readable(&[waker.fd()], timeout)? & 1 != 0 {
                waker.drain();
            }
            if ctx.control.stop_requested() {
                return Ok(());
            }
            let now = sh.running.load(Ordering::SeqCst);
            if now & 1 == 1
                && now == last
                && sh
                    .running
                    .compare_exchange(now, 0, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                // The same handler call as a tick ago: it blocks, or computes for long.
                self.take_over(ctx, threads);
                last = 0;
                watching = true;
            } else if now == last {
                // No handler started since the last tick, and none runs: sleep until the
                // leader starts one (it checks the flag after publishing its token).
                sh.watchdog_asleep.store(true, Ordering::SeqCst);
                watching = sh.running.load(Ordering::SeqCst) != now;
                if watching {
                    sh.watchdog_asleep.store(false, Ordering::SeqCst);
                }
            } else {
                last = now;
                watching = true;
            }
            if let Some(t) = next_service
                && Instant::now() >= t
            {
                service_actions();
                next_service = interval.map(|i| Instant::now() + i);
            }
        }
    }

    /// The leader is stuck in a handler (and demoted): promote a follower, or start a
    /// receiver to lead, or — at the maximum — let the first receiver that returns lead.
    fn take_over(&self, ctx: &Context, threads: &Mutex<Vec<JoinHandle<()>>>) {
        let sh = &self.shared;
        let mut st = sh.state.lock();
        st.leader = false;
        if st.idle > 0 {
            sh.promote.notify_one();
            return;
        }
        if st.alive < sh.max {
            drop(st);
            threads.lock().retain(|h| !h.is_finished());
            self.add(threads);
            return;
        }
        ctx.stats.saturated.inc();
        if st
            .saturated_log
            .is_none_or(|t| t.elapsed() >= SATURATED_WARNING_EVERY)
        {
            st.saturated_log = Some(Instant::now());
            log::warn!(
                "socketserver: all {} datagram receivers are busy in handlers: datagrams wait \
                 in the socket's receive buffer until one returns; raise the pool's maximum \
                 (Builder::workers)",
                sh.max
            );
        }
    }
}

impl Drop for Receivers {
    fn drop(&mut self) {
        let sh = &self.shared;
        sh.over.store(true, Ordering::SeqCst);
        sh.waker.wake();
        {
            let _st = sh.state.lock();
            sh.promote.notify_all();
        }
        // A leader waiting in a receive (`sys::ReceiveWait`: a few ms) holds the batch:
        // once this has it, no receiver takes anything more (each checks the run is over,
        // under this lock, before it receives), so nothing sent after `shutdown()` returns
        // is served.
        drop(sh.lead.lock());
    }
}

impl RecvShared {
    /// Waits to lead: `Some(id)` once this receiver leads, `None` when the run is over or
    /// this follower, above the pool's minimum, waited `keep_alive` for nothing (it is
    /// counted out: it must exit).
    fn follow(&self) -> Option<u64> {
        let mut st = self.state.lock();
        loop {
            if self.over.load(Ordering::SeqCst) {
                // Datagrams already received are served, and replies queued are sent, even
                // so: lead once more for them (a leader that holds the batch does it
                // itself).
                let pending = !st.leader
                    && self
                        .lead
                        .try_lock()
                        .is_some_and(|b| b.has_pending() || b.has_replies());
                if !pending {
                    st.alive -= 1;
                    return None;
                }
            }
            if !st.leader {
                st.leader = true;
                st.next_id += 1;
                return Some(st.next_id);
            }
            st.idle += 1;
            let timed_out = if st.alive > self.keep {
                self.promote.wait_for(&mut st, self.keep_alive).timed_out()
            } else {
                self.promote.wait(&mut st);
                false
            };
            st.idle -= 1;
            if timed_out && st.leader && st.alive > self.keep {
                st.alive -= 1;
                return None;
            }
        }
    }

    /// The leader leaves (the run is over, or it cannot wait on the socket any more).
    fn step_down(&self) {
        let mut st = self.state.lock();
        st.leader = false;
        self.promote.notify_one();
    }
}

/// Why a leadership ended.
enum Led {
    /// The watchdog gave the leadership to another receiver while this one ran a handler.
    Demoted,
    /// The run is over (or receiving failed for good): the receiver exits.
    Over,
}

/// A receiver thread: leads when it can, follows otherwise, until the run is over. It
/// runs every datagram it leads for on one reused request.
fn receive<R: Request>(d: &Dispatcher<R>, sock: &Arc<Socket>, sh: &RecvShared) {
    // Only the leader waits on the socket (holding the batch), so a plain `poll(2)`:
    // measured cheaper here than an epoll instance (`EPOLLEXCLUSIVE`), which only pays
    // when several threads wait on one socket.
    let wait = [sock.as_raw_fd(), sh.waker.fd()];
    let Some(mut req) = R::reusable(&d.ctx, sock) else {
        sh.state.lock().alive -= 1;
        return;
    };
    while let Some(id) = sh.follow() {
        match lead(d, sock, sh, id, &wait, &mut req) {
            Led::Demoted => {}
            Led::Over => {
                sh.state.lock().alive -= 1;
                return;
            }
        }
    }
}

/// What a leader does next, once it has let go of the batch.
enum Step {
    /// Run the handler for the datagram from there.
    Datagram(crate::addr::ClientAddr),
    /// Send the replies that could not leave at once, waiting for room.
    Stalled(Stalled),
}

/// One leadership: receive, run each handler here, until demoted or the run is over.
fn lead<R: Request>(
    d: &Dispatcher<R>,
    sock: &Arc<Socket>,
    sh: &RecvShared,
    id: u64,
    wait: &[RawFd; 2],
    req: &mut R,
) -> Led {
    let ctx = &d.ctx;
    let over = || sh.over.load(Ordering::SeqCst) || ctx.control.stop_requested();
    let mut backoff = Backoff::default();
    let mut seq = 0u64;
    // A handler ran and its reply is to queue (with the batch, under the same lock as the
    // next datagram is taken).
    let mut ran = false;
    loop {
        let step = {
            let mut buf = sh.lead.lock();
            if std::mem::take(&mut ran) {
                R::reply_reused(req, Some(&mut buf), ctx);
            }
            loop {
                if !buf.has_pending() {
                    // The batch is done: its replies leave together. Nothing new is taken
                    // after `shutdown()` (what was received is served first). Replies that
                    // must wait for room are sent after the batch is let go.
                    let stalled = buf.flush_replies_now(ctx, sock);
                    if !stalled.is_empty() {
                        break Step::Stalled(stalled);
                    }
                    if over() {
                        drop(buf);
                        sh.step_down();
                        return Led::Over;
                    }
                }
                match R::next_reused(&d.ctx, sock, &mut buf, req) {
                    Ok(Polled::Ready(addr)) => {
                        backoff.reset();
                        break Step::Datagram(addr);
                    }
                    Ok(Polled::Skipped) => {}
                    Ok(Polled::WouldBlock) => {
                        if let Err(e) = sys::poll_readable(wait, None) {
                            log::error!("socketserver: datagram receiver stopped: {e}");
                            drop(buf);
                            sh.step_down();
                            return Led::Over;
                        }
                    }
                    Err(e) if is_per_connection(&e) => ctx.stats.accept_errors.inc(),
                    Err(e) => {
                        ctx.stats.accept_errors.inc();
                        let pause = backoff.on_error(&e);
                        if let Err(e) = sys::sleep_or_wake(&sh.waker, pause) {
                            log::error!("socketserver: datagram receiver stopped: {e}");
                            drop(buf);
                            sh.step_down();
                            return Led::Over;
                        }
                    }
                }
            }
        };
        // Publish which handler call (or wait for room) runs (odd), then wake the watchdog
        // if it sleeps.
        seq = seq.wrapping_add(1);
        let token = (id << 32) | ((seq << 1) & 0xffff_fffe);
        sh.running.store(token | 1, Ordering::SeqCst);
        if sh.watchdog_asleep.load(Ordering::SeqCst)
            && sh.watchdog_asleep.swap(false, Ordering::SeqCst)
        {
            ctx.control.waker.wake();
        }
        // A peer's full receive queue (or a full send buffer) is waited for as a handler
        // that blocks: the watchdog hands the leadership on meanwhile.
        let handled = match step {
            Step::Datagram(addr) => {
                run_reused(d, &addr, req);
                true
            }
            Step::Stalled(stalled) => {
                send_stalled(stalled, ctx, sock);
                false
            }
        };
        if sh
            .running
            .compare_exchange(token | 1, token, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            // Demoted meanwhile: another receiver leads. If it is in a handler, the batch
            // is free: this reply and those queued before it leave now, in order. If it
            // holds the batch, it sends what is queued before it waits or leaves; this
            // reply leaves now, on its own.
            if handled {
                match sh.lead.try_lock() {
                    Some(mut buf) => {
                        R::reply_reused(req, Some(&mut buf), ctx);
                        let stalled = buf.flush_replies_now(ctx, sock);
                        drop(buf);
                        send_stalled(stalled, ctx, sock);
                    }
                    None => R::reply_reused(req, None, ctx),
                }
            }
            return Led::Demoted;
        }
        ran = handled;
    }
}

/// `server_close`: waits for the receivers of past runs to finish their handlers, until
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

//! The evented executor: idle connections wait in the poller (epoll on Linux, kqueue on
//! macOS and the BSDs, through `mio`: see `poller.rs` for why); a thread is used only while
//! a connection has work — a complete message to handle, or output to flush. This is the
//! tutorials' `select`/`epoll` loop, done the way Apache's event MPM and Tomcat's NIO
//! connector do it.
//!
//! # Threads: leader and followers
//!
//! Every connection is registered once, **edge-triggered**, for both directions: no system
//! call re-arms it after a message. A connection is owned by one thread at a time (the
//! `owned` flag); an event that comes while it is owned is noted (`again`) and the owner
//! looks once more before it lets go.
//!
//! The reactor's threads are all alike. At any moment at most one of them — the leader —
//! waits in the poller; the others wait on a condition variable. The leader turns the
//! events it gets into a ready queue and runs them itself: **the thread that read a message
//! runs its handler**, with no hand-off and no wake-up per event (the loop of a
//! single-threaded server, as long as handlers are quick). A long queue (16 or more) is
//! shared with one more thread. A handler that blocks is noticed by the serving thread's
//! tick (every 5 ms): when a turn has run for 2 ms with nobody waiting in the poller, an
//! idle thread is woken to lead, or, with none idle, one more is started while the pool is
//! below its maximum — so a database call or a command never stops the other connections
//! for more than a few milliseconds. A thread that finishes takes the next ready
//! connection, or leads, or waits.
//!
//! # A connection's turn (`conn.rs`)
//!
//! Read what the socket has (bounded per turn; a read that does not fill the buffer emptied
//! it, unless the peer has closed: then on to the end of stream); cut messages with the
//! server's [`MessageFraming`](crate::framing::MessageFraming) and handle each (at most
//! `max_messages_per_turn`, then the connection is re-queued behind the others: a chatty
//! client cannot hold a thread); send the replies in one `send`. Over the high-water mark
//! the connection is not read until the peer catches up (the kernel reports writability
//! when it does). A turn that stopped before the socket was empty queues itself again:
//! edge-triggered, nothing else would.
//!
//! # Time
//!
//! Idle timeout (`read_timeout`), the deadline of a half-received message
//! (`message_deadline`), the connection deadline and the write timeout are checked by a
//! sweep the leader runs between waits (every quarter of the shortest, 50 ms to 1 s): a
//! client trickling half a message is closed at its deadline without ever holding a thread.

mod conn;
mod poller;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};
use socket2::Socket;

use crate::addr::ClientAddr;
use crate::context::Context;
use crate::handler::MessageHandler;
use crate::options::Options;
use crate::stats::Stats;
use conn::Conn;
use poller::{Poller, Ready};

/// How often the drain looks again for connections that have become idle.
const DRAIN_RECHECK: Duration = Duration::from_millis(500);

/// How long a turn may run with nobody waiting in the poller before the serving thread's
/// tick brings in another thread (a handler that blocks).
const STARVED: Duration = Duration::from_millis(2);
/// A thread that takes a connection from a ready queue at least this long wakes an idle
/// thread to share the work (one wake at a time).
const SHARE: usize = 16;

/// Scheduling state, under one lock.
#[derive(Debug)]
struct Sched {
    /// Connections with work, in order.
    ready: VecDeque<Ready>,
    /// Is a thread waiting in the poller?
    leader: bool,
    /// Threads waiting on the condition variable.
    idle: usize,
    /// An idle thread has been woken and has not run yet.
    waking: bool,
    /// Threads running a turn.
    busy: usize,
    /// Threads alive.
    total: usize,
    /// When a turn last started or ended.
    progress: Instant,
}

impl Default for Sched {
    fn default() -> Sched {
        Sched {
            ready: VecDeque::new(),
            leader: false,
            idle: 0,
            waking: false,
            busy: 0,
            total: 0,
            progress: Instant::now(),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Shared {
    poller: Poller,
    conns: RwLock<HashMap<usize, Arc<Conn>>>,
    next_key: AtomicUsize,
    sched: Mutex<Sched>,
    cv: Condvar,
    options: Options,
    /// The drain has begun: idle connections close, busy ones after their message.
    draining: AtomicBool,
    /// The grace period is over: every connection closes now.
    forced: AtomicBool,
    /// Threads exit.
    stopped: AtomicBool,
    /// The server's context, set at the first connection, cleared on close (it holds the
    /// executor: the cycle is broken there).
    ctx: Mutex<Option<Arc<Context>>>,
    handles: Mutex<Vec<JoinHandle<()>>>,
    /// Connections closed by a timeout or deadline.
    expired: AtomicU64,
    /// When the next timer sweep is due.
    next_sweep: Mutex<Instant>,
    sweep_every: Option<Duration>,
}

/// The evented executor. Cheap to share: it is an `Arc`.
#[derive(Debug)]
pub struct Reactor {
    shared: Arc<Shared>,
}

impl Reactor {
    pub(crate) fn new(options: &Options) -> std::io::Result<Reactor> {
        let timers = [
            options.read_timeout,
            options.write_timeout,
            options.message_deadline,
            options.connection_deadline,
            options
                .proxy_protocol
                .is_on()
                .then_some(options.proxy_header_timeout),
            #[cfg(feature = "tls")]
            options.tls.as_ref().map(|_| options.tls_handshake_timeout),
        ];
        let sweep_every = timers
            .iter()
            .flatten()
            .min()
            .map(|d| (*d / 4).clamp(Duration::from_millis(50), Duration::from_secs(1)));
        Ok(Reactor {
            shared: Arc::new(Shared {
                poller: Poller::new()?,
                conns: RwLock::new(HashMap::new()),
                next_key: AtomicUsize::new(1),
                sched: Mutex::new(Sched::default()),
                cv: Condvar::new(),
                options: options.clone(),
                draining: AtomicBool::new(false),
                forced: AtomicBool::new(false),
                stopped: AtomicBool::new(false),
                ctx: Mutex::new(None),
                handles: Mutex::new(Vec::new()),
                expired: AtomicU64::new(0),
                next_sweep: Mutex::new(Instant::now()),
                sweep_every,
            }),
        })
    }

    /// Takes an accepted connection: registers it and schedules its `setup`. On failure the
    /// socket is closed and the error returned.
    pub(crate) fn register(
        &self,
        ctx: &Arc<Context>,
        sock: Socket,
        addr: ClientAddr,
        handler: Box<dyn MessageHandler>,
    ) -> std::io::Result<()> {
        let s = &self.shared;
        if s.stopped.load(Ordering::SeqCst) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "the server is closed",
            ));
        }
        self.start(ctx);
        sock.set_nonblocking(true)?;
        if ctx.inet && ctx.options.nodelay {
            sock.set_tcp_nodelay(true)?;
        }
        if let Some(idle) = ctx.options.keepalive {
            sock.set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(idle))?;
        }
        let key = s.next_key.fetch_add(1, Ordering::Relaxed);
        let conn = conn::new_arc(Conn::new(key, sock, addr, handler, ctx, Arc::downgrade(s))?);
        // In the table before the poller watches it: the first event may already say that
        // the peer has closed (data and FIN before the accept), and must not be dropped.
        // The descriptor is deleted from the poller (`Conn::close`) before it is closed
        // (the socket is dropped with the last `Arc<Conn>`, after that).
        let fd = conn.raw_fd();
        s.conns.write().insert(key, conn);
        if let Err(e) = s.poller.add(fd, key) {
            s.conns.write().remove(&key);
            return Err(e);
        }
        s.schedule(key);
        Ok(())
    }

    /// Starts the first threads (the pool's minimum, at least 2) and records the context.
    fn start(&self, ctx: &Arc<Context>) {
        let s = &self.shared;
        let mut slot = s.ctx.lock();
        if slot.is_some() {
            return;
        }
        *slot = Some(ctx.clone());
        drop(slot);
        let n = s.options.pool.min_workers.max(2);
        for _ in 0..n {
            s.spawn_thread(ctx);
        }
    }

    /// Called from the serving loop's tick: when a turn has run for a while with nobody
    /// waiting in the poller (a handler that blocks), wakes an idle thread or, with none,
    /// starts one while the pool is below its maximum.
    pub(crate) fn tick(&self) {
        let s = &self.shared;
        let ctx = s.ctx.lock().clone();
        let Some(ctx) = ctx else { return };
        let mut sched = s.sched.lock();
        if sched.leader || sched.busy == 0 || sched.waking || sched.progress.elapsed() < STARVED {
            return;
        }
        sched.progress = Instant::now();
        if sched.idle > 0 {
            sched.waking = true;
            s.cv.notify_one();
        } else if sched.total < s.options.pool.max_workers.max(2) {
            drop(sched);
            s.spawn_thread(&ctx);
        }
    }

    pub(crate) fn fill_stats(&self, stats: &mut Stats) {
        let s = &self.shared;
        let sched = s.sched.lock();
        stats.workers = sched.total;
        stats.idle = sched.idle + usize::from(sched.leader);
        stats.queued = sched.ready.len();
        drop(sched);
        stats.deadline_expired += s.expired.load(Ordering::Relaxed);
    }

    /// The drain: idle connections close at once (waiting for a new request, or silent
    /// since the accept: not even a byte of a PROXY header or a `ClientHello`), busy ones
    /// once the socket is empty and no message (with TLS, no record) is in part, and one
    /// whose first request is on its way (a PROXY header or a TLS handshake came, no
    /// message yet) after that request, or `NEW_IDLE_AFTER` (5 s) after its accept; at
    /// `deadline`, or at a forced close, every connection closes. Then the threads are
    /// joined. `true` if everything closed before the deadline.
    pub(crate) fn close(&self, ctx: &Context, deadline: Instant) -> bool {
        let s = &self.shared;
        s.draining.store(true, Ordering::SeqCst);
        s.schedule_all();
        // A connection whose first request is on its way counts as idle once it is
        // `NEW_IDLE_AFTER` old: look again every `DRAIN_RECHECK` (as Go's
        // `Server.Shutdown` does), until the deadline.
        let clean = loop {
            let next = (Instant::now() + DRAIN_RECHECK).min(deadline);
            if s.wait_empty(next, Some(ctx)) {
                break true;
            }
            if Instant::now() >= deadline || ctx.is_forced() || s.forced.load(Ordering::SeqCst) {
                break false;
            }
            s.schedule_all();
        };
        if !clean {
            let n = s.conns.read().len();
            log::warn!("socketserver: grace period over: closing {n} connection(s)");
            s.forced.store(true, Ordering::SeqCst);
            s.shut_busy();
            s.schedule_all();
            s.wait_empty(Instant::now() + Duration::from_secs(2), None);
        }
        s.stopped.store(true, Ordering::SeqCst);
        s.cv.notify_all();
        let _ = s.poller.notify();
        let handles: Vec<_> = s.handles.lock().drain(..).collect();
        let until = Instant::now() + Duration::from_secs(2);
        let mut detached = 0;
        for h in handles {
            while !h.is_finished() && Instant::now() < until {
                thread::sleep(Duration::from_millis(1));
            }
            if h.is_finished() {
                let _ = h.join();
            } else {
                detached += 1;
            }
        }
        if detached > 0 {
            log::error!(
                "socketserver: {detached} reactor thread(s) still in a handler after the forced close; detached"
            );
        }
        // Connections a stuck handler still owns keep their descriptor until it returns.
        s.ctx.lock().take();
        clean && detached == 0
    }

    /// Force: called at once by a forced close.
    pub(crate) fn force(&self) {
        let s = &self.shared;
        if s.draining.load(Ordering::SeqCst) {
            s.forced.store(true, Ordering::SeqCst);
            s.shut_busy();
            s.schedule_all();
        }
    }
}

impl Shared {
    fn spawn_thread(self: &Arc<Self>, ctx: &Arc<Context>) {
        {
            let mut sched = self.sched.lock();
            sched.total += 1;
        }
        let (shared, ctx) = (self.clone(), ctx.clone());
        let mut b = thread::Builder::new().name("socketserver-reactor".into());
        if let Some(n) = self.options.pool.stack_size {
            b = b.stack_size(n);
        }
        match b.spawn(move || run(&shared, &ctx)) {
            Ok(h) => {
                let mut hs = self.handles.lock();
                hs.retain(|h| !h.is_finished());
                hs.push(h);
            }
            Err(e) => {
                self.sched.lock().total -= 1;
                log::error!("socketserver: cannot start a reactor thread: {e}");
            }
        }
    }

    /// Puts a connection on the ready queue and makes sure a thread will see it.
    pub(crate) fn schedule(&self, key: usize) {
        let mut sched = self.sched.lock();
        sched.ready.push_back(Ready { key, closed: false });
        self.wake(&sched);
    }

    fn wake(&self, sched: &Sched) {
        if sched.idle > 0 {
            self.cv.notify_one();
        } else if sched.leader {
            let _ = self.poller.notify();
        }
    }

    /// Shuts the sockets of connections whose handler is running (the forced close).
    fn shut_busy(&self) {
        let conns: Vec<Arc<Conn>> = self.conns.read().values().cloned().collect();
        for c in conns {
            c.shut_if_busy();
        }
    }

    fn schedule_all(&self) {
        let keys: Vec<usize> = self.conns.read().keys().copied().collect();
        let mut sched = self.sched.lock();
        sched
            .ready
            .extend(keys.into_iter().map(|key| Ready { key, closed: false }));
        self.cv.notify_all();
        if sched.leader {
            let _ = self.poller.notify();
        }
    }

    /// Waits until no connection is left, until `deadline` (or a forced close).
    fn wait_empty(&self, deadline: Instant, ctx: Option<&Context>) -> bool {
        loop {
            if self.conns.read().is_empty() {
                return true;
            }
            if Instant::now() >= deadline
                || ctx.is_some_and(Context::is_forced)
                || (ctx.is_some() && self.forced.load(Ordering::SeqCst))
            {
                return false;
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// Timers: closes connections past a timeout or deadline. Run by the leader.
    fn sweep(&self) {
        let Some(every) = self.sweep_every else {
            return;
        };
        let now = Instant::now();
        {
            let mut next = self.next_sweep.lock();
            if now < *next {
                return;
            }
            *next = now + every;
        }
        let conns: Vec<Arc<Conn>> = self.conns.read().values().cloned().collect();
        for c in conns {
            if c.expire(&self.options, now) {
                self.expired.fetch_add(1, Ordering::Relaxed);
                self.schedule(c.key);
            }
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        self.sweep_every.map(|_| {
            self.next_sweep
                .lock()
                .saturating_duration_since(Instant::now())
        })
    }
}

/// A reactor thread.
fn run(s: &Arc<Shared>, ctx: &Arc<Context>) {
    let mut events: Vec<Ready> = Vec::with_capacity(256);
    // The input buffer lent to each connection for its turn (see `MessageReader::adopt`).
    let mut spare = Vec::new();
    let keep_alive = s.options.pool.keep_alive;
    let min = s.options.pool.min_workers.max(2);
    let mut sched = s.sched.lock();
    loop {
        if s.stopped.load(Ordering::SeqCst) {
            break;
        }
        if let Some(ready) = sched.ready.pop_front() {
            // The thread that read a message runs its handler: no hand-off. A long queue
            // is shared with one more thread; a turn that blocks is the tick's business.
            if sched.ready.len() >= SHARE && sched.idle > 0 && !sched.waking {
                sched.waking = true;
                s.cv.notify_one();
            }
            sched.busy += 1;
            sched.progress = Instant::now();
            drop(sched);
            let conn = s.conns.read().get(&ready.key).cloned();
            if let Some(conn) = conn {
                conn.turn(s, ctx, &mut spare, ready);
            }
            sched = s.sched.lock();
            sched.busy -= 1;
            continue;
        }
        if !sched.leader {
            sched.leader = true;
            drop(sched);
            let r = s.poller.wait(&mut events, s.poll_timeout());
            s.sweep();
            sched = s.sched.lock();
            sched.leader = false;
            match r {
                Ok(_) => {
                    sched.ready.extend(events.drain(..));
                }
                Err(e) => {
                    log::error!("socketserver: reactor wait failed: {e}");
                    drop(sched);
                    thread::sleep(Duration::from_millis(10));
                    sched = s.sched.lock();
                }
            }
            continue;
        }
        sched.idle += 1;
        let timed_out = s.cv.wait_for(&mut sched, keep_alive).timed_out();
        sched.idle -= 1;
        sched.waking = false;
        if timed_out && sched.total > min && sched.ready.is_empty() {
            break;
        }
    }
    sched.total -= 1;
    // Another thread may be needed to lead now.
    if !sched.leader && sched.idle > 0 {
        s.cv.notify_one();
    }
}

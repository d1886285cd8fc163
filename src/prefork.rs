//! Pre-fork (beyond Python): N worker processes serving one port, supervised.
//!
//! The parent binds once and forks `workers` processes; each builds a server (usually a
//! [`ThreadingTcpServer`](crate::ThreadingTcpServer)) on the shared listener with the
//! closure you give, and serves. This is how servers use every core with process isolation:
//! a crash takes down one worker, not the service. The parent supervises:
//!
//! - a worker that dies is replaced, after a back-off (100 ms, doubling up to 30 s while
//!   workers keep dying within a second of their start, reset once one lives longer);
//! - [`PreforkHandle::shutdown`] (or Ctrl-C/SIGTERM through
//!   [`shutdown_on_ctrl_c`](crate::shutdown_on_ctrl_c)) stops every worker gracefully: each
//!   stops accepting and drains its in-flight requests within its server's grace period,
//!   then exits; the parent waits for them all (escalating to SIGTERM, then SIGKILL, a few
//!   seconds after the grace period) and returns;
//! - [`PreforkHandle::force_close`] (a second Ctrl-C) makes the workers force their close.
//!
//! Workers hear from the parent through a pipe, not signals: a stop message, or the pipe
//! closing if the parent dies, so orphans never keep serving. In workers SIGINT is ignored
//! (a terminal's Ctrl-C reaches the whole process group; the parent orchestrates the drain).
//!
//! With [`reuse_port`](Prefork::reuse_port) each worker binds its own listener with
//! `SO_REUSEPORT` and Linux spreads connections across them; note that connections queued
//! on a worker's listener when that worker dies are reset.
//!
//! Start the pre-fork server from `main` before other threads run: `fork` copies only the
//! calling thread, and a lock another thread held at that moment (a logger's, say) would
//! stay locked in the worker.
//!
//! ```no_run
//! use socketserver::{prefork::Prefork, StreamRequest, ThreadingTcpServer};
//!
//! let prefork = Prefork::new(4);
//! # #[cfg(feature = "ctrlc")]
//! socketserver::shutdown_on_ctrl_c([prefork.handle()]).expect("signal handler");
//! prefork.run("127.0.0.1:9000", |listener| {
//!     ThreadingTcpServer::builder().from_socket(listener, |req: &mut StreamRequest| {
//!         std::io::copy(&mut req.rfile, &mut req.wfile).map(drop)
//!     })
//! })?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io::{self, Read, Write};
use std::net::ToSocketAddrs;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use socket2::{SockAddr, Socket, Type};

use crate::mode::Mode;
use crate::server::Server;
use crate::sys::{self, Waker};
use crate::transport::Tcp;

const STOP: u8 = b'S';
const FORCE: u8 = b'F';
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Control {
    waker: Waker,
    stop: AtomicBool,
    force: AtomicBool,
}

/// Stops a running [`Prefork`] from another thread or a signal handler. `Clone + Send`.
#[derive(Debug, Clone)]
pub struct PreforkHandle(Arc<Control>);

impl PreforkHandle {
    /// Starts the graceful drain of every worker; [`Prefork::run`] returns once they exit.
    pub fn shutdown(&self) {
        self.0.stop.store(true, Ordering::SeqCst);
        self.0.waker.wake();
    }

    /// Makes every worker force its close now (end of the grace period).
    pub fn force_close(&self) {
        self.0.force.store(true, Ordering::SeqCst);
        self.shutdown();
    }
}

/// A supervised set of worker processes sharing one TCP port. See the [module
/// docs](self).
#[derive(Debug)]
pub struct Prefork {
    workers: usize,
    reuse_port: bool,
    backlog: i32,
    grace: Duration,
    control: Arc<Control>,
}

#[derive(Debug)]
struct Slot {
    pid: Option<libc::pid_t>,
    pipe: Option<UnixStream>,
    started: Instant,
    restart_at: Instant,
    backoff: Duration,
}

impl Prefork {
    /// `workers` processes (at least 1). Typical: the number of cores.
    pub fn new(workers: usize) -> Prefork {
        Prefork {
            workers: workers.max(1),
            reuse_port: false,
            backlog: crate::DEFAULT_BACKLOG,
            grace: crate::DEFAULT_SHUTDOWN_GRACE,
            // A waker cannot fail to be created short of descriptor exhaustion; report
            // that from `run` instead of here.
            control: Arc::new(Control {
                waker: Waker::new().unwrap_or_else(|_| Waker::dead()),
                stop: AtomicBool::new(false),
                force: AtomicBool::new(false),
            }),
        }
    }

    /// One listener per worker with `SO_REUSEPORT`, instead of one shared listener.
    /// Default `false`.
    pub fn reuse_port(mut self, on: bool) -> Self {
        self.reuse_port = on;
        self
    }

    /// The `listen(2)` backlog of the listener(s). Default 1024.
    pub fn backlog(mut self, backlog: i32) -> Self {
        self.backlog = backlog;
        self
    }

    /// How long the parent waits for draining workers before SIGTERM (then SIGKILL 2 s
    /// later). Set it at least as long as the workers' own `shutdown_grace`. Default 10 s.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// A handle to stop [`run`](Self::run) from elsewhere.
    pub fn handle(&self) -> PreforkHandle {
        PreforkHandle(self.control.clone())
    }

    /// Binds `addr`, forks the workers and supervises them until shut down. Each worker
    /// calls `make_server` with its listener (bound and listening) and serves the server
    /// it returns; a worker whose `make_server` fails exits with status 2 (and is
    /// restarted with back-off).
    pub fn run<A, M, F>(self, addr: A, make_server: F) -> io::Result<()>
    where
        A: ToSocketAddrs,
        M: Mode,
        F: Fn(Socket) -> io::Result<Server<Tcp, M>>,
    {
        if !self.control.waker.is_alive() {
            return Err(io::Error::other(
                "prefork: cannot create the waker socketpair",
            ));
        }
        let addr: SockAddr = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address"))?
            .into();
        let shared = if self.reuse_port {
            None
        } else {
            Some(self.listener(&addr)?)
        };
        let now = Instant::now();
        let mut slots: Vec<Slot> = (0..self.workers)
            .map(|_| Slot {
                pid: None,
                pipe: None,
                started: now,
                restart_at: now,
                backoff: FIRST_BACKOFF,
            })
            .collect();
        log::info!(
            "socketserver: prefork: {} workers on {:?}{}",
            self.workers,
            addr.as_socket(),
            if self.reuse_port {
                " (SO_REUSEPORT)"
            } else {
                ""
            }
        );
        while !self.control.stop.load(Ordering::SeqCst) {
            self.reap(&mut slots, false);
            let now = Instant::now();
            for i in 0..slots.len() {
                if slots[i].pid.is_none() && slots[i].restart_at <= now {
                    self.spawn(i, &mut slots, shared.as_ref(), &addr, &make_server)?;
                }
            }
            let next = slots
                .iter()
                .filter(|s| s.pid.is_none())
                .map(|s| s.restart_at.saturating_duration_since(now))
                .min()
                .unwrap_or(Duration::from_millis(100))
                .min(Duration::from_millis(100));
            sys::sleep_or_wake(&self.control.waker, next)?;
            self.control.waker.drain();
        }
        drop(shared); // the workers hold their copies
        self.drain(&mut slots);
        Ok(())
    }

    fn listener(&self, addr: &SockAddr) -> io::Result<Socket> {
        let sock = Socket::new(addr.domain(), Type::STREAM, Some(socket2::Protocol::TCP))?;
        sock.set_reuse_address(true)?;
        if self.reuse_port {
            sock.set_reuse_port(true)?;
        }
        sock.bind(addr)?;
        sock.listen(self.backlog)?;
        Ok(sock)
    }

    fn spawn<M, F>(
        &self,
        i: usize,
        slots: &mut [Slot],
        shared: Option<&Socket>,
        addr: &SockAddr,
        make_server: &F,
    ) -> io::Result<()>
    where
        M: Mode,
        F: Fn(Socket) -> io::Result<Server<Tcp, M>>,
    {
        let listener = match shared {
            Some(l) => l.try_clone()?,
            None => self.listener(addr)?,
        };
        let (parent_end, child_end) = UnixStream::pair()?;
        // SAFETY: fork(2); the child runs `worker` and leaves with _exit.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            // Close the parent's ends of the other workers' pipes, so that each worker
            // sees EOF when the parent dies.
            for s in slots.iter() {
                if let Some(p) = &s.pipe {
                    // SAFETY: closing an inherited descriptor the child never uses.
                    unsafe { libc::close(p.as_raw_fd()) };
                }
            }
            // SAFETY: see above.
            unsafe { libc::close(parent_end.as_raw_fd()) };
            let code = worker(listener, child_end, make_server);
            // SAFETY: _exit skips the parent's atexit handlers and buffered output.
            unsafe { libc::_exit(code) }
        }
        log::info!("socketserver: prefork: started worker {pid}");
        let s = &mut slots[i];
        s.pid = Some(pid);
        s.pipe = Some(parent_end);
        s.started = Instant::now();
        Ok(())
    }

    /// Reaps exited workers; schedules restarts unless `final_`.
    fn reap(&self, slots: &mut [Slot], final_: bool) -> usize {
        let mut alive = 0;
        for s in slots.iter_mut() {
            let Some(pid) = s.pid else { continue };
            let mut status = 0;
            // SAFETY: waitpid on our own child.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == 0 {
                alive += 1;
                continue;
            }
            s.pid = None;
            s.pipe = None;
            if final_ {
                continue;
            }
            s.backoff = if s.started.elapsed() < Duration::from_secs(1) {
                (s.backoff * 2).min(MAX_BACKOFF)
            } else {
                FIRST_BACKOFF
            };
            s.restart_at = Instant::now() + s.backoff;
            log::warn!(
                "socketserver: prefork: worker {pid} died ({}); restarting in {:?}",
                describe(status),
                s.backoff
            );
        }
        alive
    }

    fn drain(&self, slots: &mut [Slot]) {
        let tell = |slots: &mut [Slot], msg: u8| {
            for s in slots.iter_mut() {
                if let Some(p) = &mut s.pipe {
                    let _ = p.write_all(&[msg]);
                }
            }
        };
        log::info!("socketserver: prefork: draining workers");
        tell(slots, STOP);
        let mut forced = false;
        let deadline = Instant::now() + self.grace;
        let mut escalation = [(libc::SIGTERM, 2u64), (libc::SIGKILL, 5)].into_iter();
        let mut until = deadline;
        loop {
            if self.reap(slots, true) == 0 {
                return;
            }
            if !forced && self.control.force.load(Ordering::SeqCst) {
                tell(slots, FORCE);
                forced = true;
            }
            if Instant::now() >= until {
                let Some((sig, wait)) = escalation.next() else {
                    log::error!("socketserver: prefork: workers survived SIGKILL?");
                    return;
                };
                for pid in slots.iter().filter_map(|s| s.pid) {
                    log::warn!("socketserver: prefork: sending signal {sig} to worker {pid}");
                    // SAFETY: kill(2) on our own unreaped child.
                    unsafe { libc::kill(pid, sig) };
                }
                until = Instant::now() + Duration::from_secs(wait);
            }
            let _ = sys::sleep_or_wake(&self.control.waker, Duration::from_millis(10));
            self.control.waker.drain();
        }
    }
}

/// A worker process: build the server, serve until the parent says stop (or dies).
fn worker<M, F>(listener: Socket, mut pipe: UnixStream, make_server: &F) -> i32
where
    M: Mode,
    F: Fn(Socket) -> io::Result<Server<Tcp, M>>,
{
    // SAFETY: signal(2) in a single-threaded child.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, libc::SIG_DFL);
        libc::signal(libc::SIGHUP, libc::SIG_DFL);
    }
    let server = match make_server(listener) {
        Ok(s) => s,
        Err(e) => {
            log::error!("socketserver: prefork: worker cannot build its server: {e}");
            return 2;
        }
    };
    let handle = server.handle();
    let watcher = std::thread::Builder::new()
        .name("socketserver-prefork-watch".into())
        .spawn(move || {
            let mut b = [0u8; 1];
            let mut stopping = false;
            loop {
                match pipe.read(&mut b) {
                    Ok(1) if b[0] == STOP && !stopping => {
                        stopping = true;
                        handle.request_shutdown();
                    }
                    Ok(1) if b[0] == FORCE => handle.force_close(),
                    Ok(1) => {}
                    // A signal (the terminal's Ctrl-C) is not the parent going away.
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    // EOF or error: the parent is gone; stop, and force if it stays gone.
                    _ => {
                        handle.request_shutdown();
                        return;
                    }
                }
            }
        });
    if let Err(e) = watcher {
        log::error!("socketserver: prefork: cannot start the watcher thread: {e}");
        return 2;
    }
    let code = match server.serve_forever() {
        Ok(()) => 0,
        Err(e) => {
            log::error!("socketserver: prefork: worker stopped: {e}");
            1
        }
    };
    server.server_close();
    code
}

fn describe(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exit status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("signal {}", libc::WTERMSIG(status))
    } else {
        format!("status {status}")
    }
}

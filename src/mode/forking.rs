//! The forking executor: one child process per request (Python's `ForkingMixIn`), done
//! safely.
//!
//! - The serving thread forks; the child runs the handler pipeline and ends with `_exit`
//!   (status 0, or 1 after an error or panic); the parent only closes its copy of the
//!   connection — never `shutdown(2)`, which would cut the child's (bpo-6382).
//! - Only our own children are reaped: `waitpid(pid, WNOHANG)` for each recorded pid, never
//!   `waitpid(-1)`, so other children of the process keep their exit status.
//! - `max_children` is enforced *before* forking: at the limit the server stops accepting
//!   until a child exits (no fork bomb; Python checks after forking).
//! - `server_close` waits for the children up to the grace period, then sends SIGTERM, then
//!   SIGKILL, and reaps them all.
//!
//! # Fork safety: what a handler may do in a forked child
//!
//! After `fork(2)` the child has one thread: any lock another thread of the parent held at
//! that instant stays locked forever in the child. So the child:
//! - takes no lock of this crate (the pipeline in the child touches only atomics);
//! - **turns `log` off** (`log::set_max_level(Off)`): a logger's lock may be held by a
//!   parent thread. The default `handle_error` writes its line to stderr with a raw
//!   `write(2)` instead. [`Builder::log_in_children`](crate::Builder::log_in_children)
//!   turns logging back on, if no other thread of the parent logs (or the logger is
//!   fork-safe);
//! - ignores SIGINT (a terminal's Ctrl-C goes to the whole process group: the parent turns
//!   it into a graceful drain, and in-flight children finish) and resets SIGTERM and SIGHUP
//!   to their default action (the parent's escalation after the grace period).
//!
//! Memory allocation is safe in the child with glibc (its `fork` takes the allocator's
//! locks). A handler should likewise avoid `println!` (stdout's lock) and any lock shared
//! with other parent threads; prefer writing to its connection. The threading mode has none
//! of these constraints: prefer it unless process isolation is the point.

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::pipeline;
use crate::context::Context;
use crate::error::HandlerError;
use crate::handler::HandlerFactory;
use crate::request::Request;
use crate::sys;

/// The exit status of a child whose TLS handshake failed (the parent counts it in
/// `tls_failures`, not as a served request).
const TLS_FAILED: i32 = 3;

/// Children of a forking server.
#[derive(Debug)]
pub struct Forker {
    children: Mutex<Vec<libc::pid_t>>,
    max_children: usize,
}

impl Forker {
    pub(crate) fn new(max_children: usize) -> Forker {
        Forker {
            children: Mutex::new(Vec::new()),
            max_children: max_children.max(1),
        }
    }

    pub(crate) fn count(&self) -> usize {
        self.children.lock().len()
    }

    /// Reaps exited children without blocking; returns how many are still running. Exit
    /// status 0: served; [`TLS_FAILED`]: a failed TLS handshake, counted in
    /// `tls_failures`; anything else: served, with an error.
    pub(crate) fn reap(&self, ctx: &Context) -> usize {
        let mut children = self.children.lock();
        children.retain(|&pid| {
            let mut status = 0;
            // SAFETY: waitpid on a pid we forked, with a valid status pointer.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == 0 {
                return true; // still running
            }
            if r == pid {
                let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
                if code == Some(TLS_FAILED) {
                    // The handshake failed: never handled, as in the other modes.
                    ctx.stats.tls_failures.inc();
                    return false;
                }
                ctx.stats.served.inc();
                if code != Some(0) {
                    ctx.stats.errors.inc();
                }
            }
            false // exited, or not ours any more (ECHILD)
        });
        children.len()
    }

    /// Blocks accepting while `max_children` children run. `false` if asked to stop.
    pub(crate) fn wait_for_capacity(&self, ctx: &Context) -> bool {
        loop {
            if self.reap(ctx) < self.max_children {
                return true;
            }
            if ctx.control.stop_requested() {
                return false;
            }
            let _ = sys::sleep_or_wake(&ctx.control.waker, Duration::from_millis(5));
        }
    }

    /// Forks a child for one request. `close_fds` are the parent's server descriptors,
    /// closed in the child.
    pub(crate) fn spawn<R: Request>(
        &self,
        ctx: &Arc<Context>,
        factory: &dyn HandlerFactory<R>,
        inc: R::Incoming,
        close_fds: &[RawFd],
    ) {
        // Keep the limit even when called from `handle_request` loops.
        if self.reap(ctx) >= self.max_children && !self.wait_for_capacity(ctx) {
            // Stopping, with a request taken before the stop (the rest of a receive
            // batch): a child must end first, within the grace period; else the request is
            // dropped, visibly, rather than forked past `max_children`.
            let until = Instant::now() + ctx.options.shutdown_grace;
            while self.reap(ctx) >= self.max_children {
                if Instant::now() >= until || ctx.is_forced() {
                    ctx.stats.dropped.inc();
                    ctx.log_dropped(
                        R::incoming_addr(&inc),
                        "stopping, and no child ended within the grace period (max_children)",
                    );
                    R::close_incoming(inc);
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        // SAFETY: fork(2). The child only runs code that takes no lock (see module docs)
        // and leaves with _exit, running no destructor of the parent's state.
        let pid = unsafe { libc::fork() };
        match pid {
            -1 => {
                let e = io::Error::last_os_error();
                let addr = R::incoming_addr(&inc).clone();
                ctx.report_error(&addr, &HandlerError::Io(e));
                R::close_incoming(inc);
            }
            0 => child(ctx, factory, inc, close_fds),
            pid => {
                self.children.lock().push(pid);
                // The parent closes its copy only (close, not shutdown).
                drop(inc);
            }
        }
    }

    /// Waits for the children until `deadline`, then SIGTERM, then SIGKILL.
    pub(crate) fn close(&self, ctx: &Context, deadline: Instant) -> bool {
        let wait = |until: Instant, stop_on_force: bool| loop {
            if self.reap(ctx) == 0 {
                return true;
            }
            if Instant::now() >= until || (stop_on_force && ctx.is_forced()) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        if wait(deadline, true) {
            return true;
        }
        for (sig, grace) in [(libc::SIGTERM, 2), (libc::SIGKILL, 5)] {
            let pids = self.children.lock().clone();
            log::warn!(
                "socketserver: grace period over: sending signal {sig} to {} child(ren)",
                pids.len()
            );
            for pid in pids {
                // SAFETY: kill(2) on a child we forked and have not reaped.
                unsafe { libc::kill(pid, sig) };
            }
            if wait(Instant::now() + Duration::from_secs(grace), false) {
                return false;
            }
        }
        false
    }
}

fn child<R: Request>(
    ctx: &Arc<Context>,
    factory: &dyn HandlerFactory<R>,
    inc: R::Incoming,
    close_fds: &[RawFd],
) -> ! {
    sys::mark_forked_child();
    // SAFETY: signal(2) and close(2) are async-signal-safe; the descriptors are the
    // parent's listener and waker, which the child never uses.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, libc::SIG_DFL);
        libc::signal(libc::SIGHUP, libc::SIG_DFL);
        for fd in close_fds {
            libc::close(*fd);
        }
    }
    if !ctx.options.log_in_children {
        log::set_max_level(log::LevelFilter::Off);
    }
    let tls_failures = ctx.stats.tls_failures.get();
    let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pipeline::process(ctx, factory, inc, crate::mode::Disposition::Run)
    }))
    .unwrap_or(false);
    let code = match ok {
        true => 0,
        false if ctx.stats.tls_failures.get() > tls_failures => TLS_FAILED,
        false => 1,
    };
    // SAFETY: _exit(2) ends the child without running the parent's destructors or atexit
    // handlers (which could flush the parent's buffers twice).
    unsafe { libc::_exit(code) }
}

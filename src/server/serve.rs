//! The serving loop: `serve_forever` and `handle_request`.
//!
//! One `poll(2)` on two descriptors — the server socket and the shutdown waker — so an
//! idle server sleeps in the kernel and `shutdown()` takes effect at once. When the socket is
//! readable the loop takes up to [`BATCH`] requests without polling again, checking the stop
//! flag between them (a request arriving after `shutdown()` is never taken: bpo-35017).

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use socket2::Socket;

use super::accept::{Backoff, is_per_connection};
use super::receivers::Receivers;
use super::{Handled, Server};
use crate::addr::ClientAddr;
use crate::context::{Context, ServerHandle};
use crate::error::HandlerError;
use crate::handler::HandlerFactory;
use crate::mode::{Disposition, Executor, Mode, pipeline};
use crate::options::Overload;
use crate::request::sealed::RequestKind;
use crate::request::{Polled, RecvBuf, Request};
use crate::sys;
use crate::transport::Transport;

/// Requests taken per wake-up before polling again.
const BATCH: usize = 64;

/// The shortest time between two "waiting in the listen backlog" warnings.
const LIMIT_WARNING_EVERY: Duration = Duration::from_secs(10);

/// `service_actions` cadence when a hook is set but no interval is (Python's
/// `poll_interval`).
const DEFAULT_SERVICE_INTERVAL: Duration = Duration::from_millis(500);

/// What every thread that takes requests needs: the context, the executor and the handler
/// factory (cheap `Arc` clones of the server's).
pub(super) struct Dispatcher<R: Request> {
    pub(super) ctx: Arc<Context>,
    pub(super) executor: Arc<Executor>,
    pub(super) factory: Arc<dyn HandlerFactory<R>>,
}

impl<R: Request> Clone for Dispatcher<R> {
    fn clone(&self) -> Self {
        Dispatcher {
            ctx: self.ctx.clone(),
            executor: self.executor.clone(),
            factory: self.factory.clone(),
        }
    }
}

impl<T: Transport, M: Mode> Server<T, M> {
    /// Python's `serve_forever()`: handles requests until [`shutdown`](Self::shutdown).
    ///
    /// Returns `Ok(())` after a shutdown. Accept errors never end the loop: per-connection
    /// ones (`ECONNABORTED`, `ECONNRESET`…) are skipped, resource exhaustion (`EMFILE`,
    /// `ENFILE`, `ENOBUFS`, `ENOMEM`) is logged (at most once a second) and backed off, 5 ms
    /// doubling to 1 s. An error is returned only if the server is closed or not activated,
    /// or if another thread is already serving.
    ///
    /// The `service_actions` hook runs after every wake-up, and at least every
    /// [`Builder::service_interval`](crate::Builder::service_interval) when one is set.
    pub fn serve_forever(&self) -> io::Result<()> {
        let sock = self.ready_socket()?;
        let ctx = &self.ctx;
        let Some(_serving) = ctx.control.begin()? else {
            return Ok(());
        };
        self.end_shutdown_drain();
        let mut buf = self.recv_buf();
        // Datagram sockets (Linux): a loop whose batch drained waits for the next datagram
        // in `recvmmsg` itself, for a few ms, before it polls (see `sys::ReceiveWait`;
        // declared before the receivers, so that it outlives them).
        #[cfg(target_os = "linux")]
        let receive_wait = if <T::Request as RequestKind>::STREAM {
            None
        } else {
            sys::ReceiveWait::start(&sock)
        };
        #[cfg(target_os = "linux")]
        let waits = receive_wait.is_some();
        #[cfg(not(target_os = "linux"))]
        let waits = false;
        buf.set_wait(waits);
        // Synchronous datagram servers run each datagram on one reused request.
        let mut reused = match *self.executor {
            Executor::Inline => <T::Request as RequestKind>::reusable(ctx, &sock),
            _ => None,
        };
        let mut backoff = Backoff::default();
        let fds = [sock.as_raw_fd(), ctx.control.waker.fd()];
        let hook_interval = ctx.options.service_interval.or(ctx
            .hooks
            .service_actions
            .as_ref()
            .map(|_| DEFAULT_SERVICE_INTERVAL));
        let interval = match (hook_interval, self.executor.service_interval()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let hold_at_limit = ctx.options.pool.overload == Overload::Block;
        // Threading mode on a datagram socket: receivers that run handlers themselves,
        // leader/followers (see `receivers.rs`). The serving thread is their watchdog and
        // runs `service_actions`; dropping them at the end stops them.
        let receivers = match &*self.executor {
            Executor::Pool(_) if !<T::Request as RequestKind>::STREAM => {
                let pool = &ctx.options.pool;
                let max = pool.max_workers.max(1);
                let keep = pool.min_workers.clamp(1, max);
                Receivers::start(
                    &self.dispatcher(),
                    &sock,
                    (keep, max, waits),
                    &self.receivers,
                )
            }
            _ => None,
        };
        if let Some(rx) = &receivers {
            return rx.watch(ctx, hook_interval, &self.receivers, &|| {
                self.service_actions()
            });
        }
        let waiting = || self.note_waiting(&sock);
        loop {
            // Datagrams already received (the rest of a `recvmmsg` batch: `take_batch` stops
            // at its count, or after each one when forking) are served before anything is
            // polled, and before the loop ends at `shutdown()`: the socket will not report
            // them again.
            let pending = buf.has_pending();
            if (ctx.control.stop_requested() || !self.executor.wait_for_capacity(ctx, &waiting))
                && !pending
            {
                break;
            }
            // Ready to take: what is pending, else what the socket reports.
            let ready = if pending {
                0b01
            } else {
                // At max_connections under Block: wait for a close (it wakes us), not for
                // connections — checking every second who waits in the backlog meanwhile.
                let at_limit = hold_at_limit && ctx.at_connection_limit();
                let (poll_fds, timeout) = if at_limit {
                    let check = Duration::from_secs(1);
                    (&fds[1..], Some(interval.map_or(check, |i| i.min(check))))
                } else {
                    (&fds[..], interval)
                };
                let ready = sys::poll_readable(poll_fds, timeout)?;
                if at_limit {
                    self.note_waiting(&sock);
                }
                let ready = if poll_fds.len() == 1 {
                    ready << 1
                } else {
                    ready
                };
                if ready & 0b10 != 0 {
                    ctx.control.waker.drain();
                }
                if ctx.control.stop_requested() {
                    break;
                }
                ready
            };
            if ready & 0b01 != 0 {
                self.serve_ready(&sock, &mut buf, reused.as_mut(), &mut backoff)?;
            }
            self.executor.tick();
            self.service_actions();
        }
        Ok(())
    }

    /// Python's `handle_request()`: waits for one request, up to the server's
    /// [`timeout`](crate::Builder::timeout), and processes it (in threading mode: hands it
    /// to the pool). If the timeout passes first, runs the `handle_timeout` hook and returns
    /// [`Handled::Timeout`]. With no timeout it waits forever. `EINTR` does not shorten the
    /// wait.
    pub fn handle_request(&self) -> io::Result<Handled> {
        let sock = self.ready_socket()?;
        self.end_shutdown_drain();
        let deadline = self.ctx.options.timeout.map(|t| Instant::now() + t);
        // One request: one datagram per receive (the rest of a `recvmmsg` batch would be
        // lost with this buffer), its reply sent before this returns (not queued for a
        // batch that nothing would flush).
        let mut buf = if <T::Request as RequestKind>::STREAM {
            RecvBuf::none()
        } else {
            RecvBuf::single(self.ctx.options.max_packet_size)
        };
        loop {
            let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let ready = sys::poll_readable(&[sock.as_raw_fd()], remaining)?;
            if ready & 1 != 0 {
                match <T::Request as RequestKind>::get_request(&self.ctx, &sock, &mut buf) {
                    Ok(Polled::Ready(inc)) => {
                        self.dispatch(inc, sock.as_raw_fd());
                        return Ok(Handled::Request);
                    }
                    Ok(Polled::Skipped) => return Ok(Handled::Request),
                    Ok(Polled::WouldBlock) => {}
                    Err(e) if is_per_connection(&e) => {}
                    Err(e) => {
                        self.ctx.stats.accept_errors.inc();
                        return Err(e);
                    }
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                #[cfg(unix)]
                if let Executor::Fork(f) = &*self.executor {
                    f.reap(&self.ctx); // Python's ForkingMixIn.handle_timeout
                }
                if let Some(hook) = &self.ctx.hooks.handle_timeout {
                    hook(&ServerHandle::new(self.ctx.clone()));
                }
                return Ok(Handled::Timeout);
            }
        }
    }

    fn ready_socket(&self) -> io::Result<Arc<Socket>> {
        let sock = self.live_socket()?;
        if !self.activated.load(Ordering::SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the server is not activated: call server_bind() and server_activate() first",
            ));
        }
        Ok(sock)
    }

    fn recv_buf(&self) -> RecvBuf {
        if <T::Request as RequestKind>::STREAM {
            RecvBuf::none()
        } else {
            let inline = matches!(*self.executor, Executor::Inline);
            RecvBuf::datagrams(self.ctx.options.max_packet_size, inline)
        }
    }

    /// Takes up to `BATCH` pending requests.
    fn serve_ready(
        &self,
        sock: &Arc<Socket>,
        buf: &mut RecvBuf,
        reused: Option<&mut T::Request>,
        backoff: &mut Backoff,
    ) -> io::Result<()> {
        let ctx = &self.ctx;
        take_batch(
            &self.dispatcher(),
            sock,
            buf,
            reused,
            backoff,
            &ctx.control.waker,
            &|| ctx.control.stop_requested(),
        )
    }

    /// A synchronous server's `shutdown()` began the drain on its own (see
    /// `Runtime::on_shutdown`): serving again, short of `server_close`, ends it.
    fn end_shutdown_drain(&self) {
        if matches!(*self.executor, Executor::Inline) && !self.closed.load(Ordering::SeqCst) {
            self.ctx.tracker.resume();
        }
    }

    /// `verify_request`, then `process_request` in the server's mode.
    fn dispatch(&self, inc: <T::Request as RequestKind>::Incoming, listener: RawFd) {
        dispatch(&self.dispatcher(), inc, listener);
    }

    /// At close, before the listener goes: the connections the kernel has already
    /// completed (the listen backlog) are taken and served in the drain, not reset when it
    /// closes — behind a load balancer such a connection may already carry a request the
    /// proxy will not retry. Stops at the first `EAGAIN` (the listener closes right after:
    /// what arrives in between is the only race left), when the mode has no room (Block
    /// policy), or after `backlog` connections. Not in synchronous mode, whose closing
    /// thread would have to serve them one by one.
    pub(super) fn take_backlog(&self, sock: &Arc<Socket>) {
        if !<T::Request as RequestKind>::STREAM || matches!(*self.executor, Executor::Inline) {
            return;
        }
        let d = self.dispatcher();
        let ctx = &self.ctx;
        let mut buf = RecvBuf::none();
        let mut taken = 0;
        for _ in 0..ctx.options.backlog.max(1) {
            if !self.executor.has_room()
                || (ctx.options.pool.overload == Overload::Block && ctx.at_connection_limit())
            {
                break;
            }
            match <T::Request as RequestKind>::get_request(ctx, sock, &mut buf) {
                Ok(Polled::Ready(inc)) => {
                    dispatch(&d, inc, sock.as_raw_fd());
                    taken += 1;
                }
                Ok(Polled::Skipped) => {}
                Err(e) if is_per_connection(&e) && e.kind() != io::ErrorKind::WouldBlock => {}
                Ok(Polled::WouldBlock) | Err(_) => break,
            }
        }
        if taken > 0 {
            log::info!(
                "socketserver: closing: took {taken} connection(s) waiting in the listen backlog"
            );
        }
    }

    fn dispatcher(&self) -> Dispatcher<T::Request> {
        Dispatcher {
            ctx: self.ctx.clone(),
            executor: self.executor.clone(),
            factory: self.factory.clone(),
        }
    }

    /// The server takes no connection (at `max_connections`, or the pool's queue full):
    /// warn, at most every 10 s, if connections wait in the listen backlog, saying how
    /// many (Linux; "an unknown number" elsewhere).
    fn note_waiting(&self, sock: &Socket) {
        let backlog = sys::listen_queue_len(sock.as_raw_fd());
        if backlog == Some(0) {
            return;
        }
        let mut last = self.limit_log.lock();
        if last.is_some_and(|t| t.elapsed() < LIMIT_WARNING_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        let waiting = backlog.map_or("an unknown number of".to_string(), |n| n.to_string());
        let ctx = &self.ctx;
        let limit = ctx
            .options
            .max_connections
            .map_or("no limit".to_string(), |n| n.to_string());
        log::warn!(
            "socketserver: {}: {} connection(s) open (max_connections: {limit}; the pool: {} \
             workers at most, Builder::workers), {} queued: {waiting} more connection(s) \
             wait in the listen backlog, not accepted; raise the limits, or serve \
             long-lived clients with the Evented mode",
            ClientAddr::from_sockaddr(&ctx.address.lock()),
            ctx.open.load(Ordering::Relaxed),
            ctx.options.pool.max_workers,
            self.stats().queued,
        );
    }

    fn service_actions(&self) {
        if let Some(hook) = &self.ctx.hooks.service_actions
            && catch_unwind(AssertUnwindSafe(|| {
                hook(&ServerHandle::new(self.ctx.clone()))
            }))
            .is_err()
        {
            log::error!("socketserver: the service_actions hook panicked");
        }
    }
}

/// What every request goes through before it is processed: the stale-socket probe closed,
/// `accepted` counted, `verify_request`, and (streams) the connection limit. `None` if the
/// request was closed here; else the request, and whether it counts as an open connection.
fn admit_counted<R: Request>(d: &Dispatcher<R>, inc: R::Incoming) -> Option<(R::Incoming, bool)> {
    let ctx = &d.ctx;
    // Another server starting on this Unix path, checking whether it is stale: not a
    // client. Closed at once, no handler, counted nowhere.
    if R::STREAM && R::incoming_addr(&inc).is_stale_probe() {
        log::debug!(
            "socketserver: closed the stale-socket probe of a server starting on this path"
        );
        R::close_incoming(inc);
        return None;
    }
    ctx.stats.accepted.inc();
    // Behind a proxy, `verify_request` judges the client the header names: it runs once
    // the header is read, on the thread that runs the request. Peers that may not send one
    // are closed here.
    let proxied = R::STREAM && ctx.options.proxy_protocol.is_on();
    if proxied && !ctx.options.proxy_protocol.trusts(R::incoming_addr(&inc)) {
        let e = io::Error::new(
            io::ErrorKind::PermissionDenied,
            "a peer outside the trusted networks of ProxyProtocol::RequiredFrom",
        );
        ctx.proxy_failed(R::incoming_addr(&inc), &e);
        R::close_incoming(inc);
        return None;
    }
    if !proxied && !ctx.verify(R::incoming_addr(&inc)) {
        // Python's shutdown_request on refusal, exactly once (bpo-26309).
        R::close_incoming(inc);
        return None;
    }
    // Stream connections are counted while open (forking: the children hold them,
    // bounded by max_children instead).
    let counted = R::STREAM && !matches!(*d.executor, Executor::Fork(_));
    if counted {
        if ctx.at_connection_limit() {
            // Only reachable under Overload::Reject: Block stops accepting at the limit.
            ctx.stats.rejected.inc();
            let addr = R::incoming_addr(&inc);
            ctx.log_rejected(addr, "max_connections reached");
            R::close_incoming(inc);
            return None;
        }
        ctx.open.fetch_add(1, Ordering::SeqCst);
    }
    Some((inc, counted))
}

/// `verify_request`, then `process_request` in the server's mode.
pub(super) fn dispatch<R: Request>(d: &Dispatcher<R>, inc: R::Incoming, listener: RawFd) {
    let (ctx, factory) = (&d.ctx, &d.factory);
    let Some((inc, counted)) = admit_counted(d, inc) else {
        return;
    };
    match &*d.executor {
        Executor::Inline => {
            pipeline::process(ctx, &**factory, inc, Disposition::Run);
            if counted {
                ctx.release_connection();
            }
        }
        #[cfg(unix)]
        Executor::Fork(forker) => {
            // The child closes the descriptors it must not use: the waker, and a stream
            // server's listener (a datagram server's socket is the reply socket).
            let waker = ctx.control.waker.fd();
            let close: &[RawFd] = if R::STREAM {
                &[listener, waker]
            } else {
                &[waker]
            };
            forker.spawn(ctx, &**factory, inc, close);
        }
        Executor::Reactor(reactor) => {
            let handler = catch_unwind(AssertUnwindSafe(|| factory.new_message_handler()));
            let result = match (handler, R::into_stream(inc)) {
                (Ok(Some(h)), Ok((sock, addr))) => reactor
                    .register(ctx, sock, addr.clone(), h)
                    .map_err(|e| (addr, HandlerError::Io(e))),
                (Ok(_), Ok((sock, addr))) => {
                    let _ = sock.shutdown(std::net::Shutdown::Write);
                    Err((
                        addr,
                        HandlerError::Io(io::Error::other("not a message handler")),
                    ))
                }
                (Err(p), Ok((sock, addr))) => {
                    let _ = sock.shutdown(std::net::Shutdown::Write);
                    Err((addr, HandlerError::from_panic(p)))
                }
                (_, Err(inc)) => {
                    let addr = R::incoming_addr(&inc).clone();
                    R::close_incoming(inc);
                    Err((addr, HandlerError::Io(io::Error::other("not a stream"))))
                }
            };
            if let Err((addr, e)) = result {
                ctx.report_error(&addr, &e);
                if counted {
                    ctx.release_connection();
                }
            }
        }
        Executor::Pool(pool) => {
            let ctx2 = ctx.clone();
            let factory = factory.clone();
            pool.submit(
                ctx,
                Box::new(move |d| {
                    pipeline::process(&ctx2, &*factory, inc, d);
                    if counted {
                        ctx2.release_connection();
                    }
                }),
            );
        }
    }
}

/// Takes up to `BATCH` pending requests from `sock` and dispatches them — or, given a
/// `reused` request (a synchronous datagram server), runs each datagram on it here; stops
/// early when `stop()` holds, the socket is drained, or (Block policy) there is no room for
/// more. Resource errors back off on `waker` (so a shutdown still takes effect at once).
pub(super) fn take_batch<R: Request>(
    d: &Dispatcher<R>,
    sock: &Arc<Socket>,
    buf: &mut RecvBuf,
    mut reused: Option<&mut R>,
    backoff: &mut Backoff,
    waker: &sys::Waker,
    stop: &dyn Fn() -> bool,
) -> io::Result<()> {
    let ctx = &d.ctx;
    for _ in 0..BATCH {
        // Datagrams already received (a `recvmmsg` batch) are served; nothing new is
        // taken after `shutdown()`.
        if stop() && !buf.has_pending() {
            break;
        }
        let taken = match reused.as_deref_mut() {
            Some(req) => R::next_reused(ctx, sock, buf, req).map(|p| {
                p.map(|addr| {
                    run_reused(d, &addr, req);
                    R::reply_reused(req, Some(buf), ctx);
                })
            }),
            None => R::get_request(ctx, sock, buf)
                .map(|p| p.map(|inc| dispatch(d, inc, sock.as_raw_fd()))),
        };
        match taken {
            Ok(Polled::Ready(())) => {
                backoff.reset();
                if !buf.has_pending() {
                    buf.flush_replies(ctx, sock);
                }
                // Block policy: stop taking requests there is no room for.
                if !d.executor.has_room()
                    || (ctx.options.pool.overload == Overload::Block && ctx.at_connection_limit())
                {
                    break;
                }
            }
            Ok(Polled::Skipped) => {
                if !buf.has_pending() {
                    buf.flush_replies(ctx, sock);
                }
            }
            Ok(Polled::WouldBlock) => break,
            Err(e) if is_per_connection(&e) => {
                ctx.stats.accept_errors.inc();
                if e.kind() == io::ErrorKind::WouldBlock {
                    break;
                }
            }
            Err(e) => {
                ctx.stats.accept_errors.inc();
                let pause = backoff.on_error(&e);
                sys::sleep_or_wake(waker, pause)?;
                break;
            }
        }
    }
    buf.flush_replies(ctx, sock);
    Ok(())
}

/// Runs the datagram just written into `req` (`RequestKind::next_reused`) on this thread:
/// `verify_request`, the handler stages, `complete`. The pipeline catches handler panics;
/// this keeps the thread alive through anything else, as the pool does for its workers.
pub(super) fn run_reused<R: Request>(d: &Dispatcher<R>, addr: &ClientAddr, req: &mut R) {
    let ran = catch_unwind(AssertUnwindSafe(|| {
        pipeline::process_reused(&d.ctx, &*d.factory, addr, req);
    }));
    if ran.is_err() {
        log::error!("socketserver: a request panicked outside its handler");
    }
}

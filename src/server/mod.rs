//! [`Server`]: Python's `BaseServer` / `TCPServer` / `UDPServer` lifecycle, generic over a
//! transport and an execution mode.
//!
//! ```text
//!            Server<T: Transport, M: Mode>
//!               │                 │
//!   Tcp, Udp, UnixStream…     Synchronous, Threading, Forking
//!   (socket, address,          (who runs the handler: the serving
//!    request flavour)           thread, a pool, a child process)
//! ```
//!
//! Methods for the caller: [`bind`](Server::bind) (or [`Builder`]), [`serve_forever`](
//! Server::serve_forever), [`handle_request`](Server::handle_request), [`shutdown`](
//! Server::shutdown), [`server_close`](Server::server_close), [`handle`](Server::handle).
//! Hooks (Python's overridable methods) are closures set on the [`Builder`]:
//! `verify_request`, `handle_error`, `service_actions`, `handle_timeout`.

mod accept;
mod builder;
#[cfg(unix)]
mod handover;
mod receivers;
mod serve;

pub use builder::Builder;

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use socket2::Socket;

use crate::addr::ClientAddr;
use crate::context::{Context, ServerHandle};
use crate::handler::{HandlerFactory, IntoHandler};
use crate::mode::{Evented, Executor, Forking, Mode, Synchronous, Threading};
use crate::transport::{BindAddr, SocketFile, Tcp, Transport, Udp, UnixDatagram, UnixStream};

/// A socket server: a transport `T` ([`Tcp`], [`Udp`], …) served in mode `M`
/// ([`Synchronous`], [`Threading`], …). Usually named through an alias such as
/// [`ThreadingTcpServer`].
///
/// All methods take `&self`, and `Server` is `Send + Sync`, so it can be shared with
/// `std::thread::scope` or an `Arc`; to stop it from a handler or a signal handler, use a
/// [`ServerHandle`]. Dropping the server closes it ([`server_close`](Self::server_close)).
pub struct Server<T: Transport, M: Mode> {
    /// What requests, executors and handles share (handed down to them).
    ctx: Arc<Context>,
    /// Who runs the requests (the context sees it as a `Runtime`).
    executor: Arc<Executor>,
    factory: Arc<dyn HandlerFactory<T::Request>>,
    /// The listening (stream) or receiving (datagram) socket; `None` once closed.
    socket: RwLock<Option<Arc<Socket>>>,
    bound: AtomicBool,
    activated: AtomicBool,
    closed: AtomicBool,
    /// The Unix socket file to remove on close.
    socket_file: Mutex<Option<SocketFile>>,
    /// Datagram receiver threads (threading mode), joined by `server_close`.
    receivers: Mutex<Vec<JoinHandle<()>>>,
    /// When the "waiting in the listen backlog" warning was last logged.
    limit_log: Mutex<Option<Instant>>,
    _marker: PhantomData<fn() -> (T, M)>,
}

/// Python's `TCPServer`: TCP, one request at a time.
pub type TcpServer = Server<Tcp, Synchronous>;
/// Python's `ThreadingTCPServer`: TCP, requests on a bounded worker pool.
pub type ThreadingTcpServer = Server<Tcp, Threading>;
/// Python's `UDPServer`: UDP, one datagram at a time, handled on the serving thread — the
/// fastest choice for handlers that do not block (it matches a plain `recv_from` loop).
pub type UdpServer = Server<Udp, Synchronous>;
/// Python's `ThreadingUDPServer`: UDP, datagrams handled concurrently.
///
/// A datagram is a whole request, so it needs no hand-off: receiver threads take turns
/// (leader/followers). The one that leads receives — `recvmmsg(2)` batches, as
/// [`UdpServer`] does — and runs each handler itself, so short handlers cost what they cost
/// on [`UdpServer`]; replies written to `wfile` leave together (`sendmmsg(2)`). The serving
/// thread watches it: when one handler has run for 2–8 ms (it blocks, or computes), the
/// leadership, with the datagrams already received, goes to another receiver — one waiting
/// (the pool's minimum are kept, default 4) or a new one, up to the pool's maximum
/// ([`Builder::workers`](crate::Builder::workers), default 256). So a handler that blocks
/// never stops the server from receiving for more than a few milliseconds. When every
/// receiver up to the maximum is in a handler, datagrams wait in the socket's receive buffer
/// until one returns ([`Stats::saturated`](crate::Stats::saturated) counts it, and a warning
/// is logged at most every 10 s; the [`Overload`](crate::Overload) policy applies to
/// connections, not datagrams). The worker pool itself serves only
/// [`handle_request`](Server::handle_request), so [`Stats::workers`](crate::Stats::workers)
/// counts no receiver. See the README's Performance section.
pub type ThreadingUdpServer = Server<Udp, Threading>;
/// Python's `UnixStreamServer`.
pub type UnixStreamServer = Server<UnixStream, Synchronous>;
/// Python's `ThreadingUnixStreamServer`.
pub type ThreadingUnixStreamServer = Server<UnixStream, Threading>;
/// Python's `UnixDatagramServer`.
pub type UnixDatagramServer = Server<UnixDatagram, Synchronous>;
/// Python's `ThreadingUnixDatagramServer`.
pub type ThreadingUnixDatagramServer = Server<UnixDatagram, Threading>;
/// TCP served from a readiness loop ([`Evented`]): idle connections hold no thread; the
/// handler is a [`MessageHandler`](crate::MessageHandler), called once per message.
pub type EventedTcpServer = Server<Tcp, Evented>;
/// Unix stream sockets served from a readiness loop ([`Evented`]).
pub type EventedUnixStreamServer = Server<UnixStream, Evented>;
/// Python's `ForkingTCPServer`: a child process per connection.
pub type ForkingTcpServer = Server<Tcp, Forking>;
/// Python's `ForkingUDPServer`: a child process per datagram.
pub type ForkingUdpServer = Server<Udp, Forking>;
/// Python's `ForkingUnixStreamServer`.
pub type ForkingUnixStreamServer = Server<UnixStream, Forking>;
/// Python's `ForkingUnixDatagramServer`.
pub type ForkingUnixDatagramServer = Server<UnixDatagram, Forking>;

/// What [`Server::handle_request`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Handled {
    /// A request was received and processed (or handed to the pool, or refused by
    /// `verify_request`).
    Request,
    /// The timeout passed with no request; the `handle_timeout` hook ran.
    Timeout,
    /// The server is shutting down or closed; nothing was done.
    Shutdown,
}

impl<T: Transport, M: Mode> Server<T, M> {
    /// A builder for this kind of server, with every option at its default.
    pub fn builder() -> Builder<T, M> {
        Builder::new()
    }

    /// Creates a server bound to `addr` and activated (listening), with default options:
    /// Python's `Server(server_address, RequestHandlerClass)`.
    ///
    /// `handler` is a handler constructor (`MyHandler::default`, `|| MyHandler::new(..)`)
    /// or a closure handling each request itself. See [`Builder::bind`] for the steps.
    pub fn bind<A, H, Marker>(addr: A, handler: H) -> io::Result<Self>
    where
        A: BindAddr<T>,
        H: IntoHandler<T::Request, Marker>,
    {
        Builder::new().bind(addr, handler)
    }

    fn from_parts(
        ctx: Arc<Context>,
        executor: Arc<Executor>,
        factory: Arc<dyn HandlerFactory<T::Request>>,
        socket: Socket,
    ) -> Self {
        Server {
            ctx,
            executor,
            factory,
            socket: RwLock::new(Some(Arc::new(socket))),
            bound: AtomicBool::new(false),
            activated: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            socket_file: Mutex::new(None),
            receivers: Mutex::new(Vec::new()),
            limit_log: Mutex::new(None),
            _marker: PhantomData,
        }
    }

    /// Python's `server_bind()`: sets the pre-bind options (`SO_REUSEADDR`, `SO_REUSEPORT`,
    /// `IPV6_V6ONLY`), calls `bind(2)`, then records the bound address (`getsockname(2)`,
    /// so a port of 0 is resolved). Only needed after [`Builder::build_unbound`].
    ///
    /// An error keeps its [`io::ErrorKind`] (`AddrInUse`, `PermissionDenied`…) and names
    /// the address: `bind 127.0.0.1:7017: Address already in use (os error 98)`.
    pub fn server_bind(&self) -> io::Result<()> {
        let sock = self.live_socket()?;
        if self.bound.load(Ordering::SeqCst) {
            return Err(io::Error::other("server_bind: already bound"));
        }
        let addr = self.ctx.address.lock().clone();
        // Every error names the address (`bind 127.0.0.1:7017: Address already in use`) and
        // keeps its `io::ErrorKind`.
        let named = |step: &str, e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("{step} {}: {e}", ClientAddr::from_sockaddr(&addr)),
            )
        };
        self.ctx
            .options
            .before_bind(&sock, &addr)
            .map_err(|e| named("socket options before bind", e))?;
        T::before_bind(&self.ctx.options, &addr).map_err(|e| named("bind", e))?;
        sock.bind(&addr).map_err(|e| named("bind", e))?;
        *self.socket_file.lock() =
            T::after_bind(&self.ctx.options, &addr).map_err(|e| named("bind", e))?;
        *self.ctx.address.lock() = sock.local_addr()?;
        self.bound.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Python's `server_activate()`: `listen(2)` with the configured backlog (stream
    /// transports), and switches the socket to non-blocking mode for the serving loop.
    pub fn server_activate(&self) -> io::Result<()> {
        let sock = self.live_socket()?;
        if <T::Request as crate::request::sealed::RequestKind>::STREAM {
            sock.listen(self.ctx.options.backlog).map_err(|e| {
                let addr = ClientAddr::from_sockaddr(&self.ctx.address.lock());
                io::Error::new(e.kind(), format!("listen on {addr}: {e}"))
            })?;
        }
        sock.set_nonblocking(true)?;
        self.activated.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// The address the server is bound to (Python's `server_address` after bind: port 0 is
    /// resolved to the real port).
    pub fn server_address(&self) -> io::Result<T::Addr> {
        T::to_addr(&self.ctx.address.lock())
    }

    /// The server socket (Python's `socket`), until [`server_close`](Self::server_close).
    /// Use it to read or set socket options, or to poll it yourself.
    pub fn socket(&self) -> Option<Arc<Socket>> {
        self.live()
    }

    /// Python's `fileno()`: the server socket's descriptor, or `None` once closed.
    pub fn fileno(&self) -> Option<RawFd> {
        self.live().map(|s| s.as_raw_fd())
    }

    /// A handle for stopping the server from another thread, a handler or a signal
    /// handler, and for reading its statistics.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle::new(self.ctx.clone())
    }

    /// Python's `shutdown()`; see [`ServerHandle::shutdown`].
    pub fn shutdown(&self) {
        self.ctx.shutdown(true);
    }

    /// A snapshot of the server's counters and gauges.
    pub fn stats(&self) -> crate::Stats {
        self.handle().stats()
    }

    /// Python's `server_close()`, with a bounded drain: stops the serving loop if it runs,
    /// closes the server socket (new connections are refused), closes at once the stream
    /// connections whose handler waits for a new request with nothing received — after a
    /// reply, or 5 s after the accept for one that has sent nothing yet — (as Go's
    /// `Server.Shutdown` closes idle keep-alive connections: see
    /// [`StreamRequest::mark_idle`](crate::StreamRequest::mark_idle); from then on such a
    /// read returns end of file, so keep-alive handlers end after their current request),
    /// then waits for requests already accepted — queued or running — for at most the grace period
    /// ([`Builder::shutdown_grace`], default 10 s). Past it, in-flight connections are shut
    /// down (`shutdown(2)`, so handlers blocked in `read` return), requests still queued are
    /// closed (each one logged and counted in [`Stats::dropped`](crate::Stats::dropped)),
    /// and the workers are joined.
    ///
    /// Returns `true` if everything finished within the grace period. Idempotent.
    pub fn server_close(&self) -> bool {
        self.server_close_timeout(self.ctx.options.shutdown_grace)
    }

    /// [`server_close`](Self::server_close) with an explicit grace period.
    pub fn server_close_timeout(&self, grace: Duration) -> bool {
        let deadline = Instant::now() + grace;
        if self.closed.swap(true, Ordering::SeqCst) {
            return true;
        }
        self.ctx.shutdown(true);
        // Close the listener first: new SYNs get RST instead of waiting in a backlog that
        // will never be served. What the backlog holds already is served.
        if self.activated.load(Ordering::SeqCst)
            && let Some(sock) = self.live()
        {
            self.take_backlog(&sock);
        }
        drop(self.socket.write().take());
        if let Some(file) = self.socket_file.lock().take() {
            file.remove();
        }
        // Go's `Server.Shutdown`: connections waiting for a new request close now; those
        // in the middle of one finish it (and close at their next wait).
        let idle = self.ctx.tracker.drain_idle();
        if idle > 0 {
            log::info!("socketserver: draining: closed {idle} idle connection(s)");
        }
        let receivers_done = receivers::join_all(&self.ctx, &self.receivers, deadline);
        let clean = self.executor.close(&self.ctx, deadline) && receivers_done;
        self.ctx.log_summary();
        clean
    }

    /// The socket, if the server is not closed.
    fn live(&self) -> Option<Arc<Socket>> {
        self.socket.read().clone()
    }

    fn live_socket(&self) -> io::Result<Arc<Socket>> {
        self.live()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "the server is closed"))
    }
}

impl<T: Transport, M: Mode> Drop for Server<T, M> {
    fn drop(&mut self) {
        self.server_close();
    }
}

impl<T: Transport, M: Mode> fmt::Debug for Server<T, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("address", &self.ctx.address.lock())
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .field("options", &self.ctx.options)
            .finish_non_exhaustive()
    }
}

//! [`Builder`]: every server option, named, documented with its default and the socket
//! option or syscall behind it.

#[cfg(unix)]
mod activation;

use std::any::Any;
use std::io;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Server;
use crate::addr::ClientAddr;
use crate::context::{Context, Hooks, Runtime, ServerHandle};
use crate::error::HandlerError;
use crate::framing::MessageFraming;
use crate::handler::IntoHandler;
use crate::mode::Mode;
use crate::options::{Options, Overload, PoolConfig};
use crate::transport::{BindAddr, Transport};

#[cfg(feature = "tls")]
mod tls;

/// Configures and creates a [`Server`]. Obtain one with [`Server::builder`].
///
/// ```no_run
/// use std::time::Duration;
/// use socketserver::{StreamRequest, ThreadingTcpServer};
///
/// let _server = ThreadingTcpServer::builder()
///     .workers(8, 64)
///     .read_timeout(Some(Duration::from_secs(10)))
///     .bind("127.0.0.1:9000", |req: &mut StreamRequest| {
///         std::io::copy(&mut req.rfile, &mut req.wfile).map(drop)
///     })?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Builder<T: Transport, M: Mode> {
    options: Options,
    hooks: Hooks,
    state: Option<(Arc<dyn Any + Send + Sync>, &'static str)>,
    _marker: PhantomData<fn() -> (T, M)>,
}

impl<T: Transport, M: Mode> std::fmt::Debug for Builder<T, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("options", &self.options)
            .field("hooks", &self.hooks)
            .finish_non_exhaustive()
    }
}

impl<T: Transport, M: Mode> Default for Builder<T, M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Transport, M: Mode> Builder<T, M> {
    /// A builder with every option at its default.
    pub fn new() -> Self {
        Builder {
            options: Options::default(),
            hooks: Hooks::default(),
            state: None,
            _marker: PhantomData,
        }
    }

    /// Creates the server, binds and activates it: Python's constructor with
    /// `bind_and_activate=True`. The steps:
    ///
    /// 1. resolve `addr` and take the first address; its family picks IPv4 or IPv6;
    /// 2. create the socket (`socket(2)` with `SOCK_CLOEXEC`);
    /// 3. [`server_bind`](Server::server_bind): `SO_REUSEADDR` (default on, Unix),
    ///    `SO_REUSEPORT` (opt-in), `IPV6_V6ONLY` (set explicitly), buffer sizes, `bind(2)`,
    ///    `getsockname(2)`;
    /// 4. [`server_activate`](Server::server_activate): `listen(2)` with the backlog
    ///    (stream transports), non-blocking mode.
    ///
    /// On any error the socket is closed (no descriptor leaks: Python's bpo-22435).
    pub fn bind<A, H, Marker>(self, addr: A, handler: H) -> io::Result<Server<T, M>>
    where
        A: BindAddr<T>,
        H: IntoHandler<T::Request, Marker>,
    {
        let server = self.build_unbound(addr, handler)?;
        server.server_bind()?;
        server.server_activate()?;
        Ok(server)
    }

    /// Creates the server's socket without binding it: Python's `bind_and_activate=False`.
    /// Set options on [`Server::socket`], then call [`Server::server_bind`] and
    /// [`Server::server_activate`].
    pub fn build_unbound<A, H, Marker>(self, addr: A, handler: H) -> io::Result<Server<T, M>>
    where
        A: BindAddr<T>,
        H: IntoHandler<T::Request, Marker>,
    {
        let addr = addr.to_sock_addr()?;
        let socket = self.options.new_socket(&addr, T::socket_type())?;
        self.make(socket, addr, handler)
    }

    /// Adopts a socket that is already bound — and listening, for stream transports —
    /// instead of creating one: systemd socket activation (fd 3), a listener inherited
    /// from a parent (see [`Prefork`](crate::prefork::Prefork)), or one configured by hand.
    /// The bind-time options of this builder (backlog, `reuse_address`, `reuse_port`,
    /// `dual_stack`, buffer sizes) are not applied: set them on the socket. The socket is
    /// switched to non-blocking mode. Its type, family and listening state must fit the
    /// transport (see [`from_passed`](Self::from_passed)), else
    /// [`io::ErrorKind::InvalidInput`].
    pub fn from_socket<H, Marker>(
        self,
        socket: socket2::Socket,
        handler: H,
    ) -> io::Result<Server<T, M>>
    where
        H: IntoHandler<T::Request, Marker>,
    {
        let addr = socket.local_addr()?;
        #[cfg(unix)]
        activation::check_socket::<T>(&socket)?;
        socket.set_nonblocking(true)?;
        let server = self.make(socket, addr, handler)?;
        server.bound.store(true, Ordering::SeqCst);
        server.activated.store(true, Ordering::SeqCst);
        Ok(server)
    }

    fn make<H, Marker>(
        self,
        socket: socket2::Socket,
        addr: socket2::SockAddr,
        handler: H,
    ) -> io::Result<Server<T, M>>
    where
        H: IntoHandler<T::Request, Marker>,
    {
        #[cfg(feature = "tls")]
        if self.options.tls.is_some()
            && !<T::Request as crate::request::sealed::RequestKind>::STREAM
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "TLS is for stream transports (TCP, Unix stream); DTLS is not supported",
            ));
        }
        let executor = Arc::new(M::executor(&self.options)?);
        let factory = handler.into_factory();
        if matches!(*executor, crate::mode::Executor::Reactor(_)) {
            if !<T::Request as crate::request::sealed::RequestKind>::STREAM {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the evented mode serves stream transports only (TCP, Unix stream)",
                ));
            }
            if !factory.handles_messages() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the evented mode runs MessageHandler handlers (one per connection, \
                     called per message); a StreamRequestHandler needs Threading",
                ));
            }
        }
        let mut options = self.options;
        if matches!(*executor, crate::mode::Executor::Pool(_))
            && <T::Request as crate::request::sealed::RequestKind>::STREAM
        {
            if !options.max_connections_set {
                options.max_connections = Some(options.pool.max_workers);
            }
            if let Some(warning) = check_stream_pool(&options) {
                log::warn!("socketserver: {warning}");
            }
        }
        let runtime: Arc<dyn Runtime> = executor.clone();
        let ctx = Context::new(options, self.hooks, self.state, addr, runtime)?;
        Ok(Server::from_parts(Arc::new(ctx), executor, factory, socket))
    }

    // ----- socket options -------------------------------------------------------------

    /// `SO_REUSEADDR` on the server socket, before `bind(2)`. Default: `true` on Unix (a
    /// restarted server must not fail with "Address already in use" while old connections
    /// sit in `TIME_WAIT`); Python's default is `false` (`allow_reuse_address`).
    pub fn reuse_address(mut self, on: bool) -> Self {
        self.options.reuse_address = on;
        self
    }

    /// `SO_REUSEPORT` on the server socket, before `bind(2)`: several sockets (processes)
    /// may bind the same address and port, and Linux spreads connections across them.
    /// Default: `false` (an accidental second instance would silently share the port).
    /// Python's `allow_reuse_port`.
    pub fn reuse_port(mut self, on: bool) -> Self {
        self.options.reuse_port = on;
        self
    }

    /// The `listen(2)` backlog: connections the kernel queues before `accept`. Default
    /// 1024 (Python's `request_queue_size` is 5; the kernel caps it at `somaxconn`).
    pub fn backlog(mut self, backlog: i32) -> Self {
        self.options.backlog = backlog;
        self
    }

    /// For an IPv6 address such as `[::]`: `true` also accepts IPv4 clients (as
    /// IPv4-mapped addresses) by clearing `IPV6_V6ONLY`. Default `false`: `IPV6_V6ONLY` is
    /// set explicitly, because platform defaults differ.
    pub fn dual_stack(mut self, on: bool) -> Self {
        self.options.dual_stack = on;
        self
    }

    /// `SO_RCVTIMEO` on each accepted socket: a read waiting longer fails with
    /// [`io::ErrorKind::TimedOut`] and a [`TimeoutError`](crate::TimeoutError) saying
    /// `read timed out after 300s (read_timeout)`, ending that request; servers count it in
    /// [`Stats::timeouts`](crate::Stats::timeouts) (not in `errors`) and log it at INFO. Default 300 s; `None` waits forever
    /// (Python's default, `StreamRequestHandler.timeout = None`).
    pub fn read_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.options.read_timeout = timeout;
        self
    }

    /// `SO_SNDTIMEO` on each accepted socket: a client that stops reading its replies
    /// releases the worker after this long (the send fails with
    /// [`io::ErrorKind::TimedOut`], `write timed out after 30s (write_timeout)`). Default 30 s; `None` waits forever.
    pub fn write_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.options.write_timeout = timeout;
        self
    }

    /// `TCP_NODELAY` on each accepted TCP socket (Nagle's algorithm off, so small replies
    /// leave at once). Default `true`; Python's `disable_nagle_algorithm` defaults to
    /// `false`.
    pub fn nodelay(mut self, on: bool) -> Self {
        self.options.nodelay = on;
        self
    }

    /// `SO_KEEPALIVE` with `TCP_KEEPIDLE` = `idle` on each accepted TCP socket, so dead
    /// peers are detected. Default `None` (off).
    pub fn keepalive(mut self, idle: Option<Duration>) -> Self {
        self.options.keepalive = idle;
        self
    }

    /// `SO_SNDBUF` on the server socket (inherited by accepted sockets). Default: the
    /// kernel's.
    pub fn send_buffer_size(mut self, bytes: usize) -> Self {
        self.options.send_buffer_size = Some(bytes);
        self
    }

    /// `SO_RCVBUF` on the server socket (inherited by accepted sockets). Default: the
    /// kernel's.
    pub fn recv_buffer_size(mut self, bytes: usize) -> Self {
        self.options.recv_buffer_size = Some(bytes);
        self
    }

    // ----- Unix-socket options -----------------------------------------------------------

    /// Permissions (`chmod(2)`) of a Unix server's socket file, set right after `bind(2)`,
    /// e.g. `0o660` to admit a group. Default: the process umask decides.
    pub fn unix_mode(mut self, mode: u32) -> Self {
        self.options.unix_mode = Some(mode);
        self
    }

    /// Before binding a Unix socket path: if a socket file is there and nobody accepts
    /// connections on it (`connect(2)` → `ECONNREFUSED`), remove it. Default `true`. A live
    /// server's socket, and any file that is not a socket, are never removed.
    pub fn unix_remove_stale(mut self, on: bool) -> Self {
        self.options.unix_remove_stale = on;
        self
    }

    /// Remove the socket file on `server_close` (only if it is still the one this server
    /// bound). Default `true`; Python leaves it behind.
    pub fn unix_unlink_on_close(mut self, on: bool) -> Self {
        self.options.unix_unlink_on_close = on;
        self
    }

    // ----- limits (stream transports) ---------------------------------------------------

    /// The most connections open at once: accepted and not yet closed, queued or running.
    /// At the limit the [`overload`](Self::overload) policy applies: `Block` stops
    /// accepting until one closes (the kernel backlog holds the rest); `Reject` accepts
    /// and closes at once, logs (at most once a second) and counts it in
    /// [`Stats::rejected`](crate::Stats::rejected).
    ///
    /// Default: in threading mode the pool's maximum of [`workers`](Self::workers) (256),
    /// so that every accepted connection has a worker; at the limit connections wait in
    /// the kernel's listen backlog, not accepted, and a warning (at most every 10 s) says
    /// how many wait there (Linux: `TCP_INFO` on the listener). In the other modes `None`:
    /// one at a time in synchronous mode, `max_children` in forking mode (where this limit
    /// does not apply), in evented mode, where an idle connection holds no thread, the descriptor limit
    /// (`EMFILE` backs the accept loop off; see [`raise_fd_limit`](crate::raise_fd_limit)).
    /// `Some(n)` above the pool's maximum in threading mode lets up to `n - max` accepted
    /// connections wait in the queue for a worker — fine for short requests, starvation
    /// for long-lived clients — so building such a server logs one warning naming the
    /// knobs; `None` leaves only the queue as the bound.
    pub fn max_connections(mut self, n: Option<usize>) -> Self {
        self.options.max_connections = n.map(|n| n.max(1));
        self.options.max_connections_set = true;
        self
    }

    /// A whole-connection deadline: a connection still open this long after it was
    /// accepted is shut down (`shutdown(2)`), whatever it is doing — the defence against
    /// clients that trickle a byte at a time to hold a worker forever (slowloris), which a
    /// read timeout alone does not stop. Enforced by one watchdog thread per server,
    /// within a quarter of the deadline; counted in
    /// [`Stats::deadline_expired`](crate::Stats::deadline_expired). Default `None`. Not
    /// enforced in forking mode (the children own the connections).
    pub fn connection_deadline(mut self, deadline: Option<Duration>) -> Self {
        self.options.connection_deadline = deadline;
        self
    }

    /// Stream transports: the capacity of each request's `rfile` buffer (Python's
    /// `StreamRequestHandler.rbufsize`). Default 8 KiB, allocated per connection. Reads of
    /// at least this size bypass it, so bulk transfers that read 64 KiB at a time are not
    /// slowed by it; raise it for handlers that `io::copy` from `rfile` (which reads
    /// through the buffer). At least 1.
    pub fn rbufsize(mut self, bytes: usize) -> Self {
        self.options.rbufsize = bytes.max(1);
        self
    }

    /// Stream transports: the capacity of each request's `wfile` buffer (Python's
    /// `StreamRequestHandler.wbufsize`). Default [`DEFAULT_WBUFSIZE`](crate::DEFAULT_WBUFSIZE),
    /// 8 KiB at most per connection, allocated as replies need it (kept between them). What `wfile` holds is sent
    /// in one `send(2)`/`sendmsg(2)` when it would overflow, on `flush`, before any read of
    /// the connection (`rfile` included), before any unbuffered write through
    /// [`Connection`](crate::Connection), and when the handler returns — so a reply written
    /// in pieces (`writeln!` is two writes) leaves as one TCP segment even with
    /// `TCP_NODELAY` on. `0`: unbuffered, every write sent before it returns (Python's
    /// default, `wbufsize = 0`). A handler that writes and then waits for something other
    /// than its socket (a lock, a channel, a timer) calls `req.wfile.flush()` first.
    pub fn wbufsize(mut self, bytes: usize) -> Self {
        self.options.wbufsize = bytes;
        self
    }

    // ----- datagram options -------------------------------------------------------------

    /// The largest datagram received whole: the `recvmsg(2)` buffer. A larger datagram is
    /// detected (`MSG_TRUNC`), reported to `handle_error`, counted in
    /// [`Stats::truncated`](crate::Stats::truncated) and dropped — never passed on cut.
    /// Default 65 535 (Python: 8192, truncating silently).
    pub fn max_packet_size(mut self, bytes: usize) -> Self {
        self.options.max_packet_size = bytes.max(1);
        self
    }

    /// Send a reply datagram even when the handler wrote nothing to `wfile` (Python's
    /// behaviour). Default `false`: no empty datagrams.
    pub fn empty_datagram_reply(mut self, on: bool) -> Self {
        self.options.empty_datagram_reply = on;
        self
    }

    // ----- lifecycle ----------------------------------------------------------------------

    /// How long [`handle_request`](Server::handle_request) waits for a request before
    /// calling `handle_timeout` (Python's `timeout`). Default `None`: forever. Not used by
    /// `serve_forever`.
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.options.timeout = timeout;
        self
    }

    /// How long [`server_close`](Server::server_close) (and `Drop`) waits for queued and
    /// in-flight requests before shutting their connections down. Default 10 s.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.options.shutdown_grace = grace;
        self
    }

    /// Wake `serve_forever` at least this often to run `service_actions` (Python's
    /// `poll_interval`). Default: only when a `service_actions` hook is set, every 0.5 s.
    /// It never delays shutdown, which wakes the loop directly.
    pub fn service_interval(mut self, every: Duration) -> Self {
        self.options.service_interval = Some(every);
        self
    }

    // ----- thread pool (threading mode) -----------------------------------------------

    /// Worker threads: at least `min` are kept, up to `max` are started when every worker
    /// is busy. Default 4 and 256. `max` is raised to `min` and both to at least 1.
    pub fn workers(mut self, min: usize, max: usize) -> Self {
        let min = min.max(1);
        self.options.pool.min_workers = min;
        self.options.pool.max_workers = max.max(min);
        self
    }

    /// Requests accepted but waiting for a worker. Default 1024. When it is full, the
    /// [`overload`](Self::overload) policy applies.
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.options.pool.queue_capacity = n.max(1);
        self
    }

    /// What to do when the queue is full. Default [`Overload::Block`].
    pub fn overload(mut self, policy: Overload) -> Self {
        self.options.pool.overload = policy;
        self
    }

    /// How long a worker above the minimum waits for work before exiting. Default 60 s.
    pub fn keep_alive(mut self, idle: Duration) -> Self {
        self.options.pool.keep_alive = idle;
        self
    }

    /// The most idle workers kept above the minimum: a worker that finishes a job, or has
    /// waited another second for one, while this many others wait (and nothing is queued)
    /// exits, so after a burst the pool shrinks back within about a second, even under a
    /// steady trickle of work, which would otherwise keep every worker's keep-alive fresh.
    /// Default 8; at least 1.
    pub fn max_spare_workers(mut self, n: usize) -> Self {
        self.options.pool.max_spare = n.max(1);
        self
    }

    /// Stack size of worker threads. Default: std's (2 MiB, of which only touched pages
    /// use memory).
    pub fn worker_stack_size(mut self, bytes: usize) -> Self {
        self.options.pool.stack_size = Some(bytes);
        self
    }

    /// The whole pool configuration at once.
    pub fn pool(mut self, config: PoolConfig) -> Self {
        self.options.pool = config;
        self
    }

    // ----- message handlers (every stream mode; the evented mode's only kind) ------------

    /// How the byte stream is cut into messages for a
    /// [`MessageHandler`](crate::MessageHandler). Default
    /// [`MessageFraming::Lines`] with lines of at most 64 KiB; `MessageFraming::Frames(
    /// Framing::python())` for the tutorials' `struct.pack('i', n)` headers. A message over
    /// the limit closes its connection (`InvalidData`, reported to `handle_error`).
    pub fn framing(mut self, framing: MessageFraming) -> Self {
        self.options.framing = framing;
        self
    }

    /// Evented mode: the high-water mark of a connection's output queue. Over it, the
    /// connection is not read (and no further message of it is handled) until the peer has
    /// read enough (Netty's `WriteBufferWaterMark`). Default [`DEFAULT_HIGH_WATER`](crate::DEFAULT_HIGH_WATER)
    /// (64 KiB).
    pub fn high_water_mark(mut self, bytes: usize) -> Self {
        self.options.high_water = bytes.max(1);
        self
    }

    /// Evented mode: the most bytes queued for one connection; a push past it
    /// ([`ChannelHandle::push`](crate::ChannelHandle::push)) fails with `WouldBlock`, so a
    /// peer that never reads costs bounded memory. A queue that makes no progress for the
    /// [`write_timeout`](Self::write_timeout) closes the connection. Default
    /// [`DEFAULT_MAX_OUTPUT`](crate::DEFAULT_MAX_OUTPUT) (1 MiB).
    pub fn max_output(mut self, bytes: usize) -> Self {
        self.options.max_output = bytes.max(1);
        self
    }

    /// Evented mode: the longest a connection may hold half a message (a slow-loris
    /// client trickling bytes): past it the connection is closed, without ever having held
    /// a thread. Default `None` (the idle timeout — [`read_timeout`](Self::read_timeout) —
    /// and the [`connection_deadline`](Self::connection_deadline) still apply).
    pub fn message_deadline(mut self, deadline: Option<Duration>) -> Self {
        self.options.message_deadline = deadline;
        self
    }

    // ----- behind a proxy ----------------------------------------------------------------

    /// Stream servers: expect a [PROXY protocol](crate::ProxyProtocol) header (v1 or v2)
    /// at the start of every connection, as HAProxy sends with `send-proxy` /
    /// `send-proxy-v2`. Default [`ProxyProtocol::Off`](crate::ProxyProtocol::Off).
    ///
    /// With [`Required`](crate::ProxyProtocol::Required) or
    /// [`RequiredFrom`](crate::ProxyProtocol::RequiredFrom) the header is read before the
    /// handler runs (classic modes: on the worker, a blocking read; evented mode: between
    /// readiness events, holding no thread), under its own deadline
    /// ([`proxy_header_timeout`](Self::proxy_header_timeout)) and size limit
    /// ([`proxy_header_max`](Self::proxy_header_max)), and without reading a byte past
    /// it. Then `client_address()` is the original client's, and
    /// [`verify_request`](Self::verify_request) runs with that address (on the thread that
    /// runs the request, since the header must be read first). A missing, malformed, late
    /// or untrusted header closes the connection, is counted in
    /// [`Stats::proxy_refused`](crate::Stats::proxy_refused) and logged (WARN, one line a
    /// second); handlers never see it. Datagram servers ignore the option.
    pub fn proxy_protocol(mut self, mode: crate::ProxyProtocol) -> Self {
        self.options.proxy_protocol = mode;
        self
    }

    /// How long a connection has to send its whole PROXY header. Default
    /// [`DEFAULT_PROXY_HEADER_TIMEOUT`](crate::DEFAULT_PROXY_HEADER_TIMEOUT) (5 s): a proxy
    /// sends it at once, so only a stray or hostile client waits that long. In the classic
    /// modes it is the `SO_RCVTIMEO` of the header's reads, and the wait holds what runs
    /// the request: a worker (threading), a child (forking, counted in `max_children`) —
    /// and in synchronous mode the server itself, `shutdown` included. The evented mode
    /// holds no thread while it waits.
    pub fn proxy_header_timeout(mut self, timeout: Duration) -> Self {
        self.options.proxy_header_timeout = timeout;
        self
    }

    /// The longest PROXY header accepted, TLVs included. Default
    /// [`DEFAULT_PROXY_HEADER_MAX`](crate::DEFAULT_PROXY_HEADER_MAX) (4 KiB); at least 232
    /// bytes (a v2 header carrying two Unix paths) and at most 65 551 (the largest a v2
    /// header can declare), whatever is asked. A connection still waiting for the rest of
    /// its header holds only the bytes it has sent.
    pub fn proxy_header_max(mut self, bytes: usize) -> Self {
        self.options.proxy_header_max = bytes;
        self
    }

    // ----- forking mode ------------------------------------------------------------------

    /// Forking mode: the most children running at once (Python's `max_children`). At the
    /// limit the server stops accepting until one exits — checked *before* forking.
    /// Default 40.
    pub fn max_children(mut self, n: usize) -> Self {
        self.options.max_children = n.max(1);
        self
    }

    /// Forking mode: keep the `log` facade on in children. Default `false`: a logger's
    /// lock held by another parent thread at `fork` time would deadlock the child, so
    /// children turn logging off and the default `handle_error` writes to stderr directly.
    /// Turn it on only if no other thread logs, or the logger takes no lock.
    pub fn log_in_children(mut self, on: bool) -> Self {
        self.options.log_in_children = on;
        self
    }

    // ----- hooks (Python's overridable methods) ---------------------------------------

    /// Python's `verify_request(request, client_address)`: called on the serving thread
    /// (in threading mode on a datagram socket: on whichever receiver got the datagram)
    /// for every request; `false` closes it at once (exactly one `shutdown_request`) and
    /// counts it in [`Stats::refused`](crate::Stats::refused). Default: accept all.
    pub fn verify_request(
        mut self,
        hook: impl Fn(&ClientAddr) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.hooks.verify_request = Some(Box::new(hook));
        self
    }

    /// Python's `handle_error(request, client_address)`: called (on the worker) for each
    /// error or panic of a handler. Default: one `log::error!` line with the peer address
    /// and the error.
    pub fn handle_error(
        mut self,
        hook: impl Fn(&ClientAddr, &HandlerError) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.handle_error = Some(Box::new(hook));
        self
    }

    /// Python's `service_actions()`: called by `serve_forever` after every wake-up, and at
    /// least every [`service_interval`](Self::service_interval) (default 0.5 s once a hook
    /// is set). Default: none.
    pub fn service_actions(mut self, hook: impl Fn(&ServerHandle) + Send + Sync + 'static) -> Self {
        self.hooks.service_actions = Some(Box::new(hook));
        self
    }

    /// Python's `handle_timeout()`: called when [`handle_request`](Server::handle_request)
    /// times out. Default: none.
    pub fn handle_timeout(mut self, hook: impl Fn(&ServerHandle) + Send + Sync + 'static) -> Self {
        self.hooks.handle_timeout = Some(Box::new(hook));
        self
    }

    /// Shared state for handlers (Python handlers read attributes of `self.server`),
    /// reachable as [`req.server().state_arc::<S>()`](ServerHandle::state_arc) — an owned
    /// `Arc<S>` that does not borrow the request, so `rfile` and `wfile` stay usable — or
    /// as [`state::<S>()`](ServerHandle::state), a borrow. Use interior mutability
    /// (`Mutex`, atomics) to change it. Default: none.
    ///
    /// In [`Forking`](crate::Forking) mode each child gets its own copy (memory is copied
    /// at `fork`): changes a child makes are not seen by the parent or other children.
    ///
    /// The type is checked at run time: asking for another type is an error naming both
    /// ([`StateError`](crate::StateError)). For state checked at compile time, capture it
    /// in the handler's constructor instead: `move || Kv::new(store.clone())`.
    pub fn state<S: Send + Sync + 'static>(mut self, state: S) -> Self {
        self.state = Some((Arc::new(state), std::any::type_name::<S>()));
        self
    }
}

impl<T: Transport> Builder<T, crate::mode::Threading> {}

/// A threading stream server's limits, checked against each other: `Some(warning)` if
/// accepted connections can wait in the queue for a worker (more open connections allowed
/// than workers), naming the knobs and how many.
fn check_stream_pool(options: &Options) -> Option<String> {
    let pool = &options.pool;
    let allowed = options.max_connections.unwrap_or(usize::MAX);
    if allowed <= pool.max_workers {
        return None;
    }
    let can_wait =
        allowed.min(pool.max_workers.saturating_add(pool.queue_capacity)) - pool.max_workers;
    let limit = match options.max_connections {
        Some(n) => format!("max_connections ({n})"),
        None => "max_connections (None: unbounded)".to_string(),
    };
    Some(format!(
        "{limit} is above the pool's maximum of {} workers (Builder::workers): up to \
         {can_wait} accepted connection(s) can wait in the queue (queue_capacity {}) with no \
         worker, and with long-lived clients they wait until another connection closes; \
         set max_connections to at most {} (the default), raise the workers' maximum, or \
         serve long-lived clients with the Evented mode",
        pool.max_workers, pool.queue_capacity, pool.max_workers
    ))
}

#[allow(dead_code)]
fn _assert_overload_is_reexported(_: Overload) {}

//! # socketserver
//!
//! Python's [`socketserver`](https://docs.python.org/3/library/socketserver.html) for Rust:
//! the same vocabulary and lifecycle — a server, a handler class with `setup` → `handle` →
//! `finish`, `serve_forever`, `shutdown`, `server_close` — with better defaults: a bounded
//! worker pool instead of a thread per request, a shutdown that takes effect at once, a
//! graceful drain with a deadline, timeouts on, accept errors backed off instead of spun on,
//! and no silent UDP truncation. Unix (Linux, macOS, the BSDs).
//!
//! ## Tutorial: an echo server in ten lines
//!
//! ```
//! use std::io::{self, BufRead, Read, Write};
//! use socketserver::{StreamRequest, ThreadingTcpServer};
//!
//! // A handler: Python's `StreamRequestHandler.handle`. `rfile` is buffered; `wfile`
//! // never writes partially and buffers too: it is sent before the next read.
//! fn echo(req: &mut StreamRequest) -> io::Result<()> {
//!     let mut line = String::new();
//!     while req.rfile.read_line(&mut line)? > 0 {
//!         req.wfile.write_all(line.as_bytes())?;
//!         line.clear();
//!     }
//!     Ok(())
//! }
//!
//! // Port 0: the OS picks a free port; `server_address()` tells which.
//! let server = ThreadingTcpServer::bind("127.0.0.1:0", echo)?;
//! let addr = server.server_address()?;
//! let handle = server.handle(); // to stop it from another thread
//!
//! std::thread::scope(|s| {
//!     s.spawn(|| server.serve_forever());
//!
//!     // A client, as in the Python tutorials.
//!     let mut client = std::net::TcpStream::connect(addr)?;
//!     client.write_all(b"hello world\n")?;
//!     client.shutdown(std::net::Shutdown::Write)?;
//!     let mut reply = String::new();
//!     client.read_to_string(&mut reply)?;
//!     assert_eq!(reply, "hello world\n");
//!
//!     handle.shutdown(); // serve_forever returns at once
//!     Ok::<(), io::Error>(())
//! })?;
//! server.server_close(); // drains in-flight requests (also done on drop)
//! # Ok::<(), io::Error>(())
//! ```
//!
//! ## Handlers
//!
//! Like Python, the server builds **one handler per request** with a factory:
//!
//! - a handler type implementing [`StreamRequestHandler`] (TCP, Unix stream) or
//!   [`DatagramRequestHandler`] (UDP, Unix datagram), passed as its constructor:
//!   `ThreadingTcpServer::bind(addr, MyHandler::default)`, or `move || MyHandler::new(db.clone())`
//!   to share state;
//! - or, for stateless handlers, a closure `|req: &mut StreamRequest| -> io::Result<()>`
//!   — with its argument type written out: Rust cannot infer it from the server's bound,
//!   and a mistake (a value `MyHandler::default()` instead of the constructor, a closure
//!   returning `()`) is a compile error that says what to pass ([`IntoHandler`]);
//! - or, for message protocols on streams, a [`MessageHandler`]: one per connection,
//!   called once per complete message (framing set by [`Builder::framing`]), replying
//!   through a [`Channel`] that never blocks. It runs in every stream mode, and is what the
//!   [`Evented`] mode runs.
//!
//! `setup` runs first; if it succeeds, `handle`, then `finish` — even when `handle` fails or
//! panics. Errors and panics go to the `handle_error` hook (default: one `log::error!`
//! line); the worker survives. The request gives `rfile`, `wfile`,
//! [`client_address`](StreamRequest::client_address) and [`server`](StreamRequest::server)
//! (a [`ServerHandle`]: shared state, statistics, `shutdown`).
//!
//! ## Servers: transport × mode
//!
//! | | [`Synchronous`] | [`Threading`] (pool) | [`Forking`] (process per request) |
//! |---|---|---|---|
//! | [`Tcp`] | [`TcpServer`] | [`ThreadingTcpServer`] | [`ForkingTcpServer`] |
//! | [`Udp`] | [`UdpServer`] | [`ThreadingUdpServer`] | [`ForkingUdpServer`] |
//! | [`UnixStream`](transport::UnixStream) | [`UnixStreamServer`] | [`ThreadingUnixStreamServer`] | [`ForkingUnixStreamServer`] |
//! | [`UnixDatagram`](transport::UnixDatagram) | [`UnixDatagramServer`] | [`ThreadingUnixDatagramServer`] | [`ForkingUnixDatagramServer`] |
//!
//! Stream transports also have [`Evented`] servers ([`EventedTcpServer`],
//! [`EventedUnixStreamServer`]): the tutorials' `select`/`epoll` loop, where idle
//! connections wait in epoll/kqueue and hold no thread, and threads run only while a message
//! is handled.
//!
//! All are [`Server<T, M>`](Server); configure one with [`Server::builder`]: every
//! [`Builder`] method names its default and the socket option behind it (backlog 1024,
//! `SO_REUSEADDR` on, `TCP_NODELAY` on, read timeout 300 s, write timeout 30 s, pool of 4 to
//! 256 workers with a queue of 1024, UDP packets up to 65 535 bytes).
//!
//! To use every core with process isolation, [`prefork::Prefork`] runs N supervised worker
//! processes on one port (a shared listener, or `SO_REUSEPORT`).
//!
//! ## Shutdown
//!
//! [`ServerHandle::shutdown`] (from any thread, including a handler) stops `serve_forever`
//! at once; requests already accepted keep being served. [`Server::server_close`] then
//! closes the listener and drains: idle keep-alive connections (a handler waiting for a
//! new request) are closed at once, as Go's `Server.Shutdown` does; queued and running
//! requests are waited for up to the grace period (default 10 s), then their connections
//! are shut down so blocked handlers return. A handler can ask
//! [`StreamRequest::is_draining`].
//! With the `ctrlc` feature, [`shutdown_on_ctrl_c`] wires SIGINT/SIGTERM to this: the
//! first signal drains, a second forces.
//!
//! ## Running under systemd, restarting without refusals
//!
//! [`Builder::from_systemd`] adopts a socket passed by systemd socket activation (checked
//! against the transport); [`systemd::notify_ready`] and [`systemd::notify_stopping`] are
//! `Type=notify` readiness. [`Server::hand_over`] starts a new binary on the same socket and
//! waits for its `READY=1`, so that a restart refuses no client: see the [`systemd`] module.
//!
//! ## Framing
//!
//! TCP is a byte stream: messages need framing (the "sticky packet" problem). The
//! [`framing`] module has length-prefixed frames (including Python's `struct.pack('i', n)`),
//! JSON-header messages and safe file transfer, for handlers and plain clients alike.
//!
//! ## Architecture
//!
//! Layers, bottom to top; each module names only those below it (ARCHITECTURE.md in the
//! repository has a paragraph per layer and the life of one request, and a test enforces
//! the order):
//!
//! | layer | what it holds |
//! |---|---|
//! | [`framing`] | the sticky-packet toolkit; knows nothing of servers |
//! | `sys`, `addr`, [`systemd`], `stats`, `error` | OS calls; [`ClientAddr`]; passed sockets and `sd_notify`; [`Stats`]; [`HandlerError`] |
//! | `tls` | rustls sessions over blocking sockets, [`TlsInfo`], PEM helpers (feature `tls`) |
//! | `options` | every knob and default, [`PoolConfig`] and [`Overload`] included |
//! | `context` | what a running server hands down: options, hooks, counters, the shutdown signal, the connection tracker; [`ServerHandle`] |
//! | `request` | what a handler receives: [`StreamRequest`], [`DatagramRequest`] |
//! | [`transport`] | which socket: [`Tcp`], [`Udp`], [`UnixStream`](transport::UnixStream), [`UnixDatagram`](transport::UnixDatagram) |
//! | `handler` | the handler traits and factories |
//! | [`mode`] | who runs a request: [`Synchronous`], [`Threading`], [`Forking`], [`Evented`]; the request pipeline |
//! | `server` | Python's lifecycle and the serving loop: [`Server`], [`Builder`] |
//! | [`prefork`], `signal` | on top: several processes; Ctrl-C |
//!
//! ## Cargo features
//!
//! - `ctrlc` (off): [`shutdown_on_ctrl_c`]. The library itself never installs a signal
//!   handler or a logger; it logs through the `log` facade.
//! - `tls` (off): TLS through rustls (its `ring` provider) on every stream transport in
//!   every mode: [`Builder::tls`], [`Builder::tls_pem`], [`StreamRequest::tls`],
//!   [`ServerHandle::set_tls_config`]; PEM and mTLS helpers in [`tls`]. Handlers are
//!   unchanged: `rfile`, `wfile` and framing carry plaintext.
#![deny(missing_docs, missing_debug_implementations, rust_2018_idioms)]
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod addr;
mod context;
mod error;
pub mod framing;
mod handler;
pub mod mode;
mod options;
#[cfg(unix)]
pub mod prefork;
mod request;
mod server;
#[cfg(feature = "ctrlc")]
mod signal;
mod stats;
mod sys;
#[cfg(unix)]
pub mod systemd;
#[cfg(feature = "tls")]
pub mod tls;
pub mod transport;

pub use addr::{ClientAddr, PeerCredentials};
pub use context::{ServerHandle, StateError};
pub use error::{HandlerError, TimeoutError};
pub use handler::{
    BaseRequestHandler, Closure, Constructor, DatagramRequestHandler, HandlerFactory, IntoHandler,
    MessageHandler, Messages, StreamRequestHandler,
};
/// A network (`10.0.0.0/8`) of trusted proxies, for [`ProxyProtocol::RequiredFrom`]: the
/// `ipnet` crate's type.
pub use ipnet::IpNet;
pub use mode::{Evented, Forking, Mode, Synchronous, Threading};
#[cfg(feature = "tls")]
pub use options::DEFAULT_TLS_HANDSHAKE_TIMEOUT;
pub use options::{
    DEFAULT_BACKLOG, DEFAULT_HIGH_WATER, DEFAULT_MAX_OUTPUT, DEFAULT_MAX_PACKET_SIZE,
    DEFAULT_PROXY_HEADER_MAX, DEFAULT_PROXY_HEADER_TIMEOUT, DEFAULT_READ_TIMEOUT,
    DEFAULT_SHUTDOWN_GRACE, DEFAULT_WBUFSIZE, DEFAULT_WRITE_TIMEOUT, Overload, PoolConfig,
    ProxyProtocol,
};
pub use request::{
    BlockingStream, Channel, ChannelHandle, Connection, DatagramRequest, ProxyHeader, ReplyBuffer,
    Request, SocketWriter, StreamRequest, Tlv,
};
pub use server::{
    Builder, EventedTcpServer, EventedUnixStreamServer, ForkingTcpServer, ForkingUdpServer,
    ForkingUnixDatagramServer, ForkingUnixStreamServer, Handled, Server, TcpServer,
    ThreadingTcpServer, ThreadingUdpServer, ThreadingUnixDatagramServer, ThreadingUnixStreamServer,
    UdpServer, UnixDatagramServer, UnixStreamServer,
};
#[cfg(feature = "ctrlc")]
pub use signal::{Stoppable, shutdown_on_ctrl_c, shutdown_on_ctrl_c_with};
pub use stats::Stats;
#[cfg(unix)]
pub use sys::raise_fd_limit;
#[cfg(feature = "tls")]
pub use tls::TlsInfo;
pub use transport::{BindAddr, Tcp, Transport, Udp};

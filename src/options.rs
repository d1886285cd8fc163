//! Socket and request options, with defaults better than Python's; applied through socket2.
//! Every knob of every layer lives here, the worker pool's ([`PoolConfig`]) included, so that
//! the layers above read their settings from one place and this module names none of them.

use std::io;
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, TcpKeepalive, Type};

use crate::framing::MessageFraming;

/// Every knob of a server, with its default. Set them through [`Builder`](crate::Builder),
/// whose methods document each one with the option or syscall behind it.
#[derive(Debug, Clone)]
pub struct Options {
    pub(crate) reuse_address: bool,
    pub(crate) reuse_port: bool,
    pub(crate) backlog: i32,
    pub(crate) dual_stack: bool,
    pub(crate) read_timeout: Option<Duration>,
    pub(crate) write_timeout: Option<Duration>,
    pub(crate) nodelay: bool,
    pub(crate) keepalive: Option<Duration>,
    pub(crate) send_buffer_size: Option<usize>,
    pub(crate) recv_buffer_size: Option<usize>,
    pub(crate) max_packet_size: usize,
    pub(crate) rbufsize: usize,
    pub(crate) wbufsize: usize,
    pub(crate) empty_datagram_reply: bool,
    pub(crate) timeout: Option<Duration>,
    pub(crate) shutdown_grace: Duration,
    pub(crate) service_interval: Option<Duration>,
    pub(crate) pool: PoolConfig,
    pub(crate) max_connections: Option<usize>,
    /// Was `max_connections` set (else: it follows the pool's maximum in threading mode)?
    pub(crate) max_connections_set: bool,
    pub(crate) connection_deadline: Option<Duration>,
    pub(crate) max_children: usize,
    pub(crate) log_in_children: bool,
    pub(crate) unix_mode: Option<u32>,
    pub(crate) unix_remove_stale: bool,
    pub(crate) unix_unlink_on_close: bool,
    pub(crate) framing: MessageFraming,
    pub(crate) high_water: usize,
    pub(crate) max_output: usize,
    pub(crate) message_deadline: Option<Duration>,
    pub(crate) max_messages_per_turn: usize,
    pub(crate) proxy_protocol: ProxyProtocol,
    pub(crate) proxy_header_timeout: Duration,
    pub(crate) proxy_header_max: usize,
    /// TLS on accepted connections (feature `tls`): the reloadable configuration.
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<crate::tls::TlsSlot>,
    #[cfg(feature = "tls")]
    pub(crate) tls_handshake_timeout: Duration,
}

/// Default `listen(2)` backlog (Python: 5; std and mio: 128).
pub const DEFAULT_BACKLOG: i32 = 1024;
/// Default read timeout on accepted sockets.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(300);
/// Default write timeout on accepted sockets.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default grace period for draining in-flight requests on close.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Default high-water mark of a message connection's output queue: over it, the
/// connection is not read until the peer catches up (Netty's `WriteBufferWaterMark` high).
pub const DEFAULT_HIGH_WATER: usize = 64 * 1024;
/// Default most bytes queued for one message connection before pushes to it fail.
pub const DEFAULT_MAX_OUTPUT: usize = 1024 * 1024;
/// Default capacity of a stream request's `wfile` buffer ([`Builder::wbufsize`](crate::Builder::wbufsize)).
pub const DEFAULT_WBUFSIZE: usize = 8 * 1024;
/// Default time a connection has to send its whole PROXY protocol header
/// ([`Builder::proxy_header_timeout`](crate::Builder::proxy_header_timeout)).
pub const DEFAULT_PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Default largest PROXY protocol header accepted, TLVs included
/// ([`Builder::proxy_header_max`](crate::Builder::proxy_header_max)).
pub const DEFAULT_PROXY_HEADER_MAX: usize = 4096;
#[cfg(feature = "tls")]
/// Default time a TLS client has to finish its handshake
/// ([`Builder::tls_handshake_timeout`](crate::Builder::tls_handshake_timeout)).
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default largest datagram a datagram server receives whole (Python: 8192).
pub const DEFAULT_MAX_PACKET_SIZE: usize = 65_535;

impl Default for Options {
    fn default() -> Self {
        Options {
            // Unix: restarts must not fail with EADDRINUSE while old connections sit in
            // TIME_WAIT. Windows: SO_REUSEADDR would allow port hijacking, so it stays off.
            reuse_address: cfg!(unix),
            reuse_port: false,
            backlog: DEFAULT_BACKLOG,
            dual_stack: false,
            read_timeout: Some(DEFAULT_READ_TIMEOUT),
            write_timeout: Some(DEFAULT_WRITE_TIMEOUT),
            nodelay: true,
            keepalive: None,
            send_buffer_size: None,
            recv_buffer_size: None,
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            rbufsize: 8 * 1024,
            wbufsize: DEFAULT_WBUFSIZE,
            empty_datagram_reply: false,
            timeout: None,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            service_interval: None,
            pool: PoolConfig::default(),
            max_connections: None,
            max_connections_set: false,
            connection_deadline: None,
            max_children: 40,
            log_in_children: false,
            unix_mode: None,
            unix_remove_stale: true,
            unix_unlink_on_close: true,
            framing: MessageFraming::default(),
            high_water: DEFAULT_HIGH_WATER,
            max_output: DEFAULT_MAX_OUTPUT,
            message_deadline: None,
            max_messages_per_turn: 64,
            proxy_protocol: ProxyProtocol::Off,
            proxy_header_timeout: DEFAULT_PROXY_HEADER_TIMEOUT,
            proxy_header_max: DEFAULT_PROXY_HEADER_MAX,
            #[cfg(feature = "tls")]
            tls: None,
            #[cfg(feature = "tls")]
            tls_handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
        }
    }
}

impl Options {
    /// Creates the server socket for `addr` (close-on-exec, as socket2 always does).
    pub(crate) fn new_socket(&self, addr: &SockAddr, ty: Type) -> io::Result<Socket> {
        let domain = addr.domain();
        let proto = if domain == Domain::UNIX {
            None
        } else if ty == Type::STREAM {
            Some(socket2::Protocol::TCP)
        } else {
            Some(socket2::Protocol::UDP)
        };
        Socket::new(domain, ty, proto)
    }

    /// Options that must be set before `bind(2)`: `SO_REUSEADDR`, `SO_REUSEPORT`,
    /// `IPV6_V6ONLY`, buffer sizes.
    pub(crate) fn before_bind(&self, sock: &Socket, addr: &SockAddr) -> io::Result<()> {
        let domain = addr.domain();
        if domain != Domain::UNIX {
            if self.reuse_address {
                sock.set_reuse_address(true)?;
            }
            if self.reuse_port {
                set_reuse_port(sock)?;
            }
            if domain == Domain::IPV6 {
                // Set explicitly: platform defaults differ (Linux: dual-stack, BSD: v6 only).
                sock.set_only_v6(!self.dual_stack)?;
            }
        }
        if let Some(n) = self.recv_buffer_size {
            sock.set_recv_buffer_size(n)?;
        }
        if let Some(n) = self.send_buffer_size {
            sock.set_send_buffer_size(n)?;
        }
        Ok(())
    }

    /// Per-connection options on an accepted socket: timeouts, `TCP_NODELAY`, keepalive.
    pub(crate) fn configure_accepted(&self, sock: &Socket, inet: bool) -> io::Result<()> {
        // Linux's accept4 never inherits O_NONBLOCK from the listener; BSDs and macOS do.
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        sock.set_nonblocking(false)?;
        if self.read_timeout.is_some() {
            sock.set_read_timeout(self.read_timeout)?;
        }
        if self.write_timeout.is_some() {
            sock.set_write_timeout(self.write_timeout)?;
        }
        if inet {
            if self.nodelay {
                sock.set_tcp_nodelay(true)?;
            }
            if let Some(idle) = self.keepalive {
                sock.set_tcp_keepalive(&TcpKeepalive::new().with_time(idle))?;
            }
        }
        Ok(())
    }
}

#[cfg(all(
    unix,
    not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin"))
))]
fn set_reuse_port(sock: &Socket) -> io::Result<()> {
    sock.set_reuse_port(true)
}

#[cfg(not(all(
    unix,
    not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin"))
)))]
fn set_reuse_port(_sock: &Socket) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "SO_REUSEPORT is not available on this platform",
    ))
}

// ----- the PROXY protocol ---------------------------------------------------------------

/// Whether the connections of a stream server start with a
/// [PROXY protocol](https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt) header
/// (v1 text or v2 binary, told apart by their signatures), which a load balancer in front
/// of the server (HAProxy's `send-proxy` / `send-proxy-v2`, nginx's `proxy_protocol on`,
/// Envoy, AWS NLB) sends first to carry the original client's address.
/// Set by [`Builder::proxy_protocol`](crate::Builder::proxy_protocol); stream servers only.
///
/// Per the specification the header is never guessed at: a listener requires it or does
/// not expect it. With it on, [`StreamRequest::client_address`](crate::StreamRequest::client_address)
/// (and [`Channel::client_address`](crate::Channel::client_address), and the address that
/// `verify_request` judges) is the original client's; the proxy's own address and the
/// original destination stay readable through
/// [`StreamRequest::proxy_header`](crate::StreamRequest::proxy_header).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyProtocol {
    /// No header: the socket's peer is the client. The default.
    #[default]
    Off,
    /// Every connection must start with a valid header, from whatever peer: for a port that
    /// only the proxy can reach (a firewall, a loopback or private address).
    Required,
    /// Every connection must start with a valid header, and only peers in these networks may
    /// connect at all: a connection from anywhere else is closed before it is read (its
    /// header, being anyone's to forge, is never trusted). Unix-socket peers are trusted
    /// (the socket file's permissions decide who connects).
    RequiredFrom(Vec<ipnet::IpNet>),
}

impl ProxyProtocol {
    /// [`RequiredFrom`](Self::RequiredFrom) the networks written as `"10.0.0.0/8"`,
    /// `"127.0.0.1"` (one address), `"::1/128"`.
    ///
    /// # Errors
    /// The first entry that is neither a network nor an address.
    pub fn trusted<I, S>(networks: I) -> Result<ProxyProtocol, ipnet::AddrParseError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let nets = networks
            .into_iter()
            .map(|n| {
                let n = n.as_ref().trim();
                n.parse::<ipnet::IpNet>().or_else(|e| {
                    n.parse::<std::net::IpAddr>()
                        .map(ipnet::IpNet::from)
                        .map_err(|_| e)
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ProxyProtocol::RequiredFrom(nets))
    }

    /// Is a header expected?
    pub(crate) fn is_on(&self) -> bool {
        !matches!(self, ProxyProtocol::Off)
    }

    /// May `peer` connect (and send a header)?
    pub(crate) fn trusts(&self, peer: &crate::addr::ClientAddr) -> bool {
        match (self, peer.as_inet()) {
            (ProxyProtocol::RequiredFrom(nets), Some(a)) => {
                let ip = a.ip().to_canonical();
                nets.iter().any(|n| n.contains(&ip))
            }
            _ => true,
        }
    }
}

// ----- the worker pool (threading mode) ---------------------------------------------

/// What the serving loop does when the pool's queue is full. For stream servers;
/// threading datagram servers have no connection to hold back or refuse: their receivers
/// run the request themselves, and beyond the pool's maximum datagrams wait in the socket's
/// receive buffer (see [`ThreadingUdpServer`](crate::ThreadingUdpServer)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Overload {
    /// Stop accepting until a slot frees: pending connections wait in the kernel's listen
    /// backlog (and beyond it, clients' SYNs are retried by their kernels). Nothing is
    /// refused. The default.
    #[default]
    Block,
    /// Accept and close at once, log (rate-limited) and count it in
    /// [`Stats::rejected`](crate::Stats::rejected). Clients see the connection close.
    Reject,
}

/// Sizing of a threading server's worker pool. Defaults: 4 to 256 workers, a queue of 1024,
/// 60 s keep-alive, at most 8 spare (idle) workers kept above the minimum,
/// [`Overload::Block`].
///
/// With the defaults 256 connections are served at once, one worker each, and a stream
/// server's [`max_connections`](crate::Builder::max_connections) follows the maximum: the
/// 257th connection is not accepted (it waits in the kernel's listen backlog, and a
/// warning says how many wait there) until one closes, rather than being accepted and left
/// in the queue without a word. A classic (threading) server holds a worker for each open
/// connection, idle or not: for more long-lived clients than workers, raise the maximum
/// ([`Builder::workers`](crate::Builder::workers); threads are cheap until they run) or use
/// the [`Evented`](crate::Evented) mode, where idle connections hold no thread.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub(crate) min_workers: usize,
    pub(crate) max_workers: usize,
    pub(crate) queue_capacity: usize,
    pub(crate) keep_alive: Duration,
    pub(crate) max_spare: usize,
    pub(crate) overload: Overload,
    pub(crate) stack_size: Option<usize>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            min_workers: 4,
            max_workers: 256,
            queue_capacity: 1024,
            keep_alive: Duration::from_secs(60),
            max_spare: 8,
            overload: Overload::Block,
            stack_size: None,
        }
    }
}

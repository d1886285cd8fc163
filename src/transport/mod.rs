//! Transports: which socket a server listens on. Each is a marker type naming the socket
//! type, the address it binds, and the request flavour its handlers receive.
//!
//! | transport | socket | bind address | handlers receive |
//! |---|---|---|---|
//! | [`Tcp`] | `SOCK_STREAM`, IPv4/IPv6 | `impl ToSocketAddrs` | [`StreamRequest`] |
//! | [`Udp`] | `SOCK_DGRAM`, IPv4/IPv6 | `impl ToSocketAddrs` | [`DatagramRequest`] |
//! | [`UnixStream`] | `AF_UNIX`, `SOCK_STREAM` | `impl AsRef<Path>` | [`StreamRequest`] |
//! | [`UnixDatagram`] | `AF_UNIX`, `SOCK_DGRAM` | `impl AsRef<Path>` | [`DatagramRequest`] |

mod unix;

pub(crate) use unix::SocketFile;
pub use unix::{UnixDatagram, UnixStream};

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

use socket2::{SockAddr, Type};

use crate::request::{DatagramRequest, Request, StreamRequest};

pub(crate) mod sealed {
    use super::*;
    use crate::options::Options;

    /// The transport-specific steps of Python's `server_bind` / `server_close`.
    pub trait TransportKind {
        /// `SOCK_STREAM` or `SOCK_DGRAM`.
        fn socket_type() -> Type;
        /// `AF_UNIX` (else `AF_INET` or `AF_INET6`).
        fn is_unix() -> bool {
            false
        }
        /// Converts the bound address (`getsockname`) into the public address type.
        fn to_addr(addr: &SockAddr) -> io::Result<<Self as super::Transport>::Addr>
        where
            Self: super::Transport;
        /// Before `bind(2)` (Unix: stale socket files).
        fn before_bind(_options: &Options, _addr: &SockAddr) -> io::Result<()> {
            Ok(())
        }
        /// After `bind(2)` (Unix: permissions; the file to remove on close).
        fn after_bind(_options: &Options, _addr: &SockAddr) -> io::Result<Option<SocketFile>> {
            Ok(None)
        }
    }
}

/// A transport: [`Tcp`], [`Udp`], [`UnixStream`] or [`UnixDatagram`]. Sealed.
pub trait Transport: sealed::TransportKind + Send + Sync + 'static {
    /// What handlers of this transport receive.
    type Request: Request;
    /// The server's own address, as [`Server::server_address`](crate::Server::server_address)
    /// returns it.
    type Addr: Clone + fmt::Debug + fmt::Display + Send + Sync + 'static;
}

/// Addresses a server of transport `T` can bind: `impl ToSocketAddrs` for [`Tcp`] and
/// [`Udp`] (the first resolved address is used; its family picks IPv4 or IPv6); a path for
/// [`UnixStream`] and [`UnixDatagram`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an address a `{T}` server can bind",
    label = "expected an address for `{T}`",
    note = "TCP and UDP take anything `ToSocketAddrs` (`\"127.0.0.1:9000\"`, a `SocketAddr`, `(ip, port)`); Unix transports take a path"
)]
pub trait BindAddr<T: Transport> {
    /// Resolves to the socket address to bind.
    fn to_sock_addr(&self) -> io::Result<SockAddr>;
}

fn first_inet<A: ToSocketAddrs + ?Sized>(a: &A) -> io::Result<SockAddr> {
    a.to_socket_addrs()?
        .next()
        .map(SockAddr::from)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "the address resolved to no socket address",
            )
        })
}

fn inet_addr(addr: &SockAddr) -> io::Result<SocketAddr> {
    addr.as_socket()
        .ok_or_else(|| io::Error::other("the bound address is not an IP address"))
}

/// TCP over IPv4 or IPv6 (Python's `TCPServer` family).
#[derive(Debug, Clone, Copy)]
pub struct Tcp;

/// UDP over IPv4 or IPv6 (Python's `UDPServer` family).
#[derive(Debug, Clone, Copy)]
pub struct Udp;

impl Transport for Tcp {
    type Request = StreamRequest;
    type Addr = SocketAddr;
}

impl sealed::TransportKind for Tcp {
    fn socket_type() -> Type {
        Type::STREAM
    }
    fn to_addr(addr: &SockAddr) -> io::Result<SocketAddr> {
        inet_addr(addr)
    }
}

impl Transport for Udp {
    type Request = DatagramRequest;
    type Addr = SocketAddr;
}

impl sealed::TransportKind for Udp {
    fn socket_type() -> Type {
        Type::DGRAM
    }
    fn to_addr(addr: &SockAddr) -> io::Result<SocketAddr> {
        inet_addr(addr)
    }
}

impl<A: ToSocketAddrs + ?Sized> BindAddr<Tcp> for A {
    fn to_sock_addr(&self) -> io::Result<SockAddr> {
        first_inet(self)
    }
}

impl<A: ToSocketAddrs + ?Sized> BindAddr<Udp> for A {
    fn to_sock_addr(&self) -> io::Result<SockAddr> {
        first_inet(self)
    }
}

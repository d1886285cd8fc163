//! Adopting sockets a service manager passed (systemd socket activation, a hand-over from
//! a predecessor), and the check that an adopted socket fits the server's transport.

use std::io;

use socket2::{Domain, Socket, Type};

use super::Builder;
use crate::handler::IntoHandler;
use crate::mode::Mode;
use crate::server::Server;
use crate::systemd::{self, PassedSocket, SocketKind};
use crate::transport::Transport;

impl<T: Transport, M: Mode> Builder<T, M> {
    /// Adopts the first socket the service manager passed (descriptor 3; see
    /// [`systemd`](crate::systemd)): systemd socket activation, `systemd-socket-activate`,
    /// or a predecessor's [`hand_over`](Server::hand_over). Checked as
    /// [`from_passed`](Self::from_passed) does. [`io::ErrorKind::NotFound`] if no socket
    /// was passed (or index 0 was taken already): test
    /// [`systemd::is_activated`] first to fall back to [`bind`](Self::bind).
    pub fn from_systemd<H, Marker>(self, handler: H) -> io::Result<Server<T, M>>
    where
        H: IntoHandler<T::Request, Marker>,
    {
        let passed = systemd::take(0)?.ok_or_else(|| not_passed("at index 0 (fd 3)"))?;
        self.from_passed(passed, handler)
    }

    /// Adopts the passed socket named `name` in `LISTEN_FDNAMES` (a `.socket` unit's
    /// `FileDescriptorName=`, by default the unit's name), for a service given several.
    /// [`io::ErrorKind::NotFound`] if there is none of that name left.
    pub fn from_systemd_named<H, Marker>(self, name: &str, handler: H) -> io::Result<Server<T, M>>
    where
        H: IntoHandler<T::Request, Marker>,
    {
        let passed =
            systemd::take_named(name)?.ok_or_else(|| not_passed(&format!("named {name:?}")))?;
        self.from_passed(passed, handler)
    }

    /// Adopts one passed socket, as [`from_socket`](Self::from_socket) does, after checking
    /// that it fits this server's transport: its type (`SO_TYPE`: `SOCK_STREAM` for
    /// [`Tcp`](crate::Tcp) and [`UnixStream`](crate::transport::UnixStream), `SOCK_DGRAM` for the
    /// others), its family (`SO_DOMAIN`: `AF_INET`/`AF_INET6` or `AF_UNIX`) and, for
    /// stream transports, that it listens (`SO_ACCEPTCONN`). A mismatch is
    /// [`io::ErrorKind::InvalidInput`] naming the socket, what it is and what was expected:
    /// `passed socket 0 (fd 3, name "echo.socket": a UDP socket (SOCK_DGRAM, AF_INET) on
    /// 127.0.0.1:9000) does not fit this TCP server, which needs a listening TCP socket
    /// (SOCK_STREAM, AF_INET or AF_INET6)…`. A Unix socket's file belongs to whoever
    /// created it and is not removed on close.
    pub fn from_passed<H, Marker>(
        self,
        passed: PassedSocket,
        handler: H,
    ) -> io::Result<Server<T, M>>
    where
        H: IntoHandler<T::Request, Marker>,
    {
        check_fits::<T>(passed.to_string(), passed.kind())?;
        log::debug!("socketserver: adopting {passed}");
        self.from_socket(passed.into_socket(), handler)
    }
}

fn not_passed(which: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "socket activation: no socket passed {which} (LISTEN_FDS unset, LISTEN_PID \
             another process's, or taken already)"
        ),
    )
}

/// Checks that `socket` fits transport `T` (for [`Builder::from_socket`]).
pub(super) fn check_socket<T: Transport>(socket: &Socket) -> io::Result<()> {
    let kind = SocketKind::of(socket);
    check_fits::<T>(format!("the socket ({kind})"), kind)
}

/// `what` (how the socket is named in the error) is a socket of `kind`: does it fit `T`?
fn check_fits<T: Transport>(what: String, kind: SocketKind) -> io::Result<()> {
    let stream = T::socket_type() == Type::STREAM;
    let unix = T::is_unix();
    let family_ok = match kind.domain {
        Some(Domain::UNIX) => unix,
        Some(Domain::IPV4 | Domain::IPV6) => !unix,
        _ => false,
    };
    let type_ok = kind.socket_type == Some(T::socket_type());
    let listening_ok = !stream || kind.listening;
    if family_ok && type_ok && listening_ok {
        return Ok(());
    }
    let (server, needs) = match (unix, stream) {
        (false, true) => (
            "TCP",
            "a listening TCP socket (SOCK_STREAM, AF_INET or AF_INET6)",
        ),
        (false, false) => ("UDP", "a UDP socket (SOCK_DGRAM, AF_INET or AF_INET6)"),
        (true, true) => (
            "Unix stream",
            "a listening Unix stream socket (SOCK_STREAM, AF_UNIX)",
        ),
        (true, false) => (
            "Unix datagram",
            "a Unix datagram socket (SOCK_DGRAM, AF_UNIX)",
        ),
    };
    let hint = match (unix, stream) {
        (false, true) => "ListenStream=PORT or ADDR:PORT",
        (false, false) => "ListenDatagram=PORT or ADDR:PORT",
        (true, true) => "ListenStream=/path",
        (true, false) => "ListenDatagram=/path",
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{what} does not fit this {server} server, which needs {needs}: check the \
             .socket unit ({hint}; Accept=no) or the server's transport"
        ),
    ))
}

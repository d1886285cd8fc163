//! systemd socket activation and readiness: the sockets a service manager passed to this
//! process, and the `sd_notify` messages that tell it how the service is doing.
//!
//! **Socket activation.** systemd (a `.socket` unit), `systemd-socket-activate`, `systemfd`
//! or a predecessor handing over its sockets (see [`Server::hand_over`](crate::Server::hand_over))
//! opens the listening sockets itself and starts the server with them as descriptors 3, 4, …,
//! announced by three environment variables: `LISTEN_FDS` (how many), `LISTEN_PID` (the pid
//! they are meant for: a child that inherits the variables ignores them) and, optionally,
//! `LISTEN_FDNAMES` (their names, `:`-separated: the `FileDescriptorName=` of the socket
//! unit, or the unit's name). See `sd_listen_fds(3)`.
//!
//! The first call of [`is_activated`], [`count`], [`take`], [`take_named`] or [`take_all`]
//! reads the variables once for the whole process
//! (through the `sd-notify` crate), sets `FD_CLOEXEC` on the descriptors (a child started
//! later does not inherit them by accident), and removes the three variables from the
//! environment so that children do not see them either — when that is sound: `remove_var`
//! races with any other thread reading the environment, so the variables are removed only
//! if this process runs a single thread at that moment (Linux: `/proc/self/task`), which
//! is the case when it is called at the start of `main`, before a server or logger starts
//! threads. Otherwise they are left, which is harmless (`LISTEN_PID` names this process
//! only, and the descriptors close on `exec`), and one debug line says so.
//!
//! Each passed socket can be taken once, by its index ([`take`]) or its name
//! ([`take_named`]); [`Builder::from_systemd`](crate::Builder::from_systemd) takes index 0
//! and checks that the socket fits the server's transport.
//!
//! ```no_run
//! use socketserver::{StreamRequest, ThreadingTcpServer};
//!
//! let builder = ThreadingTcpServer::builder();
//! let handler = |req: &mut StreamRequest| std::io::copy(&mut req.rfile, &mut req.wfile).map(drop);
//! // Started by systemd: the passed socket; by hand: bind.
//! let server = if socketserver::systemd::is_activated()? {
//!     builder.from_systemd(handler)?
//! } else {
//!     builder.bind("127.0.0.1:9000", handler)?
//! };
//! socketserver::systemd::notify_ready()?;
//! server.serve_forever()?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! **Readiness** (`Type=notify` services): [`notify_ready`] sends `READY=1`,
//! [`notify_stopping`] `STOPPING=1`, [`notify_status`] a free-form status line, to the
//! socket named by `NOTIFY_SOCKET` — and do nothing when it is not set, so calling them
//! unconditionally is fine. The library never sends them by itself: call `notify_ready`
//! once the server is bound (connections queue from then on) and `notify_stopping` when
//! `serve_forever` returns and the drain starts.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use parking_lot::Mutex;
use socket2::{Domain, Socket, Type};

use crate::sys::activation::clear_env_if_single_threaded;

/// One socket passed by the service manager. Take it with [`take`] or [`take_named`]; a
/// server adopts it with [`Builder::from_passed`](crate::Builder::from_passed) (which checks
/// that its type matches the server's transport), or use [`into_socket`](Self::into_socket).
#[derive(Debug)]
pub struct PassedSocket {
    index: usize,
    name: String,
    socket: Socket,
}

impl PassedSocket {
    /// Its position among the passed sockets: 0 for descriptor 3, 1 for 4, …
    pub fn index(&self) -> usize {
        self.index
    }

    /// Its name from `LISTEN_FDNAMES`, or `"unknown"` when none was given (as
    /// `sd_listen_fds_with_names(3)` says).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its descriptor (3 + [`index`](Self::index)).
    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// What the socket is, read from the kernel (`getsockopt` `SO_TYPE`, `SO_DOMAIN`,
    /// `SO_ACCEPTCONN`; `getsockname(2)`).
    pub fn kind(&self) -> SocketKind {
        SocketKind::of(&self.socket)
    }

    /// The socket itself, to configure or adopt by hand
    /// ([`Builder::from_socket`](crate::Builder::from_socket)).
    pub fn into_socket(self) -> Socket {
        self.socket
    }
}

impl fmt::Display for PassedSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "passed socket {} (fd {}, name {:?}: {})",
            self.index,
            self.fd(),
            self.name,
            self.kind()
        )
    }
}

/// What a socket is, as the kernel says: its type, family, whether it listens, and its
/// address. Its `Display` reads `a listening TCP socket (SOCK_STREAM, AF_INET) on
/// 127.0.0.1:9000`, for error messages and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketKind {
    /// `SO_TYPE`, `None` if it could not be read (not a socket).
    pub socket_type: Option<Type>,
    /// `SO_DOMAIN`, `None` if it could not be read.
    pub domain: Option<Domain>,
    /// `SO_ACCEPTCONN`: `listen(2)` was called on it.
    pub listening: bool,
    /// `getsockname(2)`, printed; empty if it could not be read.
    pub address: String,
}

impl SocketKind {
    /// Reads what `socket` is from the kernel.
    pub fn of(socket: &Socket) -> SocketKind {
        SocketKind {
            socket_type: socket.r#type().ok(),
            domain: socket.domain().ok(),
            listening: socket.is_listener().unwrap_or(false),
            address: socket
                .local_addr()
                .map(|a| crate::addr::ClientAddr::from_sockaddr(&a).to_string())
                .unwrap_or_default(),
        }
    }
}

impl fmt::Display for SocketKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (Some(ty), Some(domain)) = (self.socket_type, self.domain) else {
            return f.write_str("not a socket");
        };
        let ty_name = match ty {
            Type::STREAM => "SOCK_STREAM",
            Type::DGRAM => "SOCK_DGRAM",
            Type::SEQPACKET => "SOCK_SEQPACKET",
            _ => "another type",
        };
        let domain_name = match domain {
            Domain::IPV4 => "AF_INET",
            Domain::IPV6 => "AF_INET6",
            Domain::UNIX => "AF_UNIX",
            _ => "another family",
        };
        let what = match (domain, ty) {
            (Domain::IPV4 | Domain::IPV6, Type::STREAM) => "TCP",
            (Domain::IPV4 | Domain::IPV6, Type::DGRAM) => "UDP",
            (Domain::UNIX, Type::STREAM) => "Unix stream",
            (Domain::UNIX, Type::DGRAM) => "Unix datagram",
            _ => "other",
        };
        let listening = if ty == Type::STREAM {
            if self.listening {
                "a listening "
            } else {
                "a non-listening "
            }
        } else {
            "a "
        };
        write!(f, "{listening}{what} socket ({ty_name}, {domain_name})")?;
        if !self.address.is_empty() {
            write!(f, " on {}", self.address)?;
        }
        Ok(())
    }
}

/// The passed sockets, read once per process; a slot is `None` once taken.
static PASSED: Mutex<Option<Vec<Option<PassedSocket>>>> = Mutex::new(None);

/// Runs `f` on the passed sockets, reading them from the environment on the first call.
fn with_passed<R>(f: impl FnOnce(&mut Vec<Option<PassedSocket>>) -> R) -> io::Result<R> {
    let mut guard = PASSED.lock();
    if guard.is_none() {
        *guard = Some(read_environment()?);
    }
    Ok(f(guard.get_or_insert_with(Vec::new)))
}

fn read_environment() -> io::Result<Vec<Option<PassedSocket>>> {
    // sd-notify checks LISTEN_PID, sets FD_CLOEXEC on each descriptor, and pairs them with
    // LISTEN_FDNAMES ("unknown" when unset).
    let fds = sd_notify::listen_fds_with_names().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("socket activation: LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES: {e}"),
        )
    })?;
    let mut passed = Vec::new();
    for (index, (fd, name)) in fds.enumerate() {
        // SAFETY: the service manager passed this descriptor to this process (LISTEN_PID
        // is ours) and nothing else in it owns it: it is taken from the environment once
        // per process, here, and sd-notify checked that it is open (fcntl F_SETFD).
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        passed.push(Some(PassedSocket {
            index,
            name,
            socket: Socket::from(owned),
        }));
    }
    if !passed.is_empty() {
        let names = ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"];
        if clear_env_if_single_threaded(&names) {
            log::debug!("socketserver: socket activation: LISTEN_* variables cleared");
        } else {
            log::debug!(
                "socketserver: socket activation: LISTEN_* variables left in the \
                 environment (other threads run; LISTEN_PID keeps children from using them)"
            );
        }
    }
    Ok(passed)
}

/// Were sockets passed to this process that are not taken yet? `false` when `LISTEN_FDS`
/// is unset or `LISTEN_PID` names another process. An error if the variables are
/// malformed or a passed descriptor is not open.
pub fn is_activated() -> io::Result<bool> {
    with_passed(|p| p.iter().any(Option::is_some))
}

/// How many sockets were passed (taken or not).
pub fn count() -> io::Result<usize> {
    with_passed(|p| p.len())
}

/// Takes the passed socket at `index` (descriptor 3 + `index`); `None` if there is none
/// or it was taken already.
pub fn take(index: usize) -> io::Result<Option<PassedSocket>> {
    with_passed(|p| p.get_mut(index).and_then(Option::take))
}

/// Takes the first passed socket named `name` in `LISTEN_FDNAMES` (systemd:
/// `FileDescriptorName=`, by default the socket unit's name, e.g. `echo.socket`); `None`
/// if there is none left.
pub fn take_named(name: &str) -> io::Result<Option<PassedSocket>> {
    with_passed(|p| {
        p.iter_mut()
            .find(|s| s.as_ref().is_some_and(|s| s.name == name))
            .and_then(Option::take)
    })
}

/// Takes every passed socket not taken yet, in index order.
pub fn take_all() -> io::Result<Vec<PassedSocket>> {
    with_passed(|p| p.iter_mut().filter_map(Option::take).collect())
}

/// `sd_notify(0, "READY=1")`: the service is up (`Type=notify`: `systemctl start` returns,
/// units ordered after it start; in a [hand-over](crate::Server::hand_over), the old
/// process stops accepting). Does nothing when `NOTIFY_SOCKET` is unset.
pub fn notify_ready() -> io::Result<()> {
    sd_notify::notify(&[sd_notify::NotifyState::Ready])
}

/// `sd_notify(0, "STOPPING=1")`: the service is shutting down (draining). Does nothing
/// when `NOTIFY_SOCKET` is unset.
pub fn notify_stopping() -> io::Result<()> {
    sd_notify::notify(&[sd_notify::NotifyState::Stopping])
}

/// `sd_notify(0, "STATUS=…")`: a one-line status `systemctl status` shows. Does nothing
/// when `NOTIFY_SOCKET` is unset.
pub fn notify_status(status: &str) -> io::Result<()> {
    sd_notify::notify(&[sd_notify::NotifyState::Status(status)])
}

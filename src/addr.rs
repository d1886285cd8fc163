//! Client addresses, one type for every transport.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use socket2::SockAddr;

/// The address of the peer that sent a request: Python's `client_address`.
///
/// One type for every transport, so that one handler serves TCP, UDP and Unix sockets
/// unchanged. `Display` prints `ip:port` for IP peers and the socket path for Unix peers
/// (`(unnamed)` for the usual unbound Unix client, `@name` for a Linux abstract address).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClientAddr {
    /// An IPv4 or IPv6 peer (TCP, UDP).
    Inet(SocketAddr),
    /// A Unix-domain peer: its path if it bound one (`None` for unnamed sockets, the usual
    /// case for stream clients).
    Unix(Option<PathBuf>),
    /// A Linux abstract-namespace Unix peer (the name without the leading NUL byte).
    UnixAbstract(Vec<u8>),
}

impl ClientAddr {
    /// The IP address and port, for IP peers.
    pub fn as_inet(&self) -> Option<SocketAddr> {
        match self {
            ClientAddr::Inet(a) => Some(*a),
            _ => None,
        }
    }

    /// Converts a raw socket address as returned by `accept(2)` / `recvfrom(2)`.
    pub(crate) fn from_sockaddr(addr: &SockAddr) -> ClientAddr {
        if let Some(a) = addr.as_socket() {
            return ClientAddr::Inet(a);
        }
        if let Some(p) = addr.as_pathname() {
            return ClientAddr::Unix(Some(p.to_path_buf()));
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Some(name) = addr.as_abstract_namespace() {
            return ClientAddr::UnixAbstract(name.to_vec());
        }
        ClientAddr::Unix(None)
    }
}

/// The prefix of the address a starting Unix stream server's stale-socket probe binds
/// (Linux: an abstract name; elsewhere a file name in the temporary directory), so that a
/// live server of this crate recognises the probe and closes it without a handler.
pub(crate) const PROBE_PREFIX: &str = "socketserver-stale-probe-";

impl ClientAddr {
    /// Is this the stale-socket probe of another server starting on the same path?
    pub(crate) fn is_stale_probe(&self) -> bool {
        match self {
            ClientAddr::UnixAbstract(name) => name.starts_with(PROBE_PREFIX.as_bytes()),
            ClientAddr::Unix(Some(p)) => p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(PROBE_PREFIX)),
            _ => false,
        }
    }
}

/// A Unix-domain peer's credentials, as the kernel recorded them when it connected:
/// [`StreamRequest::peer_credentials`](crate::StreamRequest::peer_credentials).
/// Linux: `SO_PEERCRED`; macOS and the BSDs: `getpeereid(3)`, which gives no pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct PeerCredentials {
    /// The peer's effective user id.
    pub uid: u32,
    /// The peer's effective group id.
    pub gid: u32,
    /// The peer's process id (Linux only).
    pub pid: Option<i32>,
}

impl fmt::Display for PeerCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "uid {} gid {}", self.uid, self.gid)?;
        if let Some(pid) = self.pid {
            write!(f, " pid {pid}")?;
        }
        Ok(())
    }
}

impl From<SocketAddr> for ClientAddr {
    fn from(a: SocketAddr) -> Self {
        ClientAddr::Inet(a)
    }
}

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientAddr::Inet(a) => write!(f, "{a}"),
            ClientAddr::Unix(Some(p)) => write!(f, "{}", p.display()),
            ClientAddr::Unix(None) => f.write_str("(unnamed)"),
            ClientAddr::UnixAbstract(n) => write!(f, "@{}", String::from_utf8_lossy(n)),
        }
    }
}

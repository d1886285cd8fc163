//! Unix-domain transports: [`UnixStream`] and [`UnixDatagram`] (Python's
//! `UnixStreamServer` / `UnixDatagramServer` family).
//!
//! The socket file is handled with more care than Python's (which never removes it, so a
//! restart fails with `EADDRINUSE`):
//!
//! - bind refuses to clobber a path that exists and is not a socket;
//! - a socket file left by a dead server (nobody accepts a connection on it) is removed
//!   first ([`Builder::unix_remove_stale`](crate::Builder::unix_remove_stale), default on);
//!   a live server's socket is never removed (`EADDRINUSE`);
//! - the file's permissions can be set ([`Builder::unix_mode`](crate::Builder::unix_mode));
//! - `server_close` removes the file, if it is still the one this server created (same
//!   device and inode).
//!
//! A path whose first byte is NUL (`"\0name"`) binds a Linux abstract-namespace address: no
//! file at all.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use socket2::{SockAddr, Type};

use super::{BindAddr, Transport, sealed};
use crate::addr::ClientAddr;
use crate::options::Options;
use crate::request::{DatagramRequest, StreamRequest};

/// Unix-domain stream sockets (`AF_UNIX`, `SOCK_STREAM`): Python's `UnixStreamServer`.
#[derive(Debug, Clone, Copy)]
pub struct UnixStream;

/// Unix-domain datagram sockets (`AF_UNIX`, `SOCK_DGRAM`): Python's `UnixDatagramServer`.
/// Replies reach only clients that bound a path of their own.
#[derive(Debug, Clone, Copy)]
pub struct UnixDatagram;

impl Transport for UnixStream {
    type Request = StreamRequest;
    type Addr = ClientAddr;
}

impl Transport for UnixDatagram {
    type Request = DatagramRequest;
    type Addr = ClientAddr;
}

/// The socket file a Unix server created, to remove it on close only if it is still ours.
#[derive(Debug, Clone)]
pub struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

macro_rules! unix_kind {
    ($t:ty, $ty:expr) => {
        impl sealed::TransportKind for $t {
            fn socket_type() -> Type {
                $ty
            }
            fn is_unix() -> bool {
                true
            }
            fn to_addr(addr: &SockAddr) -> io::Result<ClientAddr> {
                Ok(ClientAddr::from_sockaddr(addr))
            }
            fn before_bind(options: &Options, addr: &SockAddr) -> io::Result<()> {
                prepare_path(options, addr, $ty)
            }
            fn after_bind(options: &Options, addr: &SockAddr) -> io::Result<Option<SocketFile>> {
                socket_file(options, addr)
            }
        }

        impl<P: AsRef<Path> + ?Sized> BindAddr<$t> for P {
            fn to_sock_addr(&self) -> io::Result<SockAddr> {
                SockAddr::unix(self.as_ref())
            }
        }
    };
}

unix_kind!(UnixStream, Type::STREAM);
unix_kind!(UnixDatagram, Type::DGRAM);

/// Before `bind(2)`: refuse to clobber a non-socket; remove a stale socket file.
fn prepare_path(options: &Options, addr: &SockAddr, ty: Type) -> io::Result<()> {
    let Some(path) = addr.as_pathname() else {
        return Ok(()); // abstract or unnamed: no file
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket: refusing to replace it",
                path.display()
            ),
        ));
    }
    if !options.unix_remove_stale {
        return Ok(()); // bind reports EADDRINUSE
    }
    // Stale if nobody answers: connect fails with ECONNREFUSED. A stream probe binds an
    // address a live server of this crate recognises, so that it is closed unhandled and
    // counted nowhere rather than served as a client.
    let probe = socket2::Socket::new(socket2::Domain::UNIX, ty, None)?;
    let _probe_file = (ty == Type::STREAM).then(|| bind_probe(&probe)).flatten();
    match probe.connect(addr) {
        Ok(()) => Ok(()), // alive: leave it, bind reports EADDRINUSE
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
            log::info!(
                "socketserver: removing stale socket file {}",
                path.display()
            );
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        }
        Err(_) => Ok(()),
    }
}

/// Binds the stale-socket probe to a recognisable address (see
/// `ClientAddr::is_stale_probe`): Linux, an abstract name; elsewhere a file in the temporary
/// directory, removed when the returned guard drops. `None` if it cannot (the probe then
/// connects unbound, as any client would).
fn bind_probe(probe: &socket2::Socket) -> Option<ProbeFile> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "{}{}-{}",
        crate::addr::PROBE_PREFIX,
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let addr = SockAddr::unix(format!("\0{name}")).ok()?;
        probe.bind(&addr).ok()?;
        Some(ProbeFile(None))
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let path = std::env::temp_dir().join(name);
        let addr = SockAddr::unix(&path).ok()?;
        probe.bind(&addr).ok()?;
        Some(ProbeFile(Some(path)))
    }
}

/// The probe's socket file, if it has one; removed on drop.
struct ProbeFile(Option<PathBuf>);

impl Drop for ProbeFile {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// After `bind(2)`: permissions, and the file's identity for removal on close.
fn socket_file(options: &Options, addr: &SockAddr) -> io::Result<Option<SocketFile>> {
    let Some(path) = addr.as_pathname() else {
        return Ok(None);
    };
    if let Some(mode) = options.unix_mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    let meta = std::fs::symlink_metadata(path)?;
    Ok(options.unix_unlink_on_close.then(|| SocketFile {
        path: path.to_path_buf(),
        dev: meta.dev(),
        ino: meta.ino(),
    }))
}

impl SocketFile {
    /// Removes the file if it is still the socket this server bound.
    pub(crate) fn remove(&self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if m.dev() == self.dev && m.ino() == self.ino => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    log::warn!("socketserver: cannot remove {}: {e}", self.path.display());
                }
            }
            _ => {}
        }
    }
}

//! The stream flavour: Python's `StreamRequestHandler` state (`connection`, `rfile`, `wfile`).

use std::io::{self, BufReader, IoSlice, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use socket2::Socket;

use super::sealed::RequestKind;
use super::{Polled, RecvBuf};
use crate::addr::ClientAddr;
use crate::context::{Context, Registration, ServerHandle};

/// An accepted connection: a cheap, clonable handle (`Arc`) to the socket.
///
/// `Read` and `Write` are implemented for `Connection` and `&Connection`, so a clone can be
/// handed to another thread (say, a chat room that broadcasts to every member) while the
/// handler keeps reading. The socket is closed when the request ends *and* the last clone is
/// dropped; [`shutdown`](Connection::shutdown) ends it for every clone at once.
#[derive(Debug, Clone)]
pub struct Connection(Arc<Socket>);

impl Connection {
    /// The underlying socket2 socket: every socket option, `peer_addr`, `set_read_timeout`….
    pub fn socket(&self) -> &Socket {
        &self.0
    }

    /// `shutdown(2)` on the socket: `Shutdown::Write` sends FIN (the peer reads EOF),
    /// `Shutdown::Read`/`Both` also make blocked reads here return.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.0.shutdown(how)
    }

    /// Writes the whole buffer (`send` until done), like Python's `sendall`.
    pub fn send_all(&self, buf: &[u8]) -> io::Result<()> {
        (&*self.0).write_all(buf)
    }
}

impl AsRawFd for Connection {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Retries `op` while it fails with `EINTR`, and only then.
///
/// Accepted sockets carry `SO_RCVTIMEO`/`SO_SNDTIMEO`, and Linux never restarts a `recv` or
/// `send` interrupted by a signal on such a socket, even with `SA_RESTART` (signal(7)). A
/// Ctrl-C handler thread, a profiler or a debugger would otherwise turn into
/// `Interrupted` errors in the middle of a request. Each retry starts the socket's timeout
/// over.
fn retry_interrupted<T>(mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match op() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

/// `recv`, retried on `EINTR` (never fails with [`io::ErrorKind::Interrupted`]).
impl Read for &Connection {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        retry_interrupted(|| (&*self.0).read(buf))
    }
}

/// `recv`, retried on `EINTR` (never fails with [`io::ErrorKind::Interrupted`]).
impl Read for Connection {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

/// `send`/`sendmsg`, retried on `EINTR` (never fails with [`io::ErrorKind::Interrupted`]);
/// a write may still be short.
impl Write for &Connection {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        retry_interrupted(|| (&*self.0).write(buf))
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        retry_interrupted(|| (&*self.0).write_vectored(bufs))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `send`/`sendmsg`, retried on `EINTR` (never fails with [`io::ErrorKind::Interrupted`]);
/// a write may still be short.
impl Write for Connection {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&*self).write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Python's `_SocketWriter`: an unbuffered `wfile` that never writes partially.
///
/// Every `write` sends the whole buffer before returning (retrying on `EINTR` and short
/// sends), so `write` returns `buf.len()` or an error, and no `flush` is needed. A write that
/// cannot complete within the server's write timeout fails with `WouldBlock`/`TimedOut`.
/// Wrap it in a `BufWriter` to coalesce many small writes.
#[derive(Debug)]
pub struct SocketWriter(Connection);

impl SocketWriter {
    /// The connection this writer sends on.
    pub fn connection(&self) -> &Connection {
        &self.0
    }
}

impl Write for SocketWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&self.0).write_all(buf)?;
        Ok(buf.len())
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let mut owned: Vec<IoSlice<'_>> = bufs.to_vec();
        let mut slices = &mut owned[..];
        while !slices.is_empty() {
            match (&self.0).write_vectored(slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut slices, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A request on a connection-oriented transport (TCP, Unix stream): Python's
/// `StreamRequestHandler` after `setup()`.
///
/// - [`rfile`](Self::rfile): a buffered reader (`BufRead`: `read_line`, `read_until`,
///   `lines()`…) over the connection, Python's `rfile` with `rbufsize = -1`.
/// - [`wfile`](Self::wfile): an unbuffered writer that never writes partially, Python's
///   `wfile` with `wbufsize = 0`.
///
/// The server's read/write timeouts and `TCP_NODELAY` are already applied to the socket.
#[derive(Debug)]
pub struct StreamRequest {
    /// Buffered reader over the connection
    /// ([`rbufsize`](crate::Builder::rbufsize), default 8 KiB).
    pub rfile: BufReader<Connection>,
    /// Unbuffered, never-partial writer to the connection.
    pub wfile: SocketWriter,
    conn: Connection,
    client_address: ClientAddr,
    server: ServerHandle,
    registration: Option<Registration>,
}

impl StreamRequest {
    /// The peer's address (Python's `client_address`).
    pub fn client_address(&self) -> &ClientAddr {
        &self.client_address
    }

    /// The server this request arrived on (Python's `self.server`): settings, shared state,
    /// statistics, and [`shutdown`](ServerHandle::shutdown).
    pub fn server(&self) -> &ServerHandle {
        &self.server
    }

    /// The raw connection (Python's `request` / `connection`).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

impl RequestKind for StreamRequest {
    type Incoming = (Socket, ClientAddr);
    const STREAM: bool = true;

    fn get_request(
        _ctx: &Arc<Context>,
        sock: &Arc<Socket>,
        _buf: &mut RecvBuf,
    ) -> io::Result<Polled<Self::Incoming>> {
        match sock.accept() {
            Ok((s, addr)) => Ok(Polled::Ready((s, ClientAddr::from_sockaddr(&addr)))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Polled::WouldBlock),
            Err(e) => Err(e),
        }
    }

    fn incoming_addr(inc: &Self::Incoming) -> &ClientAddr {
        &inc.1
    }

    fn open(inc: Self::Incoming, ctx: &Arc<Context>) -> io::Result<Self> {
        let (sock, client_address) = inc;
        ctx.options.configure_accepted(&sock, ctx.inet)?;
        let conn = Connection(Arc::new(sock));
        // A forked child never locks the parent's tracker (another thread may hold it).
        #[cfg(unix)]
        let registration =
            (!crate::sys::in_forked_child()).then(|| ctx.tracker.register(conn.as_raw_fd()));
        #[cfg(not(unix))]
        let registration = Some(ctx.tracker.register(conn.as_raw_fd()));
        Ok(StreamRequest {
            rfile: BufReader::with_capacity(ctx.options.rbufsize, conn.clone()),
            wfile: SocketWriter(conn.clone()),
            conn,
            client_address,
            server: ServerHandle::new(ctx.clone()),
            registration,
        })
    }

    fn complete(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn shutdown_request(mut self) {
        // Unregister before the descriptor can close, so a forced close never touches a
        // recycled fd number.
        drop(self.registration.take());
        // "some platforms may raise ENOTCONN" (Python): the peer may be gone already.
        let _ = self.conn.shutdown(Shutdown::Write);
    }

    fn into_stream(inc: Self::Incoming) -> Result<(Socket, ClientAddr), Self::Incoming> {
        Ok(inc)
    }

    fn close_incoming(inc: Self::Incoming) {
        let _ = inc.0.shutdown(Shutdown::Write);
    }
}

//! The stream flavour: Python's `StreamRequestHandler` state (`connection`, `rfile`, `wfile`).

use std::io::{self, BufReader, IoSlice, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use parking_lot::Mutex;
use socket2::Socket;

use super::proxy::{HeaderReader, ProxyHeader};
use super::sealed::RequestKind;
use super::{Polled, RecvBuf};
use crate::addr::ClientAddr;
use crate::context::{Activity, Context, Registration, ServerHandle};
use crate::error::TimeoutError;

/// What every clone of a [`Connection`] shares.
#[derive(Debug)]
struct Shared {
    sock: Socket,
    /// `wfile`'s buffer: sent before any read of the socket, before any unbuffered write,
    /// on `flush`, and when the handler returns.
    wbuf: Mutex<Vec<u8>>,
    /// Its capacity ([`Builder::wbufsize`](crate::Builder::wbufsize)); 0: unbuffered.
    wbufsize: usize,
    /// Where the handler is in its conversation (for the drain).
    activity: Arc<Activity>,
    /// TLS on (feature `tls`): every read and write goes through the session.
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::Session>,
}

/// An accepted connection: a cheap, clonable handle (`Arc`) to the socket.
///
/// `Read` and `Write` are implemented for `Connection` and `&Connection`, so a clone can be
/// handed to another thread (say, a chat room that broadcasts to every member) while the
/// handler keeps reading. The socket is closed when the request ends *and* the last clone is
/// dropped; [`shutdown`](Connection::shutdown) ends it for every clone at once.
///
/// Every read and write first sends what the request's buffered
/// [`wfile`](StreamRequest::wfile) holds, so bytes leave in the order they were written.
/// A read or write that waits longer than the server's timeout fails with
/// [`io::ErrorKind::TimedOut`] and a [`TimeoutError`](crate::TimeoutError) inside
/// (`read timed out after 2s (read_timeout)`).
///
/// With TLS ([`Builder::tls`](crate::Builder::tls), feature `tls`) reads and writes carry
/// plaintext through the connection's session, shared by every clone; a read that meets the
/// peer's end of file without `close_notify` fails with
/// [`io::ErrorKind::UnexpectedEof`] ("TLS stream truncated"). [`socket`](Self::socket) is
/// the raw, encrypted socket: for options, never for reading or writing.
#[derive(Debug, Clone)]
pub struct Connection(Arc<Shared>);

impl Connection {
    fn new(
        sock: Socket,
        wbufsize: usize,
        activity: Arc<Activity>,
        #[cfg(feature = "tls")] tls: Option<crate::tls::Session>,
    ) -> Connection {
        Connection(Arc::new(Shared {
            sock,
            wbuf: Mutex::new(Vec::new()),
            wbufsize,
            activity,
            #[cfg(feature = "tls")]
            tls,
        }))
    }

    /// One `recv`, or with TLS the plaintext of one or more records (see
    /// [`Session::read`](crate::tls::Session::read)); not retried on `EINTR`.
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.0.tls {
            return tls.read(&self.0.sock, buf);
        }
        (&self.0.sock).read(buf)
    }

    /// One `sendmsg`, or with TLS all of `bufs` as records.
    fn send(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.0.tls {
            return tls.write_vectored(&self.0.sock, bufs);
        }
        (&self.0.sock).write_vectored(bufs)
    }

    /// A read for a handler that took the connection over
    /// ([`BlockingStream`](crate::BlockingStream)): plaintext, retried on `EINTR`, without
    /// `wfile`'s buffer or the drain's bookkeeping.
    pub(crate) fn read_direct(&self, buf: &mut [u8]) -> io::Result<usize> {
        retry_interrupted(|| self.recv(buf))
    }

    /// The write of [`read_direct`](Self::read_direct)'s kind.
    pub(crate) fn write_direct(&self, buf: &[u8]) -> io::Result<usize> {
        retry_interrupted(|| self.send(&[IoSlice::new(buf)]))
    }

    /// Does the TLS session hold input not read yet (the socket may be empty)?
    fn tls_buffered(&self) -> bool {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.0.tls {
            return tls.has_buffered();
        }
        false
    }

    /// With TLS, sends `close_notify` (best effort; without `wait`, not if a writer holds
    /// the session).
    fn close_notify(&self, wait: bool) {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.0.tls {
            tls.close_notify(&self.0.sock, wait);
        }
        let _ = wait;
    }

    /// The underlying socket2 socket: every socket option, `peer_addr`, `set_read_timeout`….
    pub fn socket(&self) -> &Socket {
        &self.0.sock
    }

    /// `shutdown(2)` on the socket: `Shutdown::Write` sends FIN (the peer reads EOF),
    /// `Shutdown::Read`/`Both` also make blocked reads here return. With TLS,
    /// `Write` and `Both` send `close_notify` first (unless another thread is writing at
    /// that moment).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        if how != Shutdown::Read {
            self.close_notify(false);
        }
        self.0.sock.shutdown(how)
    }

    /// Writes the whole buffer (`send` until done), like Python's `sendall`.
    pub fn send_all(&self, buf: &[u8]) -> io::Result<()> {
        let mut pending = self.0.wbuf.lock();
        self.send_locked(&mut pending, buf)
    }

    /// Sends what `wfile` buffered, then `buf`, in one `sendmsg` when possible; empties the
    /// buffer whatever happens (after an error the connection is of no further use).
    fn send_locked(&self, pending: &mut Vec<u8>, buf: &[u8]) -> io::Result<()> {
        if pending.is_empty() && buf.is_empty() {
            return Ok(());
        }
        let r = self.send_vectored_all(&mut [IoSlice::new(pending), IoSlice::new(buf)]);
        pending.clear();
        // Buffered bytes counted as a reply when they were written.
        if r.is_ok() && !buf.is_empty() {
            self.0.activity.replied();
        }
        r
    }

    fn send_vectored_all(&self, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
        IoSlice::advance_slices(&mut slices, 0);
        while !slices.is_empty() {
            match self.send(slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut slices, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.timed_out(e, true)),
            }
        }
        Ok(())
    }

    /// Sends what `wfile` buffered (nothing to do if it is empty).
    fn flush_pending(&self) -> io::Result<()> {
        let mut pending = self.0.wbuf.lock();
        if pending.is_empty() {
            return Ok(());
        }
        self.send_locked(&mut pending, &[])
    }

    /// `EAGAIN` on a blocking socket means its `SO_RCVTIMEO`/`SO_SNDTIMEO` expired: say so.
    fn timed_out(&self, e: io::Error, write: bool) -> io::Error {
        if e.kind() != io::ErrorKind::WouldBlock || self.0.sock.nonblocking().unwrap_or(true) {
            return e;
        }
        let after = if write {
            self.0.sock.write_timeout()
        } else {
            self.0.sock.read_timeout()
        };
        TimeoutError::new(write, after.ok().flatten()).into_io()
    }
}

impl AsRawFd for Connection {
    fn as_raw_fd(&self) -> RawFd {
        self.0.sock.as_raw_fd()
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

/// `recv`, retried on `EINTR` (never fails with [`io::ErrorKind::Interrupted`]), after
/// sending what `wfile` buffered. While the server drains, a read that waits for a new
/// request (nothing arrived since the handler last replied) returns 0, end of file.
impl Read for &Connection {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.flush_pending()?;
        let activity = &self.0.activity;
        if activity.begin_read()
            && !crate::sys::has_pending_input(self.as_raw_fd())
            && !self.tls_buffered()
        {
            activity.end_read(Some(0));
            return Ok(0);
        }
        let r = retry_interrupted(|| self.recv(buf));
        #[cfg(feature = "tls")]
        // The drain's `shutdown(SHUT_RD)` ended a read that waited for a new request: an
        // end of file, not a truncation.
        let r = match r {
            Err(e) if crate::tls::is_truncated(&e) && activity.draining() => Ok(0),
            r => r,
        };
        activity.end_read(r.as_ref().ok().copied());
        r.map_err(|e| self.timed_out(e, false))
    }
}

/// `recv`, retried on `EINTR` (never fails with [`io::ErrorKind::Interrupted`]).
impl Read for Connection {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

/// `send`/`sendmsg`, retried on `EINTR` (never fails with [`io::ErrorKind::Interrupted`]),
/// after what `wfile` buffered; a write may still be short.
impl Write for &Connection {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.flush_pending()?;
        let r = retry_interrupted(|| self.send(bufs));
        if matches!(r, Ok(n) if n > 0) {
            self.0.activity.replied();
        }
        r.map_err(|e| self.timed_out(e, true))
    }
    /// Sends what `wfile` buffered.
    fn flush(&mut self) -> io::Result<()> {
        self.flush_pending()
    }
}

/// `send`/`sendmsg`, retried on `EINTR` (never fails with [`io::ErrorKind::Interrupted`]),
/// after what `wfile` buffered; a write may still be short.
impl Write for Connection {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&*self).write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        (&*self).flush()
    }
}

/// Python's `_SocketWriter` with `wbufsize`: `wfile`, a writer that never writes partially
/// and, by default, buffers.
///
/// With a buffer ([`Builder::wbufsize`](crate::Builder::wbufsize), default 8 KiB) small
/// writes collect in memory and leave together, in one `send` — so
/// `writeln!(req.wfile, "OK")`, two writes, is one TCP segment, not two — when the buffer
/// would overflow, on [`flush`](Write::flush), **before the handler reads** (any read of
/// the connection, `rfile` included, sends it first, so a reply never waits behind a
/// read), and when the handler returns. Writes at least as large as the buffer go out at
/// once. An error of a buffered send surfaces at the next write, flush or read.
///
/// With `wbufsize(0)` (Python's default) every `write` sends the whole buffer before
/// returning. Either way `write` returns `buf.len()` or an error, never a short count;
/// a send that waits longer than the write timeout fails with
/// [`io::ErrorKind::TimedOut`].
#[derive(Debug)]
pub struct SocketWriter(Connection);

impl SocketWriter {
    /// The connection this writer sends on.
    pub fn connection(&self) -> &Connection {
        &self.0
    }

    /// Bytes written and not sent yet.
    pub fn buffered(&self) -> usize {
        self.0.0.wbuf.lock().len()
    }
}

impl Write for SocketWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let conn = &self.0;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let mut pending = conn.0.wbuf.lock();
        if pending.len() + total <= conn.0.wbufsize {
            // Grows as replies need it (a 3-byte reply costs no 8 KiB), kept between them.
            for b in bufs {
                pending.extend_from_slice(b);
            }
            conn.0.activity.replied();
            return Ok(total);
        }
        // Too much for the buffer: what it holds, then these, in one `sendmsg`.
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(bufs.len() + 1);
        slices.push(IoSlice::new(&pending));
        slices.extend_from_slice(bufs);
        let r = conn.send_vectored_all(&mut slices);
        drop(slices);
        pending.clear();
        r?;
        conn.0.activity.replied();
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush_pending()
    }
}

/// A request on a connection-oriented transport (TCP, Unix stream): Python's
/// `StreamRequestHandler` after `setup()`.
///
/// - [`rfile`](Self::rfile): a buffered reader (`BufRead`: `read_line`, `read_until`,
///   `lines()`…) over the connection, Python's `rfile` with `rbufsize = -1`.
/// - [`wfile`](Self::wfile): a writer that never writes partially, buffered by default
///   (Python's `wbufsize`, here 8 KiB): what it holds is sent before the handler reads,
///   on `flush`, and when the handler returns, so a reply written in pieces leaves in one
///   segment.
///
/// The server's read/write timeouts and `TCP_NODELAY` are already applied to the socket.
#[derive(Debug)]
pub struct StreamRequest {
    /// Buffered reader over the connection
    /// ([`rbufsize`](crate::Builder::rbufsize), default 8 KiB).
    pub rfile: BufReader<Connection>,
    /// Buffered ([`wbufsize`](crate::Builder::wbufsize), default 8 KiB), never-partial
    /// writer to the connection; sent before every read and when the handler returns.
    pub wfile: SocketWriter,
    conn: Connection,
    client_address: ClientAddr,
    proxy: Option<Box<ProxyHeader>>,
    server: ServerHandle,
    registration: Option<Registration>,
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::TlsInfo>,
}

/// An accepted connection, before its request is opened: what the serving loop hands to
/// the mode that runs it.
#[derive(Debug)]
pub struct Accepted {
    pub(crate) sock: Socket,
    /// The socket's peer, until a PROXY header names the client.
    pub(crate) addr: ClientAddr,
    pub(crate) proxy: Option<Box<ProxyHeader>>,
}

impl StreamRequest {
    /// The client's address (Python's `client_address`): the socket's peer or, behind a
    /// proxy speaking the PROXY protocol ([`Builder::proxy_protocol`](crate::Builder::proxy_protocol)),
    /// the original client the header names.
    pub fn client_address(&self) -> &ClientAddr {
        &self.client_address
    }

    /// The connection's PROXY protocol header, when the server expects one
    /// ([`Builder::proxy_protocol`](crate::Builder::proxy_protocol)): the proxy's own
    /// address, the original destination, the v2 TLVs. `None` when the option is off.
    pub fn proxy_header(&self) -> Option<&ProxyHeader> {
        self.proxy.as_deref()
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

    /// What the TLS handshake negotiated (protocol version, cipher suite, ALPN protocol,
    /// SNI name, the client's certificates); `None` on a plaintext server. Feature `tls`.
    #[cfg(feature = "tls")]
    pub fn tls(&self) -> Option<&crate::tls::TlsInfo> {
        self.tls.as_ref()
    }

    /// The credentials of a Unix-domain peer (user, group and, on Linux, process id), as
    /// the kernel recorded them when it connected: `getsockopt(SO_PEERCRED)` on Linux,
    /// `getpeereid(3)` on macOS and the BSDs. One system call per call. The usual way to
    /// authorise local clients, whose address is `(unnamed)`.
    ///
    /// # Errors
    /// [`io::ErrorKind::Unsupported`] on a TCP connection; any error of the system call.
    pub fn peer_credentials(&self) -> io::Result<crate::addr::PeerCredentials> {
        if matches!(self.client_address, ClientAddr::Inet(_)) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "peer credentials exist for Unix-domain sockets only",
            ));
        }
        let (uid, gid, pid) = crate::sys::peer_credentials(self.conn.as_raw_fd())?;
        Ok(crate::addr::PeerCredentials { uid, gid, pid })
    }

    /// Declares that the handler has finished a request and that its next read waits for
    /// a new one, even though it wrote no reply: if the server drains
    /// ([`Server::server_close`](crate::Server::server_close), Ctrl-C) while that read
    /// waits with nothing received, the connection is closed at once (the read returns
    /// end of file) instead of being waited for until the grace period ends.
    ///
    /// Most handlers never need it: a read that starts after the handler wrote to the
    /// connection (and before more bytes arrived) is already taken as waiting for a new
    /// request — the Go `http.Server` notion of an idle connection — and so is a
    /// connection that has sent nothing at all 5 s after it was accepted (its first request
    /// may be on its way; Go waits as long). Handlers whose requests get no reply call it
    /// between requests.
    pub fn mark_idle(&self) {
        self.conn.0.activity.between_requests();
    }

    /// The opposite of [`mark_idle`](Self::mark_idle): the handler's next read waits for
    /// the rest of the *current* request, even though it has just written to the client
    /// (`"continue"`, a prompt, an intermediate reply). The drain then lets that read wait
    /// (up to the grace period). It holds until bytes next arrive.
    pub fn mark_busy(&self) {
        self.conn.0.activity.hold();
    }

    /// Is the server draining (closing: [`Server::server_close`](crate::Server::server_close)
    /// or Ctrl-C)? A handler in a keep-alive loop can stop after the current request.
    /// Shorthand for [`ServerHandle::is_draining`].
    pub fn is_draining(&self) -> bool {
        self.conn.0.activity.draining()
    }
}

impl RequestKind for StreamRequest {
    type Incoming = Accepted;
    const STREAM: bool = true;

    fn get_request(
        _ctx: &Arc<Context>,
        sock: &Arc<Socket>,
        _buf: &mut RecvBuf,
    ) -> io::Result<Polled<Self::Incoming>> {
        match sock.accept() {
            Ok((sock, addr)) => Ok(Polled::Ready(Accepted {
                sock,
                addr: ClientAddr::from_sockaddr(&addr),
                proxy: None,
            })),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Polled::WouldBlock),
            Err(e) => Err(e),
        }
    }

    fn incoming_addr(inc: &Self::Incoming) -> &ClientAddr {
        &inc.addr
    }

    /// The PROXY protocol header, read on the thread that runs the request (a blocking
    /// read under its own deadline).
    fn preamble(mut inc: Accepted, ctx: &Arc<Context>) -> Option<Accepted> {
        if !ctx.options.proxy_protocol.is_on() {
            return Some(inc);
        }
        // Linux's accept4 never inherits O_NONBLOCK from the listener; BSDs and macOS do
        // (`configure_accepted`, in `open`, comes after the header).
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        if let Err(e) = inc.sock.set_nonblocking(false) {
            ctx.proxy_failed(&inc.addr, &e);
            Self::close_incoming(inc);
            return None;
        }
        match HeaderReader::new(&ctx.options).read_blocking(&inc.sock, &inc.addr) {
            Ok(header) => {
                inc.addr = header.client_address().clone();
                inc.proxy = Some(Box::new(header));
                Some(inc)
            }
            Err(e) => {
                ctx.proxy_failed(&inc.addr, &e);
                Self::close_incoming(inc);
                None
            }
        }
    }

    fn open(inc: Self::Incoming, ctx: &Arc<Context>) -> io::Result<Self> {
        let Accepted {
            sock,
            addr: client_address,
            proxy,
        } = inc;
        ctx.options.configure_accepted(&sock, ctx.inet)?;
        #[cfg(feature = "tls")]
        let (session, tls) = super::tls::accept(&sock, ctx)?.unzip();
        let activity = ctx.tracker.activity();
        let conn = Connection::new(
            sock,
            ctx.options.wbufsize,
            activity.clone(),
            #[cfg(feature = "tls")]
            session,
        );
        // A forked child never locks the parent's tracker (another thread may hold it).
        #[cfg(unix)]
        let registration = (!crate::sys::in_forked_child())
            .then(|| ctx.tracker.register(conn.as_raw_fd(), activity));
        #[cfg(not(unix))]
        let registration = Some(ctx.tracker.register(conn.as_raw_fd(), activity));
        Ok(StreamRequest {
            rfile: BufReader::with_capacity(ctx.options.rbufsize, conn.clone()),
            wfile: SocketWriter(conn.clone()),
            conn,
            client_address,
            proxy,
            server: ServerHandle::new(ctx.clone()),
            registration,
            #[cfg(feature = "tls")]
            tls,
        })
    }

    /// The handler returned: what `wfile` buffered is sent.
    fn complete(&mut self) -> io::Result<()> {
        self.conn.flush_pending()
    }

    fn shutdown_request(mut self) {
        // After a failed `setup` `complete` did not run: send what was buffered anyway.
        let _ = self.conn.flush_pending();
        // Unregister before the descriptor can close, so a forced close never touches a
        // recycled fd number.
        drop(self.registration.take());
        // With TLS, `close_notify` first: the peer knows the stream ended here.
        self.conn.close_notify(true);
        // "some platforms may raise ENOTCONN" (Python): the peer may be gone already.
        let _ = self.conn.0.sock.shutdown(Shutdown::Write);
    }

    fn into_stream(inc: Self::Incoming) -> Result<(Socket, ClientAddr), Self::Incoming> {
        Ok((inc.sock, inc.addr))
    }

    fn close_incoming(inc: Self::Incoming) {
        let _ = inc.sock.shutdown(Shutdown::Write);
    }

    fn reusable(_ctx: &Arc<Context>, _sock: &Arc<Socket>) -> Option<Self> {
        None
    }

    fn next_reused(
        _ctx: &Arc<Context>,
        _sock: &Socket,
        _buf: &mut RecvBuf,
        _req: &mut Self,
    ) -> io::Result<Polled<ClientAddr>> {
        Ok(Polled::WouldBlock)
    }

    fn reply_reused(_req: &mut Self, _buf: Option<&mut RecvBuf>, _ctx: &Context) {}
}

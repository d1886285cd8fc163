//! The datagram flavour: Python's `DatagramRequestHandler` state (`packet`, `socket`).

use std::io::{self, Cursor};
use std::sync::Arc;

use socket2::{SockAddr, Socket};

use super::sealed::RequestKind;
use super::{Polled, RecvBuf};
use crate::addr::ClientAddr;
use crate::context::{Context, ServerHandle};

/// A request on a datagram transport (UDP, Unix datagram): Python's
/// `DatagramRequestHandler` after `setup()`.
///
/// - [`rfile`](Self::rfile) reads the packet; [`packet`](Self::packet) is the same bytes.
/// - [`wfile`](Self::wfile) collects the reply, sent to the sender as **one datagram after
///   `finish`**.
///
/// **Difference from Python:** when the handler wrote nothing, no datagram is sent (Python
/// always sends one, possibly empty). Set
/// [`Builder::empty_datagram_reply`](crate::Builder::empty_datagram_reply) for Python's
/// behaviour. To send several datagrams, or none, use [`socket`](Self::socket) directly.
///
/// An echo, the Python way (`self.wfile.write(self.rfile.read())`): `rfile` and `wfile`
/// are two fields, so both can be borrowed at once —
///
/// ```
/// use socketserver::{DatagramRequest, UdpServer};
///
/// let server = UdpServer::bind("127.0.0.1:0", |req: &mut DatagramRequest| {
///     std::io::copy(&mut req.rfile, &mut req.wfile).map(drop)
/// })?;
/// # drop(server);
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// — or send at once with `req.reply(req.packet())`. `req.wfile.write_all(req.packet())`
/// does not compile: [`packet`](Self::packet) borrows the whole request while `wfile` is
/// borrowed mutably (E0502); copy the packet first (`let p = req.packet().to_vec();`) or
/// use one of the two above.
///
/// ```compile_fail,E0502
/// # use std::io::Write;
/// # fn echo(req: &mut socketserver::DatagramRequest) -> std::io::Result<()> {
/// req.wfile.write_all(req.packet())
/// # }
/// ```
#[derive(Debug)]
pub struct DatagramRequest {
    /// The packet, as a reader.
    pub rfile: Cursor<Vec<u8>>,
    /// The reply, sent to [`client_address`](Self::client_address) after `finish`; holds
    /// at most [`max_packet_size`](crate::Builder::max_packet_size) bytes.
    pub wfile: ReplyBuffer,
    client_address: ClientAddr,
    /// Where replies go when it is not an IP peer (see [`reply_addr`]).
    reply_to: Option<Box<SockAddr>>,
    socket: Arc<Socket>,
    server: ServerHandle,
    send_empty: bool,
    send_timeout: Option<std::time::Duration>,
    /// A reused request (see `RequestKind::reusable`): `complete` leaves the reply in
    /// `wfile` (and sets `held`), for `reply_reused` to queue (`sendmmsg`) or send.
    reused: bool,
    held: bool,
}

impl DatagramRequest {
    /// The received datagram (Python's `self.request[0]` / `packet`).
    pub fn packet(&self) -> &[u8] {
        self.rfile.get_ref()
    }

    /// The sender (Python's `client_address`).
    pub fn client_address(&self) -> &ClientAddr {
        &self.client_address
    }

    /// The server's socket, shared by every handler (Python's `self.request[1]` /
    /// `self.socket`): use `send_to` on it to reply with more than one datagram.
    pub fn socket(&self) -> &Socket {
        &self.socket
    }

    /// Sends `buf` to the client now, as one datagram, in addition to `wfile`. When the
    /// socket's send buffer is full (or, on a Unix datagram socket, the peer's receive
    /// queue) it waits for room, up to the server's write timeout, without spinning.
    ///
    /// **Order:** the `wfile` replies of the datagrams received in one batch leave
    /// together once the batch is handled (`sendmmsg`), so a datagram sent now can
    /// overtake the `wfile` reply to an earlier datagram of the same batch. UDP keeps no
    /// order anyway; on a Unix datagram socket, where the kernel does, reply the same way
    /// (all `wfile`, or all `reply()`) when the order of replies matters. One exception
    /// remains in threading mode: replies to a peer whose receive queue is full wait
    /// outside the batch, and a receiver that takes over meanwhile can send that peer a
    /// newer reply first.
    pub fn reply(&self, buf: &[u8]) -> io::Result<()> {
        let to = reply_addr(&self.client_address, &self.reply_to)?;
        crate::sys::send_to_waiting(&self.socket, buf, &to, self.send_timeout).map(drop)
    }

    /// The server this request arrived on (Python's `self.server`).
    pub fn server(&self) -> &ServerHandle {
        &self.server
    }
}

/// The `wfile` of a [`DatagramRequest`]: the reply datagram being built, bounded.
///
/// Python's is an unbounded `BytesIO`; this one holds at most the server's
/// [`max_packet_size`](crate::Builder::max_packet_size) (default 65 535 bytes), so a handler
/// that writes without end fails with `InvalidInput` instead of growing the server's memory
/// — a datagram could not carry more anyway.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplyBuffer {
    buf: Vec<u8>,
    limit: usize,
}

impl ReplyBuffer {
    /// An empty reply holding at most `limit` bytes.
    pub fn new(limit: usize) -> ReplyBuffer {
        ReplyBuffer {
            buf: Vec::new(),
            limit,
        }
    }

    /// The reply so far.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Nothing written yet?
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The most bytes it holds.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Forgets what was written (to start the reply over).
    pub fn clear(&mut self) {
        self.buf.clear();
    }
}

impl io::Write for ReplyBuffer {
    /// Appends all of `buf`, or nothing if the reply would exceed the limit.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.buf.len() + buf.len() > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "reply datagram would exceed max_packet_size ({} bytes)",
                    self.limit
                ),
            ));
        }
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The address to reply to: an IP peer's is its `client_address` (a request does not carry
/// a 128-byte `sockaddr_storage` around); others (Unix peers) keep their own.
fn reply_addr(addr: &ClientAddr, other: &Option<Box<SockAddr>>) -> io::Result<SockAddr> {
    match (other, addr.as_inet()) {
        (Some(to), _) => Ok((**to).clone()),
        (None, Some(a)) => Ok(SockAddr::from(a)),
        (None, None) => Err(no_reply_address()),
    }
}

fn no_reply_address() -> io::Error {
    io::Error::new(
        io::ErrorKind::AddrNotAvailable,
        "the sender has no address to reply to",
    )
}

/// A received datagram on its way to a handler.
#[derive(Debug)]
pub struct Packet {
    data: Vec<u8>,
    addr: ClientAddr,
    /// The sender's address if it is not an IP one (see [`reply_addr`]).
    from: Option<Box<SockAddr>>,
    socket: Arc<Socket>,
}

/// The next datagram of `batch`, receiving (without waiting) when none is pending; `None`
/// when the socket is empty.
fn next_datagram<'a>(
    sock: &Socket,
    batch: &'a mut crate::sys::RecvBatch,
) -> io::Result<Option<crate::sys::Datagram<'a>>> {
    if !batch.has_pending() {
        // The last batch emptied the socket: back to waiting, without a `recvmmsg` just
        // to hear `EAGAIN` — unless receives wait themselves (`ReceiveWait`): then this
        // one is the wait.
        let drained = batch.take_drained();
        if (drained && !batch.waits()) || batch.recv(sock)? == 0 {
            return Ok(None);
        }
    }
    Ok(batch.next())
}

/// A datagram larger than `max_packet_size` arrived cut short: counted, reported, dropped.
fn truncated(ctx: &Context, addr: &ClientAddr) {
    ctx.stats.truncated.inc();
    let err = io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "datagram from {addr} is larger than max_packet_size ({} bytes): dropped",
            ctx.options.max_packet_size
        ),
    );
    ctx.report_error(addr, &crate::error::HandlerError::Io(err));
}

impl RequestKind for DatagramRequest {
    type Incoming = Packet;
    const STREAM: bool = false;

    fn get_request(
        ctx: &Arc<Context>,
        sock: &Arc<Socket>,
        buf: &mut RecvBuf,
    ) -> io::Result<Polled<Packet>> {
        let Some(batch) = buf.0.as_mut() else {
            return Err(io::Error::other("no receive buffer for a datagram socket"));
        };
        let Some(d) = next_datagram(sock, batch)? else {
            return Ok(Polled::WouldBlock);
        };
        let (addr, from) = match d.from.as_socket() {
            Some(a) => (ClientAddr::Inet(a), None),
            None => (ClientAddr::from_sockaddr(&d.from), Some(d.from)),
        };
        if d.truncated {
            truncated(ctx, &addr);
            return Ok(Polled::Skipped);
        }
        Ok(Polled::Ready(Packet {
            data: d.data.to_vec(),
            addr,
            from: from.map(Box::new),
            socket: sock.clone(),
        }))
    }

    fn incoming_addr(inc: &Packet) -> &ClientAddr {
        &inc.addr
    }

    fn open(inc: Packet, ctx: &Arc<Context>) -> io::Result<Self> {
        Ok(DatagramRequest {
            rfile: Cursor::new(inc.data),
            wfile: ReplyBuffer::new(ctx.options.max_packet_size),
            client_address: inc.addr,
            reply_to: inc.from,
            socket: inc.socket,
            server: ServerHandle::new(ctx.clone()),
            send_empty: ctx.options.empty_datagram_reply,
            send_timeout: ctx.options.write_timeout,
            reused: false,
            held: false,
        })
    }

    fn complete(&mut self) -> io::Result<()> {
        if self.wfile.is_empty() && !self.send_empty {
            return Ok(());
        }
        if self.reused {
            self.held = true;
            return Ok(());
        }
        let to = reply_addr(&self.client_address, &self.reply_to)?;
        crate::sys::send_to_waiting(&self.socket, self.wfile.as_slice(), &to, self.send_timeout)
            .map(drop)
    }

    fn shutdown_request(self) {}

    fn reusable(ctx: &Arc<Context>, sock: &Arc<Socket>) -> Option<Self> {
        let mut req = DatagramRequest::open(
            Packet {
                data: Vec::new(),
                addr: ClientAddr::Inet(std::net::SocketAddr::from(([0, 0, 0, 0], 0))),
                from: None,
                socket: sock.clone(),
            },
            ctx,
        )
        .ok()?;
        req.reused = true;
        Some(req)
    }

    fn next_reused(
        ctx: &Arc<Context>,
        sock: &Socket,
        buf: &mut RecvBuf,
        req: &mut Self,
    ) -> io::Result<Polled<ClientAddr>> {
        let Some(batch) = buf.0.as_mut() else {
            return Err(io::Error::other("no receive buffer for a datagram socket"));
        };
        let Some(d) = next_datagram(sock, batch)? else {
            return Ok(Polled::WouldBlock);
        };
        match d.from.as_socket() {
            Some(a) => {
                req.client_address = ClientAddr::Inet(a);
                req.reply_to = None;
            }
            None => {
                req.client_address = ClientAddr::from_sockaddr(&d.from);
                match &mut req.reply_to {
                    Some(to) => **to = d.from,
                    None => req.reply_to = Some(Box::new(d.from)),
                }
            }
        }
        if d.truncated {
            truncated(ctx, &req.client_address);
            return Ok(Polled::Skipped);
        }
        // The handler may have replaced `rfile` or `wfile` (they are public): whatever it
        // left is emptied, and dropped if it grew beyond what a datagram needs.
        let limit = ctx.options.max_packet_size;
        let data = req.rfile.get_mut();
        data.clear();
        if data.capacity() > limit.max(crate::sys::SPARE_CAPACITY) {
            *data = Vec::new();
        }
        data.extend_from_slice(d.data);
        req.rfile.set_position(0);
        req.wfile.buf.clear();
        if req.wfile.buf.capacity() > limit.max(crate::sys::SPARE_CAPACITY) {
            req.wfile.buf = Vec::new();
        }
        req.wfile.limit = limit;
        req.held = false;
        Ok(Polled::Ready(req.client_address.clone()))
    }

    fn reply_reused(req: &mut Self, buf: Option<&mut RecvBuf>, ctx: &Context) {
        if !std::mem::take(&mut req.held) {
            return;
        }
        let report = |e| ctx.report_error(&req.client_address, &crate::error::HandlerError::Io(e));
        match buf.and_then(|b| b.1.as_mut()) {
            Some(replies) => {
                // Queued: an IP peer as its `SocketAddr` (no `sockaddr` built until the batch
                // is sent); another peer's raw address is taken (the next datagram sets it).
                let to = match (req.reply_to.take(), req.client_address.as_inet()) {
                    (Some(to), _) => crate::sys::Peer::Other(to),
                    (None, Some(a)) => crate::sys::Peer::Inet(a),
                    (None, None) => return report(no_reply_address()),
                };
                let spare = replies.take_buffer();
                replies.push(to, std::mem::replace(&mut req.wfile.buf, spare));
            }
            None => {
                let sent = reply_addr(&req.client_address, &req.reply_to).and_then(|to| {
                    crate::sys::send_to_waiting(
                        &req.socket,
                        req.wfile.as_slice(),
                        &to,
                        req.send_timeout,
                    )
                });
                if let Err(e) = sent {
                    report(e);
                }
            }
        }
    }

    fn preamble(inc: Packet, _ctx: &Arc<Context>) -> Option<Packet> {
        Some(inc)
    }

    fn into_stream(inc: Packet) -> Result<(Socket, ClientAddr), Packet> {
        Err(inc)
    }

    fn close_incoming(_inc: Packet) {}
}

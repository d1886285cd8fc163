//! What a handler receives: [`StreamRequest`] (TCP, Unix stream) or [`DatagramRequest`] (UDP,
//! Unix datagram). Python passes `request`, `client_address` and `server` to the handler's
//! constructor; here they travel together in one request value that every hook receives.

mod datagram;
mod message;
mod proxy;
mod stream;
mod takeover;
#[cfg(feature = "tls")]
mod tls;

pub use datagram::{DatagramRequest, ReplyBuffer};
pub use message::{Channel, ChannelHandle};
pub(crate) use message::{Closing, Outlet};
pub(crate) use proxy::HeaderReader;
pub use proxy::{ProxyHeader, Tlv};
pub use stream::{Connection, SocketWriter, StreamRequest};
pub use takeover::BlockingStream;
#[cfg(feature = "tls")]
pub(crate) use tls::handshake_failed;

use std::io;
use std::sync::Arc;

use socket2::Socket;

use crate::addr::ClientAddr;
use crate::context::Context;

/// What one non-blocking `get_request` produced.
#[derive(Debug)]
pub enum Polled<T> {
    /// A request to process.
    Ready(T),
    /// Something arrived but was refused and already reported (e.g. a truncated datagram).
    Skipped,
    /// Nothing pending (`EAGAIN`).
    WouldBlock,
}

impl<T> Polled<T> {
    /// The same outcome with the request turned into `f(request)`.
    pub(crate) fn map<U>(self, f: impl FnOnce(T) -> U) -> Polled<U> {
        match self {
            Polled::Ready(t) => Polled::Ready(f(t)),
            Polled::Skipped => Polled::Skipped,
            Polled::WouldBlock => Polled::WouldBlock,
        }
    }
}

/// Scratch space reused by the serving loop between receives: for datagram transports a
/// batch of receive buffers (`recvmmsg(2)` on Linux) and the replies of the datagrams
/// handled from it, nothing for streams. It belongs to whoever receives: the serving
/// thread, or (threading) the leading receiver, handed on with the leadership.
#[derive(Debug)]
pub struct RecvBuf(
    Option<crate::sys::RecvBatch>,
    /// Replies of the datagrams handled on the spot, sent together once the batch is done.
    Option<crate::sys::SendBatch>,
);

/// Memory the receive buffers of one receiving thread may take at most (virtual: pages
/// the kernel never writes are never mapped).
const RECV_BATCH_BYTES: usize = 4 << 20;

impl RecvBuf {
    /// For a stream transport: no buffer.
    pub(crate) fn none() -> RecvBuf {
        RecvBuf(None, None)
    }

    /// For a datagram transport: up to [`BATCH_SLOTS`](crate::sys::BATCH_SLOTS) buffers of
    /// `max_packet_size` bytes. With `inline` (requests handled on the receiving thread,
    /// one after the other, through [`RequestKind::next_reused`](sealed::RequestKind::next_reused)),
    /// also a queue for their replies, sent together
    /// ([`flush_replies`](Self::flush_replies)); without, the requests go elsewhere (a pool,
    /// a child) and send their own replies.
    pub(crate) fn datagrams(max_packet_size: usize, inline: bool) -> RecvBuf {
        let slots = (RECV_BATCH_BYTES / max_packet_size.max(1)).clamp(1, crate::sys::BATCH_SLOTS);
        RecvBuf(
            Some(crate::sys::RecvBatch::new(max_packet_size, slots)),
            inline.then(crate::sys::SendBatch::default),
        )
    }

    /// For one datagram per receive (`handle_request`): one buffer, nothing left behind in
    /// a batch, and the reply sent by the request itself (no queue to flush).
    pub(crate) fn single(max_packet_size: usize) -> RecvBuf {
        RecvBuf(Some(crate::sys::RecvBatch::new(max_packet_size, 1)), None)
    }

    /// Sends the replies queued by the datagrams handled since the last flush
    /// (`sendmmsg(2)` on Linux); a reply that cannot be sent goes to `handle_error`.
    pub(crate) fn flush_replies(&mut self, ctx: &Context, sock: &Socket) {
        self.flush_with(ctx, sock, None);
    }

    /// [`flush_replies`](Self::flush_replies) without waiting: the replies that would have
    /// to wait for room are returned, for [`send_stalled`] once the batch is let go (the
    /// threading leader's way: a peer that does not read holds up no other receiver).
    pub(crate) fn flush_replies_now(&mut self, ctx: &Context, sock: &Socket) -> Stalled {
        let mut stalled = Stalled::default();
        self.flush_with(ctx, sock, Some(&mut stalled));
        stalled
    }

    /// Both of the above (see `SendBatch::flush`).
    fn flush_with(&mut self, ctx: &Context, sock: &Socket, stalled: Option<&mut Stalled>) {
        if let Some(replies) = &mut self.1
            && !replies.is_empty()
        {
            let failed = |to: &crate::sys::Peer, e| reply_failed(ctx, to, e);
            replies.flush(sock, ctx.options.write_timeout, failed, stalled);
        }
    }

    /// Lets the datagram receives wait in the kernel for the first datagram (see
    /// `sys::ReceiveWait`, which must hold the socket); no effect on a stream buffer.
    pub(crate) fn set_wait(&mut self, on: bool) {
        if let Some(b) = &mut self.0 {
            b.set_wait(on);
        }
    }

    /// Datagrams already received and not yet handed out.
    pub(crate) fn has_pending(&self) -> bool {
        self.0.as_ref().is_some_and(|b| b.has_pending())
    }

    /// Replies queued and not yet sent.
    pub(crate) fn has_replies(&self) -> bool {
        self.1.as_ref().is_some_and(|r| !r.is_empty())
    }
}

pub(crate) use crate::sys::Stalled;

/// Sends the replies [`RecvBuf::flush_replies_now`] left, each waiting for room up to the
/// write timeout; a reply that cannot be sent goes to `handle_error`.
pub(crate) fn send_stalled(stalled: Stalled, ctx: &Context, sock: &Socket) {
    stalled.send(sock, ctx.options.write_timeout, |to, e| {
        reply_failed(ctx, to, e)
    });
}

/// A queued reply that could not be sent: to `handle_error`, with its peer.
fn reply_failed(ctx: &Context, to: &crate::sys::Peer, e: io::Error) {
    let addr = match to {
        crate::sys::Peer::Inet(a) => ClientAddr::Inet(*a),
        crate::sys::Peer::Other(a) => ClientAddr::from_sockaddr(a),
    };
    ctx.report_error(&addr, &crate::error::HandlerError::Io(e));
}

pub(crate) mod sealed {
    use super::*;

    /// The per-flavour half of Python's request pipeline. Sealed: implemented by
    /// [`StreamRequest`] and [`DatagramRequest`] only.
    pub trait RequestKind: Sized + Send + 'static {
        /// The raw result of `get_request`: an accepted socket, or a received packet.
        type Incoming: Send + 'static;
        /// `true` for connection-oriented transports (`listen(2)` is called on activate).
        const STREAM: bool;
        /// One non-blocking `accept(2)` / `recvfrom(2)`.
        fn get_request(
            ctx: &Arc<Context>,
            sock: &Arc<Socket>,
            buf: &mut RecvBuf,
        ) -> io::Result<Polled<Self::Incoming>>;
        /// The peer of a raw request.
        fn incoming_addr(inc: &Self::Incoming) -> &ClientAddr;
        /// What the transport sends before the request proper, read on the thread that
        /// runs the request: for streams the PROXY protocol header when the server expects
        /// one (the client's address replaces the proxy's). `None`: refused, and already
        /// counted, logged and closed.
        fn preamble(inc: Self::Incoming, ctx: &Arc<Context>) -> Option<Self::Incoming>;
        /// Builds the request object: Python's `StreamRequestHandler.setup` /
        /// `DatagramRequestHandler.setup` part (timeouts, `rfile`, `wfile`).
        fn open(inc: Self::Incoming, ctx: &Arc<Context>) -> io::Result<Self>;
        /// The flavour's own `finish`: the datagram reply is sent here.
        fn complete(&mut self) -> io::Result<()>;
        /// Python's `shutdown_request`: for streams `shutdown(SHUT_WR)` then close.
        fn shutdown_request(self);
        /// A raw stream request as its socket and peer (`Err` for datagrams): what the
        /// evented reactor takes over.
        fn into_stream(inc: Self::Incoming) -> Result<(Socket, ClientAddr), Self::Incoming>;
        /// `shutdown_request` for a raw request that never became a request object
        /// (refused by `verify_request`, the overload policy, or a forced close).
        fn close_incoming(inc: Self::Incoming);
        /// Datagram flavours: an empty request for a thread that runs the datagrams it
        /// receives itself, one after the other, to refill for each
        /// ([`next_reused`](Self::next_reused)) instead of building a request per datagram:
        /// no reference count touched, and (IP peers) no allocation. `None` for streams (a connection is
        /// its own request).
        fn reusable(ctx: &Arc<Context>, sock: &Arc<Socket>) -> Option<Self>;
        /// The next datagram of `buf` (receiving without waiting when none is pending),
        /// written into `req` as a fresh request: what `get_request` + `open` make, and no
        /// trace of the previous one; `Ready` carries its sender. Its reply waits in `req`
        /// after `complete` for [`reply_reused`](Self::reply_reused).
        fn next_reused(
            ctx: &Arc<Context>,
            sock: &Socket,
            buf: &mut RecvBuf,
            req: &mut Self,
        ) -> io::Result<Polled<ClientAddr>>;
        /// A reused request has run: its reply (if it has one) joins `buf`'s replies, sent
        /// together by [`RecvBuf::flush_replies`]; with no `buf`, it is sent now (a failure
        /// goes to `handle_error`).
        fn reply_reused(req: &mut Self, buf: Option<&mut RecvBuf>, ctx: &Context);
    }
}

/// A request type a server can hand to handlers: [`StreamRequest`] or [`DatagramRequest`].
///
/// Sealed: the two flavours are the crate's. Handlers are written against one of them.
pub trait Request: sealed::RequestKind {}
impl Request for StreamRequest {}
impl Request for DatagramRequest {}

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

/// Scratch space reused by the serving loop between receives: for datagram transports a
/// batch of receive buffers (`recvmmsg(2)` on Linux), nothing for streams.
#[derive(Debug)]
pub struct RecvBuf(
    Option<crate::sys::RecvBatch>,
    /// Replies of the datagrams handled inline, sent together once the batch is done.
    Option<ReplyQueue>,
);

/// The replies queued by the datagrams of one receive batch (`wfile`s), shared by the
/// requests that queue them and the thread that sends them.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReplyQueue(Arc<parking_lot::Mutex<crate::sys::SendBatch>>);

impl ReplyQueue {
    /// Sends what is queued (`sendmmsg(2)` on Linux); a reply that cannot be sent goes to
    /// `handle_error`.
    pub(crate) fn flush(&self, ctx: &Context, sock: &Socket) {
        let mut batch = self.0.lock();
        if batch.is_empty() {
            return;
        }
        batch.flush(sock, ctx.options.write_timeout, |to, e| {
            let addr = ClientAddr::from_sockaddr(to);
            ctx.report_error(&addr, &crate::error::HandlerError::Io(e));
        });
    }

    /// Queues one reply.
    pub(crate) fn push(&self, to: socket2::SockAddr, data: Vec<u8>) {
        self.0.lock().push(to, data);
    }

    /// Two empty buffers (a packet's and its reply's), reused when some are spare.
    pub(crate) fn take_buffers(&self) -> (Vec<u8>, Vec<u8>) {
        let mut batch = self.0.lock();
        (batch.take_buffer(), batch.take_buffer())
    }

    /// Keeps a finished request's buffers for the next datagrams.
    pub(crate) fn give_back(&self, packet: Vec<u8>, reply: Vec<u8>) {
        let mut batch = self.0.lock();
        batch.give_back(packet);
        batch.give_back(reply);
    }
}

/// Memory the receive buffers of one receiving thread may take at most (virtual: pages
/// the kernel never writes are never mapped).
const RECV_BATCH_BYTES: usize = 4 << 20;

impl RecvBuf {
    /// For a stream transport: no buffer.
    pub(crate) fn none() -> RecvBuf {
        RecvBuf(None, None)
    }

    /// For a datagram transport whose requests are handled on the receiving thread, one
    /// after the other: up to [`BATCH_SLOTS`](crate::sys::BATCH_SLOTS) buffers of
    /// `max_packet_size` bytes, and the replies sent together
    /// ([`flush_replies`](Self::flush_replies)).
    /// Without `inline`, the requests go elsewhere (a pool, a child) and send their own
    /// replies.
    pub(crate) fn datagrams(max_packet_size: usize, inline: bool) -> RecvBuf {
        let slots = (RECV_BATCH_BYTES / max_packet_size.max(1)).clamp(1, crate::sys::BATCH_SLOTS);
        RecvBuf(
            Some(crate::sys::RecvBatch::new(max_packet_size, slots)),
            inline.then(ReplyQueue::default),
        )
    }

    /// For one datagram per receive (`handle_request`): one buffer, nothing left behind in
    /// a batch, and the reply sent by the request itself (no queue to flush).
    pub(crate) fn single(max_packet_size: usize) -> RecvBuf {
        RecvBuf(Some(crate::sys::RecvBatch::new(max_packet_size, 1)), None)
    }

    /// Sends the replies queued by the datagrams handled since the last flush; a reply that
    /// cannot be sent goes to `handle_error`.
    pub(crate) fn flush_replies(&self, ctx: &Context, sock: &Socket) {
        if let Some(replies) = &self.1 {
            replies.flush(ctx, sock);
        }
    }

    /// The queue [`flush_replies`](Self::flush_replies) sends, for a thread that does not
    /// hold this buffer.
    pub(crate) fn reply_queue(&self) -> Option<ReplyQueue> {
        self.1.clone()
    }

    /// Datagrams already received and not yet handed out.
    pub(crate) fn has_pending(&self) -> bool {
        self.0.as_ref().is_some_and(|b| b.has_pending())
    }
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
    }
}

/// A request type a server can hand to handlers: [`StreamRequest`] or [`DatagramRequest`].
///
/// Sealed: the two flavours are the crate's. Handlers are written against one of them.
pub trait Request: sealed::RequestKind {}
impl Request for StreamRequest {}
impl Request for DatagramRequest {}

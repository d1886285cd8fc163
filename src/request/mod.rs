//! What a handler receives: [`StreamRequest`] (TCP, Unix stream) or [`DatagramRequest`] (UDP,
//! Unix datagram). Python passes `request`, `client_address` and `server` to the handler's
//! constructor; here they travel together in one request value that every hook receives.

mod datagram;
mod message;
mod stream;
mod takeover;

pub use datagram::{DatagramRequest, ReplyBuffer};
pub use message::{Channel, ChannelHandle};
pub(crate) use message::{Closing, Outlet};
pub use stream::{Connection, SocketWriter, StreamRequest};
pub use takeover::BlockingStream;

use std::io;
use std::mem::MaybeUninit;
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

/// Scratch space reused by the serving loop between receives (datagram transports).
pub type RecvBuf = Vec<MaybeUninit<u8>>;

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

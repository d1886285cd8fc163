//! What a [`MessageHandler`](crate::MessageHandler) receives besides the message itself
//! (cut from the byte stream by a [`MessageFraming`](crate::framing::MessageFraming)): a
//! [`Channel`] to reply on, and [`ChannelHandle`]s to reach it from elsewhere.
//!
//! This is Python's `asynchat` model (`set_terminator`, `found_terminator`, `push`,
//! `close_when_done`): the server reads, frames and buffers; the handler sees whole
//! messages and never blocks on its own socket. The same handler runs in every stream mode:
//! in [`Evented`](crate::Evented) mode idle connections wait in the poller and a thread is
//! used only while a message is handled; in the classic modes a thread reads messages in a
//! loop.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use super::proxy::ProxyHeader;
use crate::addr::ClientAddr;
use crate::context::ServerHandle;

/// Where a channel's bytes go: the evented reactor's connection, or a blocking socket.
/// Implemented below `request` for the blocking case and by the reactor (`mode`).
pub(crate) trait Outlet: Send + Sync + fmt::Debug {
    /// Queues (or sends) `data` from any thread; fails once the connection is closed, or
    /// when more than the connection's output limit waits for a peer that does not read.
    fn push(&self, data: &[u8]) -> io::Result<()>;
    /// Closes the connection after what is queued has been sent.
    fn close(&self);
    /// Still open?
    fn is_open(&self) -> bool;
    /// The socket's descriptor (-1 once it is gone).
    fn raw_fd(&self) -> RawFd;
}

/// How a channel ends, as its handler asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closing {
    /// Keep going.
    No,
    /// Send what is queued, then close (asynchat's `close_when_done`).
    WhenDone,
}

/// The connection a [`MessageHandler`](crate::MessageHandler) replies on: Python's
/// `asynchat.async_chat` channel. Writing never blocks the handler: bytes are queued and
/// sent by the server when the socket can take them.
///
/// - [`push`](Self::push) (or `io::Write`) queues a reply; it is sent after the handler
///   returns, in one `send` with the rest of this message's replies;
/// - [`handle`](Self::handle) gives a [`ChannelHandle`] to keep (say, in a chat room) and
///   push to this connection from any thread or any other connection's handler;
/// - [`close_when_done`](Self::close_when_done) closes once the queue is sent.
pub struct Channel {
    pub(crate) out: Vec<u8>,
    pub(crate) outlet: Arc<dyn Outlet>,
    client_address: ClientAddr,
    proxy: Option<Box<ProxyHeader>>,
    server: ServerHandle,
    pub(crate) closing: Closing,
    /// The handler asked for the connection in blocking mode after this message.
    pub(crate) take_over: bool,
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::TlsInfo>,
}

impl Channel {
    pub(crate) fn new(
        outlet: Arc<dyn Outlet>,
        client_address: ClientAddr,
        server: ServerHandle,
    ) -> Channel {
        Channel {
            out: Vec::new(),
            outlet,
            client_address,
            proxy: None,
            server,
            closing: Closing::No,
            take_over: false,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Queues `data` to be sent to this connection's peer (asynchat's `push`).
    pub fn push(&mut self, data: &[u8]) {
        self.out.extend_from_slice(data);
    }

    /// Closes the connection once everything queued has been sent (asynchat's
    /// `close_when_done`). No further message is handled.
    pub fn close_when_done(&mut self) {
        self.closing = Closing::WhenDone;
    }

    /// Asks for the connection in blocking mode once this `handle` returns: the replies
    /// queued so far are sent, then
    /// [`MessageHandler::handle_blocking`](crate::MessageHandler::handle_blocking) gets a
    /// [`BlockingStream`](crate::BlockingStream) to read and write the socket directly — a
    /// large body streamed to disk, a long reply written as it is produced — for as long as
    /// it likes, bounded by the server's read and write timeouts. When it returns, framing
    /// resumes after what it read (in evented mode the connection goes back to the poller).
    ///
    /// The thread is held meanwhile, as in the classic modes: keep it for bodies and
    /// transfers, not for waiting on a slow peer's next message.
    pub fn take_over(&mut self) {
        self.take_over = true;
    }

    /// A handle to this connection, for other threads and other connections' handlers.
    pub fn handle(&self) -> ChannelHandle {
        ChannelHandle {
            outlet: self.outlet.clone(),
            client_address: self.client_address.clone(),
        }
    }

    /// The peer's address (Python's `client_address`).
    pub fn client_address(&self) -> &ClientAddr {
        &self.client_address
    }

    /// The connection's PROXY protocol header, when the server expects one
    /// ([`Builder::proxy_protocol`](crate::Builder::proxy_protocol)); `None` otherwise.
    /// [`client_address`](Self::client_address) is then the client the header names.
    pub fn proxy_header(&self) -> Option<&ProxyHeader> {
        self.proxy.as_deref()
    }

    /// The connection came through a proxy: its header names the client.
    pub(crate) fn set_proxy_header(&mut self, header: Box<ProxyHeader>) {
        self.client_address = header.client_address().clone();
        self.proxy = Some(header);
    }

    /// The server (Python's `self.server`): shared state, statistics, `shutdown`.
    pub fn server(&self) -> &ServerHandle {
        &self.server
    }

    /// What the TLS handshake negotiated (see [`StreamRequest::tls`](crate::StreamRequest::tls));
    /// `None` on a plaintext server. Feature `tls`.
    #[cfg(feature = "tls")]
    pub fn tls(&self) -> Option<&crate::tls::TlsInfo> {
        self.tls.as_ref()
    }

    #[cfg(feature = "tls")]
    pub(crate) fn set_tls(&mut self, info: crate::tls::TlsInfo) {
        self.tls = Some(info);
    }

    /// Takes the replies queued by the handler (for the runner to send).
    pub(crate) fn take_out(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }
}

/// The connection's socket (for `poll(2)` on it, `getsockopt`…): reading or writing it
/// directly bypasses the server's framing and output queue; use
/// [`take_over`](Channel::take_over) for that.
impl AsRawFd for Channel {
    fn as_raw_fd(&self) -> RawFd {
        self.outlet.raw_fd()
    }
}

impl io::Write for Channel {
    /// Queues all of `buf`; never blocks, never fails.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("client_address", &self.client_address)
            .field("queued", &self.out.len())
            .finish_non_exhaustive()
    }
}

/// A clonable, `Send + Sync` handle to a connection of a message server: push bytes to it
/// from anywhere (a chat room's broadcast), or close it.
///
/// [`push`](Self::push) never blocks: bytes the socket cannot take now are queued and sent
/// when the peer reads. A peer that stops reading is bounded: past the connection's output
/// limit ([`Builder::max_output`](crate::Builder::max_output), default 1 MiB) `push` fails with
/// `WouldBlock`, and a queue that makes no progress for the write timeout closes the
/// connection.
#[derive(Clone)]
pub struct ChannelHandle {
    outlet: Arc<dyn Outlet>,
    client_address: ClientAddr,
}

impl ChannelHandle {
    /// Queues `data` for the peer. Errors: `NotConnected` once closed; `WouldBlock` when
    /// the peer is not reading and its queue is full.
    pub fn push(&self, data: &[u8]) -> io::Result<()> {
        self.outlet.push(data)
    }

    /// Closes the connection once what is queued has been sent.
    pub fn close(&self) {
        self.outlet.close()
    }

    /// Is the connection still open?
    pub fn is_open(&self) -> bool {
        self.outlet.is_open()
    }

    /// The peer's address.
    pub fn client_address(&self) -> &ClientAddr {
        &self.client_address
    }
}

impl fmt::Debug for ChannelHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelHandle")
            .field("client_address", &self.client_address)
            .field("open", &self.is_open())
            .finish()
    }
}

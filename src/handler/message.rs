//! [`MessageHandler`]: a handler called once per complete message, living as long as its
//! connection — Python's `asynchat.async_chat` (`found_terminator`) and asyncio's
//! `Protocol` (`data_received`), with `setup`/`finish` as in `BaseRequestHandler`.
//!
//! The same handler runs in every stream mode. In [`Evented`](crate::Evented) mode the
//! reactor reads and frames; here, for the classic modes, [`Messages`] adapts it to a
//! [`BaseRequestHandler`] whose `handle` reads messages in a loop on its thread.

use std::io::{self, BufRead, Write};
use std::marker::PhantomData;
use std::net::Shutdown;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{BaseRequestHandler, HandlerFactory, IntoHandler};
use crate::framing::{MessageFraming, MessageReader};
use crate::request::{BlockingStream, Channel, Closing, Connection, Outlet, StreamRequest};

/// A handler for message protocols on stream transports (TCP, Unix stream): one instance
/// per connection, called once per complete message. Framing is chosen when the server is
/// built ([`Builder::framing`](crate::Builder::framing): lines by default, length-prefixed
/// frames, or a decoder of your own).
///
/// ```
/// use std::io;
/// use socketserver::{Channel, EventedTcpServer, MessageHandler};
///
/// /// Upper-cases every line, counting them: state lives as long as the connection.
/// #[derive(Default)]
/// struct Upper { lines: u64 }
///
/// impl MessageHandler for Upper {
///     fn handle(&mut self, ch: &mut Channel, line: &[u8]) -> io::Result<()> {
///         self.lines += 1;
///         ch.push(&line.to_ascii_uppercase());
///         Ok(())
///     }
/// }
///
/// let server = EventedTcpServer::bind("127.0.0.1:0", Upper::default)?;
/// # drop(server);
/// # Ok::<(), io::Error>(())
/// ```
///
/// Replies are queued ([`Channel::push`], or `write!` on the channel) and never block the
/// handler. A handler may block (a database call, a command) — other connections keep
/// being served while the pool has threads — but one that never blocks runs on the thread
/// that read its message, with no hand-off.
pub trait MessageHandler: Send + 'static {
    /// Called once, before the first message. An error skips everything else, `finish`
    /// included, and closes the connection.
    fn setup(&mut self, channel: &mut Channel) -> io::Result<()> {
        let _ = channel;
        Ok(())
    }

    /// Called once per complete message (for lines: the newline included). An error closes
    /// the connection (after `finish`) and goes to `handle_error`.
    fn handle(&mut self, channel: &mut Channel, message: &[u8]) -> io::Result<()>;

    /// The connection in blocking mode, after a `handle` that called
    /// [`Channel::take_over`]: read a large body as it arrives, write a long reply as it is
    /// made (see [`BlockingStream`]). Return to give the connection back to message framing
    /// (after what this read); an error closes it, as from `handle`. Default: an
    /// `Unsupported` error (a handler that never takes over need not write it).
    ///
    /// ```
    /// use std::io;
    /// use socketserver::{BlockingStream, Channel, EventedTcpServer, MessageHandler};
    ///
    /// /// `BODY n` is followed by n raw bytes, counted as they stream in.
    /// #[derive(Default)]
    /// struct Sink { want: u64 }
    ///
    /// impl MessageHandler for Sink {
    ///     fn handle(&mut self, ch: &mut Channel, line: &[u8]) -> io::Result<()> {
    ///         let n = std::str::from_utf8(line).ok().and_then(|l| l.trim().strip_prefix("BODY "));
    ///         self.want = n.and_then(|n| n.parse().ok()).ok_or(io::ErrorKind::InvalidData)?;
    ///         ch.take_over();
    ///         Ok(())
    ///     }
    ///     fn handle_blocking(&mut self, ch: &mut Channel, body: &mut BlockingStream) -> io::Result<()> {
    ///         let got = io::copy(&mut io::Read::take(body, self.want), &mut io::sink())?;
    ///         ch.push(format!("got {got}\n").as_bytes());
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let server = EventedTcpServer::bind("127.0.0.1:0", Sink::default)?;
    /// # drop(server);
    /// # Ok::<(), io::Error>(())
    /// ```
    fn handle_blocking(
        &mut self,
        channel: &mut Channel,
        stream: &mut BlockingStream<'_>,
    ) -> io::Result<()> {
        let _ = (channel, stream);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "Channel::take_over() was called but the handler has no handle_blocking",
        ))
    }

    /// Called once when the connection ends — the peer closed, the handler closed it, an
    /// error, a timeout, or the server's drain — even after `handle` failed or panicked.
    fn finish(&mut self, channel: &mut Channel) -> io::Result<()> {
        let _ = channel;
        Ok(())
    }
}

/// The marker for a [`MessageHandler`] constructor given to a server
/// (`EventedTcpServer::bind(addr, MyHandler::default)`); never named by users.
#[derive(Debug)]
pub struct Messages<H>(PhantomData<fn() -> H>);

struct MessageFactory<F>(F);

impl<F, H> HandlerFactory<StreamRequest> for MessageFactory<F>
where
    F: Fn() -> H + Send + Sync + 'static,
    H: MessageHandler,
{
    fn new_handler(&self) -> Box<dyn BaseRequestHandler<StreamRequest>> {
        Box::new(Blocking {
            handler: Box::new((self.0)()),
            channel: None,
        })
    }

    fn new_message_handler(&self) -> Option<Box<dyn MessageHandler>> {
        Some(Box::new((self.0)()))
    }

    fn handles_messages(&self) -> bool {
        true
    }
}

impl<F, H> IntoHandler<StreamRequest, Messages<H>> for F
where
    F: Fn() -> H + Send + Sync + 'static,
    H: MessageHandler,
{
    fn into_factory(self) -> Arc<dyn HandlerFactory<StreamRequest>> {
        Arc::new(MessageFactory(self))
    }
}

/// A message handler in a classic mode: its thread reads messages in a loop.
struct Blocking {
    handler: Box<dyn MessageHandler>,
    channel: Option<Channel>,
}

/// The classic modes' outlet: a blocking socket whose writes are serialized, so that
/// pushes from other threads never interleave with the handler's replies.
#[derive(Debug)]
struct BlockingOutlet {
    conn: Connection,
    lock: Mutex<bool>,
}

impl Outlet for BlockingOutlet {
    fn push(&self, data: &[u8]) -> io::Result<()> {
        let open = self.lock.lock();
        if !*open {
            return Err(io::ErrorKind::NotConnected.into());
        }
        (&self.conn).write_all(data)
    }

    fn close(&self) {
        *self.lock.lock() = false;
        let _ = self.conn.shutdown(Shutdown::Both);
    }

    fn is_open(&self) -> bool {
        *self.lock.lock()
    }

    fn raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.conn)
    }
}

impl Blocking {
    fn channel(&mut self, req: &StreamRequest) -> &mut Channel {
        self.channel.get_or_insert_with(|| {
            let outlet = Arc::new(BlockingOutlet {
                conn: req.connection().clone(),
                lock: Mutex::new(true),
            });
            let mut ch = Channel::new(outlet, req.client_address().clone(), req.server().clone());
            if let Some(h) = req.proxy_header() {
                ch.set_proxy_header(Box::new(h.clone()));
            }
            #[cfg(feature = "tls")]
            if let Some(info) = req.tls() {
                ch.set_tls(info.clone());
            }
            ch
        })
    }

    fn flush(channel: &mut Channel) -> io::Result<()> {
        let out = channel.take_out();
        if out.is_empty() {
            return Ok(());
        }
        let r = channel.outlet.push(&out);
        // Keep the allocation for the next message.
        let mut out = out;
        out.clear();
        channel.out = out;
        r
    }
}

impl BaseRequestHandler<StreamRequest> for Blocking {
    fn setup(&mut self, req: &mut StreamRequest) -> io::Result<()> {
        self.channel(req);
        let Blocking { handler, channel } = self;
        let ch = channel.as_mut().ok_or(io::ErrorKind::NotConnected)?;
        handler.setup(ch)?;
        Blocking::flush(ch)
    }

    fn handle(&mut self, req: &mut StreamRequest) -> io::Result<()> {
        let framing = req.server().0.options.framing.clone();
        let mut reader = MessageReader::new(&framing);
        let Blocking { handler, channel } = self;
        let ch = channel.as_mut().ok_or(io::ErrorKind::NotConnected)?;
        // Bytes `rfile` already buffered come first.
        let early = req.rfile.buffer().to_vec();
        req.rfile.consume(early.len());
        let mut early = &early[..];
        if !early.is_empty() {
            while reader.read_from(&mut early)? > 0 {}
        }
        loop {
            while ch.closing == Closing::No && ch.outlet.is_open() && reader.next()? {
                handler.handle(ch, reader.message())?;
                Blocking::flush(ch)?;
                if std::mem::take(&mut ch.take_over) {
                    let mut stream = BlockingStream::over(&mut reader, req.connection());
                    handler.handle_blocking(ch, &mut stream)?;
                    Blocking::flush(ch)?;
                }
            }
            if ch.closing != Closing::No || !ch.outlet.is_open() {
                return Ok(());
            }
            if reader.read_from(req.rfile.get_mut())? == 0 {
                let rest = reader.take_rest();
                if !rest.is_empty() {
                    if matches!(framing, MessageFraming::Lines { .. }) {
                        handler.handle(ch, &rest)?;
                        Blocking::flush(ch)?;
                    } else {
                        return Err(MessageReader::truncated(rest.len()));
                    }
                }
                return Ok(());
            }
        }
    }

    fn finish(&mut self, req: &mut StreamRequest) -> io::Result<()> {
        self.channel(req);
        let Blocking { handler, channel } = self;
        let ch = channel.as_mut().ok_or(io::ErrorKind::NotConnected)?;
        let r = handler.finish(ch);
        let flushed = Blocking::flush(ch);
        ch.outlet.close();
        r.and(flushed)
    }
}

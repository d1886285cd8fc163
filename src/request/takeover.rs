//! [`BlockingStream`]: a message connection taken over in blocking mode for a while — to
//! stream a large body to disk with [`FileReceiver`](crate::framing::FileReceiver), say —
//! then handed back to message framing (and, in evented mode, to the poller).
//!
//! A [`MessageHandler`](crate::MessageHandler) asks for it with
//! [`Channel::take_over`](crate::Channel::take_over) from `handle`; when `handle` returns,
//! the server flushes the replies queued so far, puts the socket in blocking mode with the
//! server's read and write timeouts, and calls
//! [`MessageHandler::handle_blocking`](crate::MessageHandler::handle_blocking) with this
//! stream. Bytes the server had already read past the message come first; whatever the
//! handler leaves unread is framed again as messages when it returns.

use std::fmt;
use std::io::{self, BufRead, Read, Write};
use std::time::Duration;

use socket2::Socket;

use super::Connection;
use crate::framing::MessageReader;

/// What a [`BlockingStream`] reads and writes: the evented mode's socket, or a classic
/// mode's [`Connection`] (plaintext through its TLS session, if any).
#[derive(Clone, Copy)]
enum Io<'a> {
    Socket(&'a Socket),
    Connection(&'a Connection),
    /// The evented mode's TLS session over its socket (in blocking mode meanwhile).
    #[cfg(feature = "tls")]
    Tls(&'a Socket, &'a crate::tls::Session),
}

impl<'a> Io<'a> {
    fn read(self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Io::Socket(mut s) => retry(|| s.read(buf)),
            Io::Connection(c) => c.read_direct(buf),
            #[cfg(feature = "tls")]
            Io::Tls(s, tls) => tls.read(s, buf),
        }
    }

    fn write(self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Io::Socket(mut s) => retry(|| s.write(buf)),
            Io::Connection(c) => c.write_direct(buf),
            #[cfg(feature = "tls")]
            Io::Tls(s, tls) => tls.write_vectored(s, &[std::io::IoSlice::new(buf)]),
        }
    }

    fn socket(self) -> &'a Socket {
        match self {
            Io::Socket(s) => s,
            Io::Connection(c) => c.socket(),
            #[cfg(feature = "tls")]
            Io::Tls(s, _) => s,
        }
    }
}

/// `Read` for [`MessageReader::read_from`].
struct Reader<'a>(Io<'a>);

impl Read for Reader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

/// The connection of a message handler in blocking mode (see the module docs): `Read`,
/// `BufRead` and `Write` on the socket, after the bytes already buffered.
///
/// Reads and writes block, bounded by the server's `read_timeout` and `write_timeout`
/// (`SO_RCVTIMEO`/`SO_SNDTIMEO`; a timeout fails with `WouldBlock`/`TimedOut`), and are
/// retried on `EINTR`. Use its own `BufRead` (`read_line`, `fill_buf`) rather than wrapping
/// it in a `BufReader`: bytes a `BufReader` read ahead would be lost for the messages that
/// follow.
pub struct BlockingStream<'a> {
    reader: &'a mut MessageReader,
    io: Io<'a>,
    read: u64,
    written: u64,
}

impl<'a> BlockingStream<'a> {
    /// With `timeouts`, puts `sock` in blocking mode with these read and write timeouts
    /// (the caller makes it non-blocking again afterwards); without, `sock` already blocks.
    pub(crate) fn new(
        reader: &'a mut MessageReader,
        sock: &'a Socket,
        timeouts: Option<(Option<Duration>, Option<Duration>)>,
    ) -> io::Result<BlockingStream<'a>> {
        if let Some((read, write)) = timeouts {
            sock.set_nonblocking(false)?;
            sock.set_read_timeout(read)?;
            sock.set_write_timeout(write)?;
        }
        Ok(BlockingStream {
            reader,
            io: Io::Socket(sock),
            read: 0,
            written: 0,
        })
    }

    /// [`new`](Self::new) with TLS: plaintext through the evented connection's session.
    #[cfg(feature = "tls")]
    pub(crate) fn with_tls(
        reader: &'a mut MessageReader,
        sock: &'a Socket,
        tls: &'a crate::tls::Session,
        timeouts: Option<(Option<Duration>, Option<Duration>)>,
    ) -> io::Result<BlockingStream<'a>> {
        let mut stream = BlockingStream::new(reader, sock, timeouts)?;
        stream.io = Io::Tls(sock, tls);
        Ok(stream)
    }

    /// Over a classic mode's connection, which already blocks.
    pub(crate) fn over(reader: &'a mut MessageReader, conn: &'a Connection) -> BlockingStream<'a> {
        BlockingStream {
            reader,
            io: Io::Connection(conn),
            read: 0,
            written: 0,
        }
    }

    /// Bytes the handler has read through this stream so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// Bytes the handler has written through this stream so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// The socket, for options (`set_read_timeout` for a longer body, say). Reading from it
    /// directly skips the bytes already buffered here: read through the stream.
    pub fn socket(&self) -> &Socket {
        self.io.socket()
    }
}

fn retry<T>(mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match op() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

/// `recv` after the bytes already buffered; `Ok(0)` is the peer's end of stream.
impl Read for BlockingStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let unread = self.reader.unread();
        let n = if unread.is_empty() {
            self.io.read(buf)?
        } else {
            let n = unread.len().min(buf.len());
            buf[..n].copy_from_slice(&unread[..n]);
            self.reader.consume(n);
            n
        };
        self.read += n as u64;
        Ok(n)
    }
}

/// The buffer is the connection's own message buffer: what is not consumed stays for the
/// messages after the take-over.
impl BufRead for BlockingStream<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.reader.unread().is_empty() {
            self.reader.read_from(&mut Reader(self.io))?;
        }
        Ok(self.reader.unread())
    }

    fn consume(&mut self, amt: usize) {
        let n = amt.min(self.reader.unread().len());
        self.reader.consume(n);
        self.read += n as u64;
    }
}

/// `send`, blocking up to the write timeout.
impl Write for BlockingStream<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.io.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl fmt::Debug for BlockingStream<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockingStream")
            .field("buffered", &self.reader.unread().len())
            .field("read", &self.read)
            .field("written", &self.written)
            .finish()
    }
}

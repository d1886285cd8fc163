//! [`Session`]: a rustls server connection over a blocking socket, shared by every clone of
//! a [`Connection`](crate::Connection).
//!
//! Clones may read and write from different threads (a chat room pushing to a member
//! while its handler reads), so the session state sits behind a mutex, and the blocking
//! `recv` happens **outside** it: a reader takes the reader lock (readers are served one
//! at a time, so records are fed in the order they arrived), receives ciphertext into its
//! own buffer, then locks the session to feed it (`read_tls`, `process_new_packets`), to
//! send what that produced (alerts, key updates) and to take the plaintext. A writer locks
//! the session, hands it plaintext and sends the records (`write_tls`) before unlocking, so
//! the records of two writers never interleave.

use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use rustls::{ServerConfig, ServerConnection};
use socket2::Socket;

use super::{TlsInfo, Truncated};

/// The largest TLS record on the wire (16 KiB of data, header, padding and tag), so that
/// a receive buffer holds at least one whole record.
const RECV_BUF: usize = 16 * 1024 + 2048;

/// Where the ciphertext fed to a session so far stands in TLS's record framing (RFC 8446
/// §5.1: a 5-byte header, whose last two bytes are the length of the body that follows).
/// rustls keeps a record that came in part to itself; this tells the evented drain that a
/// request is still on its way although no plaintext is buffered.
#[derive(Debug, Default)]
pub(super) struct RecordCursor {
    /// Header bytes of the next record seen (0 at a record boundary).
    head: u8,
    /// The high byte of the length, once seen.
    len_hi: u8,
    /// Body bytes of the current record still to come.
    left: usize,
    /// Has any ciphertext come at all?
    any: bool,
}

/// Bytes in a TLS record header: type, legacy version (2), length (2).
const RECORD_HEADER: u8 = 5;

impl RecordCursor {
    /// Moves past `bytes`, fed to the session in the order they arrived.
    pub(super) fn saw(&mut self, mut bytes: &[u8]) {
        self.any |= !bytes.is_empty();
        while let Some((&b, rest)) = bytes.split_first() {
            if self.left > 0 {
                let k = self.left.min(bytes.len());
                self.left -= k;
                bytes = &bytes[k..];
                continue;
            }
            match self.head {
                3 => self.len_hi = b,
                4 => self.left = usize::from(u16::from_be_bytes([self.len_hi, b])),
                _ => {}
            }
            self.head = (self.head + 1) % RECORD_HEADER;
            bytes = rest;
        }
    }

    /// Is a record in part in the session (its header or body not all there)?
    pub(super) fn mid_record(&self) -> bool {
        self.head > 0 || self.left > 0
    }

    /// Has the peer sent nothing yet?
    pub(super) fn nothing_yet(&self) -> bool {
        !self.any
    }
}

/// Ciphertext received and not yet fed to the session.
#[derive(Debug)]
pub(super) struct Inbox {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// Where what was fed so far stands (the evented mode's drain asks).
    pub(super) records: RecordCursor,
}

impl Inbox {
    pub(super) fn new() -> Inbox {
        Inbox {
            buf: vec![0; RECV_BUF].into_boxed_slice(),
            start: 0,
            end: 0,
            records: RecordCursor::default(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// `recv` into the free space (the buffer is empty when this is called).
    fn recv(&mut self, sock: &Socket) -> io::Result<usize> {
        self.start = 0;
        self.end = 0;
        let n = retry(|| {
            let mut s = sock;
            s.read(&mut self.buf)
        })?;
        self.end = n;
        Ok(n)
    }

    /// Feeds the session one `read_tls` of what it holds, then lets it process that.
    pub(super) fn feed(&mut self, conn: &mut ServerConnection, sock: &Socket) -> io::Result<()> {
        let mut rest = &self.buf[self.start..self.end];
        match conn.read_tls(&mut rest)? {
            // close_notify received: nothing more is read; the rest is dropped.
            0 => self.start = self.end,
            n => {
                self.records.saw(&self.buf[self.start..self.start + n]);
                self.start += n;
            }
        }
        process(conn, sock)
    }
}

/// A TLS server session over a blocking socket (see the module docs).
#[derive(Debug)]
pub(crate) struct Session {
    pub(super) conn: Mutex<ServerConnection>,
    /// Held by the one reader at a time, across its `recv`.
    pub(super) inbox: Mutex<Inbox>,
    /// Evented mode: did the last non-blocking read leave the socket and the session
    /// empty (its `recv` came back short and no plaintext is left)?
    pub(super) drained: std::sync::atomic::AtomicBool,
}

/// `op`, retried on `EINTR`.
fn retry<T>(mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match op() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

/// The socket as rustls's output: `sendmsg`, retried on `EINTR`.
struct Out<'a>(&'a Socket);

impl Write for Out<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        retry(|| {
            let mut s = self.0;
            s.write(buf)
        })
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        retry(|| {
            let mut s = self.0;
            s.write_vectored(bufs)
        })
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Sends every record the session holds.
fn send_records(conn: &mut ServerConnection, sock: &Socket) -> io::Result<()> {
    while conn.wants_write() {
        if conn.write_tls(&mut Out(sock))? == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
    }
    Ok(())
}

/// `process_new_packets`; a protocol error is sent to the peer as an alert (best effort)
/// and returned as [`io::ErrorKind::InvalidData`].
pub(super) fn process(conn: &mut ServerConnection, sock: &Socket) -> io::Result<()> {
    match conn.process_new_packets() {
        Ok(_) => Ok(()),
        Err(e) => {
            let _ = send_records(conn, sock);
            Err(io::Error::new(io::ErrorKind::InvalidData, e))
        }
    }
}

impl Session {
    pub(super) fn from_parts(conn: ServerConnection, inbox: Inbox) -> Session {
        Session {
            conn: Mutex::new(conn),
            inbox: Mutex::new(inbox),
            drained: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Runs the server side of the handshake on `sock` until it completes or `deadline`
    /// passes. The socket's read and write timeouts are set to the time left before each
    /// `recv` and `send` (the caller puts its own back). Fails with
    /// [`WouldBlock`](io::ErrorKind::WouldBlock) at the deadline,
    /// [`UnexpectedEof`](io::ErrorKind::UnexpectedEof) if the peer closed,
    /// [`InvalidData`](io::ErrorKind::InvalidData) for anything that is not a good TLS
    /// handshake (garbage, plaintext, a refused certificate), or the socket's error.
    pub(crate) fn handshake(
        sock: &Socket,
        config: Arc<ServerConfig>,
        deadline: Instant,
    ) -> io::Result<(Session, TlsInfo)> {
        let mut conn = ServerConnection::new(config).map_err(io::Error::other)?;
        let mut inbox = Inbox::new();
        let left = || {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                Err(io::Error::from(io::ErrorKind::WouldBlock))
            } else {
                Ok(left)
            }
        };
        loop {
            if conn.wants_write() {
                sock.set_write_timeout(Some(left()?))?;
                send_records(&mut conn, sock)?;
            }
            if !conn.is_handshaking() {
                break;
            }
            sock.set_read_timeout(Some(left()?))?;
            if inbox.recv(sock)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection during the handshake",
                ));
            }
            while !inbox.is_empty() && conn.is_handshaking() {
                inbox.feed(&mut conn, sock)?;
            }
        }
        let info = TlsInfo::of(&conn);
        Ok((Session::from_parts(conn, inbox), info))
    }

    /// Reads plaintext: what the session holds, else one `recv` (outside the session lock)
    /// and what it decrypts to. `Ok(0)` after the peer's `close_notify`; a TCP end of file
    /// without one fails with [`UnexpectedEof`](io::ErrorKind::UnexpectedEof) and
    /// [`Truncated`] inside. Socket errors (a timeout's `WouldBlock`) are returned as they are.
    pub(crate) fn read(&self, sock: &Socket, buf: &mut [u8]) -> io::Result<usize> {
        let mut inbox = self.inbox.lock();
        loop {
            {
                let mut conn = self.conn.lock();
                match conn.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, Truncated));
                    }
                    Err(e) => return Err(e),
                }
                if !inbox.is_empty() {
                    inbox.feed(&mut conn, sock)?;
                    send_records(&mut conn, sock)?;
                    continue;
                }
            }
            if inbox.recv(sock)? == 0 {
                let mut conn = self.conn.lock();
                // Marks the end of file: the reader then says clean or truncated.
                conn.read_tls(&mut io::empty())?;
                process(&mut conn, sock)?;
            }
        }
    }

    /// Encrypts and sends all of `bufs` (records of at most 16 KiB, sent as the session's
    /// buffer fills and at the end). Returns their total length.
    pub(crate) fn write_vectored(&self, sock: &Socket, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut conn = self.conn.lock();
        let mut total = 0;
        for b in bufs {
            let mut rest: &[u8] = b;
            while !rest.is_empty() {
                let n = conn.writer().write(rest)?;
                if n == 0 {
                    if !conn.wants_write() {
                        return Err(io::ErrorKind::WriteZero.into());
                    }
                    send_records(&mut conn, sock)?;
                }
                rest = &rest[n..];
                total += n;
            }
        }
        send_records(&mut conn, sock)?;
        Ok(total)
    }

    /// Does the session hold plaintext not read yet (or ciphertext not fed yet)?
    pub(crate) fn has_buffered(&self) -> bool {
        if !self.inbox.try_lock().is_none_or(|i| i.is_empty()) {
            return true;
        }
        let mut conn = self.conn.lock();
        conn.process_new_packets()
            .is_ok_and(|s| s.plaintext_bytes_to_read() > 0)
    }

    /// Sends `close_notify` (best effort). With `wait`, waits for a writer that holds the
    /// session; without, gives up if one does (a forced close must not block).
    pub(crate) fn close_notify(&self, sock: &Socket, wait: bool) {
        let conn = if wait {
            Some(self.conn.lock())
        } else {
            self.conn.try_lock()
        };
        if let Some(mut conn) = conn {
            conn.send_close_notify();
            let _ = send_records(&mut conn, sock);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RecordCursor;

    /// Two records (type, version, length, body): 3 and 0 bytes of body.
    const TWO: [u8; 13] = [23, 3, 3, 0, 3, 1, 2, 3, 21, 3, 3, 0, 0];

    #[test]
    fn the_record_cursor_is_mid_record_exactly_inside_a_header_or_a_body() {
        // Every split point, fed one byte at a time: a boundary after byte 0, 8 and 13 only.
        let mut c = RecordCursor::default();
        assert!(c.nothing_yet() && !c.mid_record());
        for (i, b) in TWO.iter().enumerate() {
            c.saw(std::slice::from_ref(b));
            assert_eq!(
                c.mid_record(),
                !matches!(i + 1, 8 | 13),
                "after {} bytes",
                i + 1
            );
        }
        assert!(!c.nothing_yet());
        // The same in two chunks, cut anywhere.
        for cut in 0..=TWO.len() {
            let mut c = RecordCursor::default();
            c.saw(&TWO[..cut]);
            c.saw(&TWO[cut..]);
            assert!(!c.mid_record(), "cut at {cut}");
        }
        // A 16 KiB body (length 0x4000) fed in pieces.
        let mut c = RecordCursor::default();
        c.saw(&[23, 3, 3, 0x40, 0x00]);
        c.saw(&[0; 0x3fff]);
        assert!(c.mid_record());
        c.saw(&[0]);
        assert!(!c.mid_record());
    }
}

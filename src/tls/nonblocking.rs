//! The evented mode's side of [`Session`]: the same session driven over a non-blocking
//! socket. The handshake and reads go as far as the socket allows and stop at `EAGAIN`
//! (the poller reports the next edge); records to send are appended to the connection's
//! output queue (ciphertext), which the reactor sends and keeps for the writable event.
//! A take-over uses the blocking half of the session ([`Session::read`],
//! [`Session::write_vectored`]) on the same state.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use rustls::{ServerConfig, ServerConnection};
use socket2::Socket;

use super::session::{Inbox, RecordCursor, process};
use super::{Session, TlsInfo, Truncated};

/// `recv` on the socket for `read_tls`, retried on `EINTR`; notes a short one (the socket
/// was emptied) and moves the record cursor past what came.
struct In<'a> {
    sock: &'a Socket,
    short: bool,
    records: &'a mut RecordCursor,
}

impl<'a> In<'a> {
    fn new(sock: &'a Socket, records: &'a mut RecordCursor) -> In<'a> {
        In {
            sock,
            short: false,
            records,
        }
    }
}

impl Read for In<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut s = self.sock;
            match s.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => {
                    if let Ok(n) = r {
                        self.short = n < buf.len();
                        self.records.saw(&buf[..n]);
                    } else {
                        self.short = false;
                    }
                    return r;
                }
            }
        }
    }
}

/// The largest plaintext sealed at once: one record.
const RECORD: usize = 16 * 1024;

impl Session {
    /// A session whose handshake has not started: for
    /// [`handshake_nonblocking`](Self::handshake_nonblocking).
    pub(crate) fn new(config: Arc<ServerConfig>) -> io::Result<Session> {
        let conn = ServerConnection::new(config).map_err(io::Error::other)?;
        Ok(Session::from_parts(conn, Inbox::new()))
    }

    /// Is the handshake still going on?
    pub(crate) fn is_handshaking(&self) -> bool {
        self.conn.lock().is_handshaking()
    }

    /// What the handshake negotiated (once it is done).
    pub(crate) fn info(&self) -> TlsInfo {
        TlsInfo::of(&self.conn.lock())
    }

    /// Feeds the session what the socket has, up to `EAGAIN`. `Ok(true)` once the
    /// handshake is done, `Ok(false)` if it waits for the peer (its records to send are
    /// for [`take_records`](Self::take_records)); errors as
    /// [`handshake`](Self::handshake)'s.
    pub(crate) fn handshake_nonblocking(&self, sock: &Socket) -> io::Result<bool> {
        let mut inbox = self.inbox.lock();
        let mut conn = self.conn.lock();
        while conn.is_handshaking() {
            match conn.read_tls(&mut In::new(sock, &mut inbox.records)) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed the connection during the handshake",
                    ));
                }
                Ok(_) => process(&mut conn, sock)?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// A non-blocking read of plaintext: what the session holds, else what the socket has.
    /// [`WouldBlock`](io::ErrorKind::WouldBlock) when both are empty; `Ok(0)` after the
    /// peer's `close_notify`; a TCP end of file without one fails with [`Truncated`].
    pub(crate) fn read_nonblocking(&self, sock: &Socket, buf: &mut [u8]) -> io::Result<usize> {
        let mut inbox = self.inbox.lock();
        let mut conn = self.conn.lock();
        let mut short = false;
        self.drained.store(false, Ordering::Relaxed);
        loop {
            match conn.reader().read(buf) {
                Ok(n) => {
                    if short && inbox.is_empty() {
                        let left = conn
                            .process_new_packets()
                            .map(|s| s.plaintext_bytes_to_read());
                        self.drained
                            .store(left.is_ok_and(|n| n == 0), Ordering::Relaxed);
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, Truncated));
                }
                Err(e) => return Err(e),
            }
            // Ciphertext a take-over received and left: first.
            if !inbox.is_empty() {
                inbox.feed(&mut conn, sock)?;
                continue;
            }
            let mut input = In::new(sock, &mut inbox.records);
            let r = conn.read_tls(&mut input);
            short = input.short;
            match r {
                Ok(_) => process(&mut conn, sock)?,
                Err(e) => return Err(e),
            }
        }
    }

    /// Did the last [`read_nonblocking`](Self::read_nonblocking) that returned plaintext
    /// empty both the socket (a short `recv`) and the session? Then the next bytes bring a
    /// new edge, and no `recv` is needed to hear `EAGAIN`.
    pub(crate) fn drained(&self) -> bool {
        self.drained.load(Ordering::Relaxed)
    }

    /// Evented drain: has the peer sent nothing at all (not even the start of a
    /// `ClientHello`)? Such a connection is idle: closed at once.
    pub(crate) fn nothing_received(&self) -> bool {
        self.inbox.lock().records.nothing_yet()
    }

    /// Evented drain: does the session hold part of a record (no plaintext yet, but a
    /// request on its way)? Such a connection waits, as one with part of a plaintext
    /// message buffered does.
    pub(crate) fn mid_record(&self) -> bool {
        self.inbox.lock().records.mid_record()
    }

    /// Encrypts `plain` and appends the records to `out`.
    pub(crate) fn seal_into(&self, plain: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        let mut conn = self.conn.lock();
        for chunk in plain.chunks(RECORD) {
            conn.writer().write_all(chunk)?;
            while conn.wants_write() {
                conn.write_tls(out)?;
            }
        }
        Ok(())
    }

    /// Appends the records the session has to send (handshake messages, tickets, alerts,
    /// `close_notify`) to `out`.
    pub(crate) fn take_records(&self, out: &mut Vec<u8>) {
        let mut conn = self.conn.lock();
        while conn.wants_write() {
            if conn.write_tls(out).is_err() {
                break;
            }
        }
    }

    /// Queues `close_notify` (for [`take_records`](Self::take_records)).
    pub(crate) fn queue_close_notify(&self) {
        self.conn.lock().send_close_notify();
    }
}

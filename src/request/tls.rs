//! TLS on a stream request (feature `tls`): the handshake that [`StreamRequest::open`]
//! runs on the worker — never on the accepting thread — under the server's handshake
//! deadline ([`Builder::tls_handshake_timeout`](crate::Builder::tls_handshake_timeout)).
//!
//! [`StreamRequest::open`]: super::StreamRequest

use std::io;
use std::time::{Duration, Instant};

use socket2::Socket;

use crate::context::Context;
use crate::tls::{HandshakeError, Session, TlsInfo};

/// With TLS on, the server side of the handshake on a freshly accepted socket, with the
/// configuration current at this moment (a reload applies to the next connection). The
/// socket's read and write timeouts are the server's again afterwards.
///
/// A client that does not finish within the deadline, garbage, a plaintext client or a
/// refused certificate fail with a [`HandshakeError`] inside the error: the pipeline's
/// report counts it in `tls_failures` and logs one line; the socket closes when dropped.
pub(crate) fn accept(sock: &Socket, ctx: &Context) -> io::Result<Option<(Session, TlsInfo)>> {
    let Some(slot) = &ctx.options.tls else {
        return Ok(None);
    };
    let limit = ctx.options.tls_handshake_timeout;
    let r = Session::handshake(sock, slot.get(), Instant::now() + limit);
    sock.set_read_timeout(ctx.options.read_timeout)?;
    sock.set_write_timeout(ctx.options.write_timeout)?;
    r.map(Some).map_err(|e| handshake_failed(e, limit))
}

/// The error of a failed handshake, as the report counts it: a [`HandshakeError`] inside;
/// `WouldBlock` (the deadline, `limit`) becomes [`TimedOut`](io::ErrorKind::TimedOut).
pub(crate) fn handshake_failed(e: io::Error, limit: Duration) -> io::Error {
    let (kind, why) = match e.kind() {
        io::ErrorKind::WouldBlock => (
            io::ErrorKind::TimedOut,
            format!("not done within {limit:?} (tls_handshake_timeout)"),
        ),
        kind => (kind, e.to_string()),
    };
    io::Error::new(kind, HandshakeError(why))
}

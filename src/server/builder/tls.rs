//! The TLS knobs of [`Builder`] (feature `tls`).

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::Builder;
use crate::mode::Mode;
use crate::tls::{ClientAuth, TlsSlot};
use crate::transport::Transport;

impl<T: Transport, M: Mode> Builder<T, M> {
    /// TLS on every accepted connection, with this rustls configuration (certificates,
    /// client authentication, ALPN, SNI resolver…). Default: off (plaintext).
    ///
    /// Each connection's handshake runs in the mode's worker (a pool thread, the forked
    /// child, the serving thread in synchronous mode; in evented mode, non-blocking in the
    /// connection's first turns, holding no thread while it waits), never on the accepting
    /// thread, and must finish within
    /// [`tls_handshake_timeout`](Self::tls_handshake_timeout); then the handler's `rfile`,
    /// `wfile` and framing carry plaintext, and
    /// [`StreamRequest::tls`](crate::StreamRequest::tls) (or
    /// [`Channel::tls`](crate::Channel::tls)) tells what was negotiated. The configuration
    /// can be replaced while serving
    /// ([`ServerHandle::set_tls_config`](crate::ServerHandle::set_tls_config)). Stream
    /// transports only (TCP, Unix stream), in every mode.
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.options.tls = Some(TlsSlot::new(config));
        self
    }

    /// TLS with the certificate chain and private key of these PEM files
    /// ([`tls::server_config`](crate::tls::server_config), no client authentication).
    ///
    /// # Errors
    /// A file that cannot be read, holds no certificate or key, or a key that does not
    /// fit the certificate.
    pub fn tls_pem(self, cert: impl AsRef<Path>, key: impl AsRef<Path>) -> io::Result<Self> {
        let config = crate::tls::server_config(cert, key, ClientAuth::Off)?;
        Ok(self.tls(Arc::new(config)))
    }

    /// How long a client has, from the moment a worker takes its connection, to finish
    /// the TLS handshake; then the connection is closed (counted in
    /// [`Stats::tls_failures`](crate::Stats::tls_failures)), so a client that connects and
    /// sends nothing, or a byte at a time, holds a worker no longer than this. Each
    /// `recv`/`send` of the handshake waits at most the time left (`SO_RCVTIMEO`,
    /// `SO_SNDTIMEO`). Default: [`DEFAULT_TLS_HANDSHAKE_TIMEOUT`](crate::DEFAULT_TLS_HANDSHAKE_TIMEOUT), 10 s.
    pub fn tls_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.options.tls_handshake_timeout = timeout;
        self
    }
}

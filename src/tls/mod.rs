//! TLS through rustls (feature `tls`): the server's configuration slot, what a handshake
//! negotiated ([`TlsInfo`]), and the blocking TLS session that [`Connection`]'s reads and
//! writes go through, so that `rfile`, `wfile` and framing carry plaintext.
//!
//! This layer knows sockets and rustls, nothing of servers: the handshake deadline, the
//! counters and the log lines belong to the request layer (`request/tls.rs`) and the
//! context.
//!
//! [`Connection`]: crate::Connection

mod config;
mod nonblocking;
mod session;

pub use config::{ClientAuth, load_certs, load_key, provider, server_config, server_config_sni};
/// The rustls this crate was built with, for building a [`rustls::ServerConfig`] of the
/// same version.
pub use rustls;
pub(crate) use session::Session;

use std::fmt;
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::ServerConfig;
use rustls_pki_types::CertificateDer;

/// The server's current [`ServerConfig`], read at each accept: a reload
/// ([`ServerHandle::set_tls_config`](crate::ServerHandle::set_tls_config)) swaps it for the
/// connections accepted afterwards, while those already open keep the one they started with.
#[derive(Clone)]
pub(crate) struct TlsSlot(Arc<RwLock<Arc<ServerConfig>>>);

impl TlsSlot {
    pub(crate) fn new(config: Arc<ServerConfig>) -> TlsSlot {
        TlsSlot(Arc::new(RwLock::new(config)))
    }

    /// The configuration a new connection uses.
    pub(crate) fn get(&self) -> Arc<ServerConfig> {
        self.0.read().clone()
    }

    /// Replaces the configuration for the connections accepted from now on.
    pub(crate) fn set(&self, config: Arc<ServerConfig>) {
        *self.0.write() = config;
    }
}

impl fmt::Debug for TlsSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = self.get();
        f.debug_struct("TlsSlot")
            .field("alpn_protocols", &config.alpn_protocols)
            .finish_non_exhaustive()
    }
}

/// What the TLS handshake of a connection negotiated: from
/// [`StreamRequest::tls`](crate::StreamRequest::tls) (`None` on a plaintext server).
#[derive(Debug, Clone)]
pub struct TlsInfo {
    pub(crate) version: Option<rustls::ProtocolVersion>,
    pub(crate) cipher_suite: Option<rustls::CipherSuite>,
    pub(crate) alpn: Option<Vec<u8>>,
    pub(crate) sni: Option<String>,
    pub(crate) peer_certificates: Vec<CertificateDer<'static>>,
}

impl TlsInfo {
    pub(crate) fn of(conn: &rustls::ServerConnection) -> TlsInfo {
        TlsInfo {
            version: conn.protocol_version(),
            cipher_suite: conn.negotiated_cipher_suite().map(|s| s.suite()),
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            sni: conn.server_name().map(str::to_owned),
            peer_certificates: conn
                .peer_certificates()
                .map(<[CertificateDer<'static>]>::to_vec)
                .unwrap_or_default(),
        }
    }

    /// The protocol version (`TLSv1_3`, `TLSv1_2`).
    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.version
    }

    /// The cipher suite (`TLS13_AES_256_GCM_SHA384`…).
    pub fn cipher_suite(&self) -> Option<rustls::CipherSuite> {
        self.cipher_suite
    }

    /// The application protocol chosen by ALPN (`b"h2"`, `b"http/1.1"`…), if the client
    /// offered one the server's [`ServerConfig::alpn_protocols`] lists.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.alpn.as_deref()
    }

    /// The host name the client asked for (SNI), if it sent one.
    pub fn server_name(&self) -> Option<&str> {
        self.sni.as_deref()
    }

    /// The client's certificate chain, end entity first: empty unless client
    /// authentication is on and the client presented one (it was verified against the
    /// CA bundle of [`ClientAuth`]).
    pub fn peer_certificates(&self) -> &[CertificateDer<'static>] {
        &self.peer_certificates
    }
}

/// The error inside the [`io::Error`](std::io::Error) of a failed handshake (garbage, a
/// plaintext client, a refused client certificate, the handshake deadline): the request
/// never reaches the handler, the failure is counted in
/// [`Stats::tls_failures`](crate::Stats::tls_failures) and logged once.
#[derive(Debug)]
pub(crate) struct HandshakeError(pub(crate) String);

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TLS handshake failed: {}", self.0)
    }
}

impl std::error::Error for HandshakeError {}

/// Is `e` a failed handshake ([`HandshakeError`])?
pub(crate) fn is_handshake_error(e: &std::io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<HandshakeError>())
}

/// The peer closed the TCP connection without `close_notify`: the stream may have been
/// cut short (a truncation attack, or a client that does not close TLS cleanly). Reads
/// fail with [`UnexpectedEof`](std::io::ErrorKind::UnexpectedEof) and this inside; the
/// request is counted as a disconnect.
#[derive(Debug)]
pub(crate) struct Truncated;

impl fmt::Display for Truncated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TLS stream truncated: the peer closed the connection without close_notify")
    }
}

impl std::error::Error for Truncated {}

/// Is `e` a truncated TLS stream ([`Truncated`])?
pub(crate) fn is_truncated(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Truncated>())
}

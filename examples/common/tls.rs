//! TLS for the examples (the crate's `tls` feature): `--tls-cert FILE --tls-key FILE`
//! (and `--tls-client-ca FILE` to require client certificates) on the servers;
//! `--tls-ca FILE` (and `--tls-cert`/`--tls-key` for mTLS) on the clients.
//!
//! A test certificate for `localhost`:
//!
//! ```text
//! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
//!     -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
//!     -addext basicConstraints=critical,CA:FALSE -keyout key.pem -out cert.pem
//! cargo run --example echo -- server --tls-cert cert.pem --tls-key key.pem
//! echo hi | cargo run --example echo -- client --tls-ca cert.pem
//! openssl s_client -connect 127.0.0.1:9000 -CAfile cert.pem -servername localhost -quiet
//! ```

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use socketserver::tls::rustls::{self, pki_types::ServerName};
use socketserver::tls::{ClientAuth, load_certs, load_key};
use socketserver::{Builder, Mode, Transport};

/// The servers' TLS options.
#[derive(Args, Debug, Clone, Default)]
pub struct TlsServerArgs {
    /// Serve TLS with this PEM certificate chain (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by a CA of this PEM bundle (mTLS).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

impl TlsServerArgs {
    /// Is TLS asked for?
    pub fn on(&self) -> bool {
        self.tls_cert.is_some()
    }

    /// TLS on the builder if asked for, with a log line saying so.
    pub fn apply<T: Transport, M: Mode>(
        &self,
        name: &str,
        builder: Builder<T, M>,
    ) -> io::Result<Builder<T, M>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(builder);
        };
        let auth = match &self.tls_client_ca {
            Some(ca) => ClientAuth::Required(ca),
            None => ClientAuth::Off,
        };
        let config = socketserver::tls::server_config(cert, key, auth)?;
        log::info!(
            "{name}: TLS with {}{}",
            cert.display(),
            match &self.tls_client_ca {
                Some(ca) => format!(", client certificates from {} required", ca.display()),
                None => String::new(),
            }
        );
        Ok(builder.tls(Arc::new(config)))
    }
}

/// The clients' TLS options.
#[derive(Args, Debug, Clone, Default)]
pub struct TlsClientArgs {
    /// Connect with TLS, trusting the CAs of this PEM bundle (a self-signed server
    /// certificate is its own CA). The server name checked is the host of --addr.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Present this PEM client certificate (with --tls-key; the server's --tls-client-ca).
    #[arg(long, value_name = "FILE", requires = "tls_ca", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of the client's --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// A client's connection: plain TCP, or TLS over it.
pub enum Stream {
    /// Plaintext.
    Plain(TcpStream),
    /// TLS (rustls).
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

/// Connects to `addr` (`host:port`), with TLS if `args` ask for it; the handshake is done
/// when this returns, so a refused certificate fails here.
pub fn connect(addr: &str, args: &TlsClientArgs) -> io::Result<Stream> {
    let sock = TcpStream::connect(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot connect to {addr}: {e}")))?;
    let Some(ca) = &args.tls_ca else {
        return Ok(Stream::Plain(sock));
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(ca)? {
        roots.add(cert).map_err(io::Error::other)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(socketserver::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_root_certificates(roots);
    let config = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(io::Error::other)?,
        _ => builder.with_no_client_auth(),
    };
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_string()).map_err(io::Error::other)?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    // The server's verdict on our certificate comes with its first records.
    tls.sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake with {addr}: {e}")))?;
    }
    tls.sock.set_read_timeout(None)?;
    Ok(Stream::Tls(Box::new(tls)))
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &t.sock,
        }
    }

    /// `SO_RCVTIMEO` on the TCP socket.
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.tcp().set_read_timeout(t)
    }

    /// The end of what we send: with TLS `close_notify`, then the TCP half-close.
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        if let Stream::Tls(t) = self {
            t.conn.send_close_notify();
            t.flush()?;
        }
        self.tcp().shutdown(Shutdown::Write)
    }
}

/// A TLS client ends with `close_notify`, so the server can tell the end of the stream
/// from a cut connection.
impl Drop for Stream {
    fn drop(&mut self) {
        if let Stream::Tls(t) = self {
            t.conn.send_close_notify();
            let _ = t.flush();
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(t) => t.write(buf),
        }
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write_vectored(bufs),
            Stream::Tls(t) => t.write_vectored(bufs),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(t) => t.flush(),
        }
    }
}

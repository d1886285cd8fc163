//! TLS test material made at test time: a CA, a server certificate for `localhost` and
//! 127.0.0.1, a client certificate (rcgen), PEM files in a temporary directory, and a
//! rustls client (through the crate's re-export of rustls).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use socketserver::tls::rustls;
use socketserver::tls::rustls::pki_types::ServerName;

/// A CA and what it signed, as PEM files.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    /// A fresh CA ("socketserver test CA") and certificates for `localhost`.
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "socketserver test CA");
        let ca_cert = params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(params, ca_key);
        let write = |name: &str, pem: String| {
            let p = dir.path().join(name);
            std::fs::write(&p, pem).unwrap();
            p
        };
        let ca = write("ca.pem", ca_cert.pem());
        let mut pki = Pki {
            ca,
            cert: PathBuf::new(),
            key: PathBuf::new(),
            client_cert: PathBuf::new(),
            client_key: PathBuf::new(),
            issuer,
            dir,
        };
        (pki.cert, pki.key) = pki.issue("server", &["localhost", "127.0.0.1"]);
        (pki.client_cert, pki.client_key) = pki.issue("client", &["client.test"]);
        pki
    }

    /// A certificate for `names`, signed by the CA: `(cert.pem, key.pem)` named after `stem`.
    pub fn issue(&self, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, &names[0]);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let c = self.dir.path().join(format!("{stem}.pem"));
        let k = self.dir.path().join(format!("{stem}.key"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    /// The server configuration of `cert`/`key`, no client authentication.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        Arc::new(
            socketserver::tls::server_config(
                &self.cert,
                &self.key,
                socketserver::tls::ClientAuth::Off,
            )
            .unwrap(),
        )
    }

    /// A rustls client that trusts the CA and presents `cert` (of another CA, say).
    pub fn client_config_presenting(&self, cert: &Path, key: &Path) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for c in socketserver::tls::load_certs(&self.ca).unwrap() {
            roots.add(c).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(socketserver::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(
                socketserver::tls::load_certs(cert).unwrap(),
                socketserver::tls::load_key(key).unwrap(),
            )
            .unwrap();
        Arc::new(config)
    }

    /// A rustls client that trusts the CA; with `client_auth`, presents the client
    /// certificate.
    pub fn client_config(&self, client_auth: bool) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for c in socketserver::tls::load_certs(&self.ca).unwrap() {
            roots.add(c).unwrap();
        }
        let b = rustls::ClientConfig::builder_with_provider(socketserver::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        Arc::new(if client_auth {
            b.with_client_auth_cert(
                socketserver::tls::load_certs(&self.client_cert).unwrap(),
                socketserver::tls::load_key(&self.client_key).unwrap(),
            )
            .unwrap()
        } else {
            b.with_no_client_auth()
        })
    }
}

/// A rustls client stream over TCP.
pub type Client = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Connects to `addr` and runs the handshake for `name` (fails if the server refuses).
pub fn connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    name: &str,
) -> io::Result<Client> {
    let sock = TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(super::LONG))?;
    sock.set_write_timeout(Some(super::LONG))?;
    let server_name = ServerName::try_from(name.to_string()).map_err(io::Error::other)?;
    let conn = rustls::ClientConnection::new(config, server_name).map_err(io::Error::other)?;
    let mut stream = rustls::StreamOwned::new(conn, sock);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

/// One line out, one line back.
pub fn line_round_trip(c: &mut Client, line: &str) -> String {
    c.write_all(line.as_bytes()).unwrap();
    c.flush().unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 1];
    while !got.ends_with(b"\n") {
        assert_eq!(
            c.read(&mut b).unwrap(),
            1,
            "the server closed after {got:?}"
        );
        got.push(b[0]);
    }
    String::from_utf8(got).unwrap()
}

/// Ends the TLS session cleanly: `close_notify`, then the TCP close.
pub fn close(mut c: Client) {
    c.conn.send_close_notify();
    let _ = c.conn.complete_io(&mut c.sock);
}

//! Building a rustls [`ServerConfig`] from PEM files, with the crate's crypto provider
//! (`ring`): the certificate chain and key, optionally a CA bundle for client
//! certificates (mTLS), ALPN protocols, and one certificate per SNI name.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ResolvesServerCertUsingSni, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The crypto provider every configuration built here uses: rustls's `ring` provider
/// (`aws-lc-rs`, rustls's default, needs cmake and nasm to build).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn pem_error(path: &Path, what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: cannot read {what}: {e}", path.display()),
    )
}

/// Every certificate of a PEM file (`-----BEGIN CERTIFICATE-----`), in order: a chain,
/// end entity first, or a CA bundle. Fails if there is none.
pub fn load_certs(path: impl AsRef<Path>) -> io::Result<Vec<CertificateDer<'static>>> {
    let path = path.as_ref();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, "certificates", e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, "certificates", e))?;
    if certs.is_empty() {
        return Err(pem_error(
            path,
            "certificates",
            "no CERTIFICATE in the file",
        ));
    }
    Ok(certs)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 RSA or SEC1 EC).
pub fn load_key(path: impl AsRef<Path>) -> io::Result<PrivateKeyDer<'static>> {
    let path = path.as_ref();
    PrivateKeyDer::from_pem_file(path).map_err(|e| pem_error(path, "a private key", e))
}

/// Who must present a client certificate.
#[derive(Debug, Clone)]
pub enum ClientAuth<'a> {
    /// Nobody (the default): no `CertificateRequest`.
    Off,
    /// Clients may present one, verified against the CA bundle at this path; clients
    /// without one are served too (their [`TlsInfo::peer_certificates`](super::TlsInfo::peer_certificates)
    /// is empty).
    Optional(&'a Path),
    /// Every client must present one, verified against the CA bundle at this path; the
    /// handshake fails otherwise.
    Required(&'a Path),
}

/// A server configuration from a PEM certificate chain and key, TLS 1.2 and 1.3,
/// client authentication as `client_auth` says. Set
/// [`alpn_protocols`](ServerConfig::alpn_protocols) on the result for ALPN.
pub fn server_config(
    cert: impl AsRef<Path>,
    key: impl AsRef<Path>,
    client_auth: ClientAuth<'_>,
) -> io::Result<ServerConfig> {
    let certs = load_certs(cert)?;
    let key = load_key(key)?;
    builder(client_auth)?
        .with_single_cert(certs, key)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// A server configuration that picks the certificate by the name the client asks for
/// (SNI, rustls's `ResolvesServerCertUsingSni`): `(name, cert_path, key_path)` for each
/// name. A client that sends no name, or another one, fails the handshake.
pub fn server_config_sni(
    names: &[(&str, &Path, &Path)],
    client_auth: ClientAuth<'_>,
) -> io::Result<ServerConfig> {
    let provider = provider();
    let mut resolver = ResolvesServerCertUsingSni::new();
    for (name, cert, key) in names {
        let certified = CertifiedKey::from_der(load_certs(cert)?, load_key(key)?, &provider)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        resolver
            .add(name, certified)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{name}: {e}")))?;
    }
    Ok(builder(client_auth)?.with_cert_resolver(Arc::new(resolver)))
}

fn builder(
    client_auth: ClientAuth<'_>,
) -> io::Result<rustls::ConfigBuilder<ServerConfig, rustls::server::WantsServerCert>> {
    let provider = provider();
    let versions = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let (ca, required) = match client_auth {
        ClientAuth::Off => return Ok(versions.with_no_client_auth()),
        ClientAuth::Optional(ca) => (ca, false),
        ClientAuth::Required(ca) => (ca, true),
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(ca)? {
        roots
            .add(cert)
            .map_err(|e| pem_error(ca, "a CA certificate", e))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let verifier = if required {
        verifier
    } else {
        verifier.allow_unauthenticated()
    };
    let verifier = verifier
        .build()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    Ok(versions.with_client_cert_verifier(verifier))
}

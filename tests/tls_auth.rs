//! TLS configuration features (feature `tls`): client certificates (mTLS, required and
//! optional), ALPN, SNI with one certificate per name, and reloading the certificate while
//! clients keep connecting.
#![cfg(feature = "tls")]

mod util;

use std::io::{self, BufRead, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use socketserver::tls::{ClientAuth, rustls, server_config, server_config_sni};
use socketserver::*;
use util::tls::{Client, Pki, close, connect, line_round_trip};
use util::*;

/// Writes what the handshake found, one line: `sni certs alpn`.
fn describe(req: &mut StreamRequest) -> io::Result<()> {
    let tls = req.tls().expect("TLS is on").clone();
    writeln!(
        req.wfile,
        "{} {} {}",
        tls.server_name().unwrap_or("-"),
        tls.peer_certificates().len(),
        String::from_utf8_lossy(tls.alpn_protocol().unwrap_or(b"-"))
    )
}

fn serve(config: rustls::ServerConfig) -> Running<Tcp, Threading> {
    let server = ThreadingTcpServer::builder()
        .tls(Arc::new(config))
        .bind("127.0.0.1:0", describe)
        .unwrap();
    Running::start(server)
}

fn addr(r: &Running<Tcp, Threading>) -> SocketAddr {
    r.server.server_address().unwrap()
}

/// The handler's line, or the error that ended the connection first.
fn read_reply(c: &mut Client) -> io::Result<String> {
    let mut line = String::new();
    io::BufReader::new(c).read_line(&mut line)?;
    Ok(line)
}

#[test]
fn a_required_client_certificate_is_checked_and_its_absence_refused() {
    let pki = Pki::new();
    let config = server_config(&pki.cert, &pki.key, ClientAuth::Required(&pki.ca)).unwrap();
    let running = serve(config);
    let a = addr(&running);
    let mut c = connect(a, pki.client_config(true), "localhost").unwrap();
    assert_eq!(read_reply(&mut c).unwrap(), "localhost 1 -\n");
    // Without a certificate: TLS 1.3 clients learn it at their first read (an alert).
    let refused =
        connect(a, pki.client_config(false), "localhost").and_then(|mut c| read_reply(&mut c));
    let err = refused.expect_err("a client without a certificate is refused");
    assert!(err.to_string().contains("CertificateRequired"), "{err}");
    // A certificate from another CA: refused too.
    let other = Pki::new();
    let foreign = pki.client_config_presenting(&other.client_cert, &other.client_key);
    let refused = connect(a, foreign, "localhost").and_then(|mut c| read_reply(&mut c));
    assert!(refused.is_err(), "{refused:?}");
    wait_until("two refusals counted", || {
        running.server.stats().tls_failures == 2
    });
    let stats = running.server.stats();
    assert_eq!((stats.served, stats.errors), (1, 0), "{stats}");
    running.stop().unwrap();
}

#[test]
fn an_optional_client_certificate_is_taken_when_offered() {
    let pki = Pki::new();
    let config = server_config(&pki.cert, &pki.key, ClientAuth::Optional(&pki.ca)).unwrap();
    let running = serve(config);
    let a = addr(&running);
    let mut with = connect(a, pki.client_config(true), "localhost").unwrap();
    assert_eq!(read_reply(&mut with).unwrap(), "localhost 1 -\n");
    let mut without = connect(a, pki.client_config(false), "localhost").unwrap();
    assert_eq!(read_reply(&mut without).unwrap(), "localhost 0 -\n");
    running.stop().unwrap();
}

#[test]
fn alpn_picks_the_first_server_protocol_the_client_offers() {
    let pki = Pki::new();
    let mut config = server_config(&pki.cert, &pki.key, ClientAuth::Off).unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"echo/1".to_vec()];
    let running = serve(config);
    let a = addr(&running);
    for (offer, want) in [
        (vec![b"echo/1".to_vec()], "localhost 0 echo/1\n"),
        (vec![b"echo/1".to_vec(), b"h2".to_vec()], "localhost 0 h2\n"),
        (vec![], "localhost 0 -\n"),
    ] {
        let mut client = (*pki.client_config(false)).clone();
        client.alpn_protocols = offer;
        let mut c = connect(a, Arc::new(client), "localhost").unwrap();
        assert_eq!(read_reply(&mut c).unwrap(), want);
    }
    // No protocol in common: the handshake fails (RFC 7301 no_application_protocol).
    let mut client = (*pki.client_config(false)).clone();
    client.alpn_protocols = vec![b"smtp".to_vec()];
    assert!(connect(a, Arc::new(client), "localhost").is_err());
    running.stop().unwrap();
}

#[test]
fn sni_picks_the_certificate_of_the_name_asked_for() {
    let pki = Pki::new();
    let (a_cert, a_key) = pki.issue("a", &["a.test"]);
    let (b_cert, b_key) = pki.issue("b", &["b.test"]);
    let config = server_config_sni(
        &[
            ("a.test", a_cert.as_path(), a_key.as_path()),
            ("b.test", b_cert.as_path(), b_key.as_path()),
        ],
        ClientAuth::Off,
    )
    .unwrap();
    let running = serve(config);
    let addr = addr(&running);
    for (name, cert) in [("a.test", &a_cert), ("b.test", &b_cert)] {
        // The client verifies the certificate against `name`: a wrong pick fails here.
        let mut c = connect(addr, pki.client_config(false), name).unwrap();
        let want = socketserver::tls::load_certs(cert).unwrap();
        assert_eq!(c.conn.peer_certificates().unwrap()[0], want[0], "{name}");
        assert_eq!(read_reply(&mut c).unwrap(), format!("{name} 0 -\n"));
    }
    // A name the server has no certificate for: refused.
    assert!(connect(addr, pki.client_config(false), "c.test").is_err());
    running.stop().unwrap();
}

#[test]
fn a_reloaded_certificate_serves_new_connections_while_old_ones_keep_theirs() {
    let pki = Pki::new();
    let (new_cert, new_key) = pki.issue("renewed", &["localhost"]);
    let old_der = socketserver::tls::load_certs(&pki.cert).unwrap().remove(0);
    let new_der = socketserver::tls::load_certs(&new_cert).unwrap().remove(0);
    let server = ThreadingTcpServer::builder()
        .tls(pki.server_config())
        .bind("127.0.0.1:0", echo_lines)
        .unwrap();
    let running = Running::start(server);
    let a = addr(&running);
    let config = pki.client_config(false);
    let mut old = connect(a, config.clone(), "localhost").unwrap();
    assert_eq!(old.conn.peer_certificates().unwrap()[0], old_der);

    // Four clients connect over and over, before, during and after the reload.
    let reloaded = Arc::new(AtomicBool::new(false));
    let after_reload_new = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let (config, reloaded, seen_new) =
                (config.clone(), reloaded.clone(), after_reload_new.clone());
            let (old_der, new_der) = (old_der.clone(), new_der.clone());
            std::thread::spawn(move || {
                let deadline = Instant::now() + LONG;
                let mut n = 0;
                loop {
                    let was_reloaded = reloaded.load(Ordering::SeqCst);
                    let mut c = connect(a, config.clone(), "localhost").unwrap();
                    let got = c.conn.peer_certificates().unwrap()[0].clone();
                    assert!(got == old_der || got == new_der);
                    if was_reloaded {
                        assert!(
                            got == new_der,
                            "client {i}: old certificate after the reload"
                        );
                        if seen_new.fetch_add(1, Ordering::SeqCst) >= 40 {
                            break;
                        }
                    }
                    let line = format!("{i} {n}\n");
                    assert_eq!(line_round_trip(&mut c, &line), line);
                    close(c);
                    n += 1;
                    assert!(Instant::now() < deadline, "client {i} stuck");
                }
                n
            })
        })
        .collect();
    wait_until("some connections before the reload", || {
        running.server.stats().served >= 20
    });
    let renewed = server_config(&new_cert, &new_key, ClientAuth::Off).unwrap();
    running
        .server
        .handle()
        .set_tls_config(Arc::new(renewed))
        .unwrap();
    reloaded.store(true, Ordering::SeqCst);
    for t in threads {
        assert!(t.join().unwrap() > 0);
    }
    // The connection opened before the reload still works, with its certificate.
    assert_eq!(line_round_trip(&mut old, "still here\n"), "still here\n");
    assert_eq!(old.conn.peer_certificates().unwrap()[0], old_der);
    close(old);
    let stats = running.server.stats();
    assert_eq!((stats.errors, stats.tls_failures), (0, 0), "{stats}");
    running.stop().unwrap();
}

#[test]
fn reloading_a_plaintext_server_is_refused() {
    let server = ThreadingTcpServer::builder()
        .bind("127.0.0.1:0", echo_line)
        .unwrap();
    let pki = Pki::new();
    let err = server
        .handle()
        .set_tls_config(pki.server_config())
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn tls_on_a_datagram_transport_is_refused_when_the_server_is_built() {
    let pki = Pki::new();
    let err = ThreadingUdpServer::builder()
        .tls(pki.server_config())
        .bind("127.0.0.1:0", echo_datagram)
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("stream transports"), "{err}");
}

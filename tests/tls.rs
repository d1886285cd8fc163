//! TLS (feature `tls`) in the classic modes, with real clients: rustls, `openssl s_client`
//! and Python's `ssl` module. Certificates are made at test time (`util::tls::Pki`).
#![cfg(feature = "tls")]

mod util;

use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socketserver::*;
use util::tls::{Pki, close, connect, line_round_trip};
use util::*;

/// A TLS echo server in mode `M` on a free port.
fn echo_server<M: Mode>(pki: &Pki) -> Running<Tcp, M> {
    let server = Server::<Tcp, M>::builder()
        .tls_pem(&pki.cert, &pki.key)
        .unwrap()
        .bind("127.0.0.1:0", echo_lines)
        .unwrap();
    Running::start(server)
}

fn addr<M: Mode>(r: &Running<Tcp, M>) -> SocketAddr {
    r.server.server_address().unwrap()
}

/// Two lines through one TLS connection, then a clean close on both sides: the server
/// answers our `close_notify` with its own (the client reads a clean end of stream).
fn rustls_echo<M: Mode>() {
    let pki = Pki::new();
    let running = echo_server::<M>(&pki);
    let mut c = connect(addr(&running), pki.client_config(false), "localhost").unwrap();
    assert_eq!(line_round_trip(&mut c, "hello\n"), "hello\n");
    assert_eq!(line_round_trip(&mut c, "over TLS\n"), "over TLS\n");
    c.conn.send_close_notify();
    c.flush().unwrap();
    let mut rest = Vec::new();
    // Ok(0) only after the server's close_notify; a bare FIN would be UnexpectedEof.
    c.read_to_end(&mut rest)
        .expect("the server ended the stream with close_notify");
    assert!(rest.is_empty());
    running.stop().unwrap();
}

#[test]
fn rustls_client_echoes_in_synchronous_mode() {
    rustls_echo::<Synchronous>();
}

#[test]
fn rustls_client_echoes_in_threading_mode() {
    rustls_echo::<Threading>();
}

#[test]
fn rustls_client_echoes_in_forking_mode() {
    rustls_echo::<Forking>();
}

#[test]
fn rustls_client_echoes_over_a_unix_stream_socket() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tls.sock");
    let server = ThreadingUnixStreamServer::builder()
        .tls_pem(&pki.cert, &pki.key)
        .unwrap()
        .bind(&path, echo_lines)
        .unwrap();
    let running = Running::start(server);
    let sock = std::os::unix::net::UnixStream::connect(&path).unwrap();
    sock.set_read_timeout(Some(LONG)).unwrap();
    let name = socketserver::tls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn =
        socketserver::tls::rustls::ClientConnection::new(pki.client_config(false), name).unwrap();
    let mut c = socketserver::tls::rustls::StreamOwned::new(conn, sock);
    c.write_all(b"unix\n").unwrap();
    let mut line = String::new();
    io::BufReader::new(&mut c).read_line(&mut line).unwrap();
    assert_eq!(line, "unix\n");
    running.stop().unwrap();
}

/// What the handler saw of the handshake, one line.
fn describe(req: &mut StreamRequest) -> io::Result<()> {
    let tls = req.tls().expect("TLS is on").clone();
    writeln!(
        req.wfile,
        "{:?} {:?} sni={} alpn={} certs={}",
        tls.protocol_version().unwrap(),
        tls.cipher_suite().unwrap(),
        tls.server_name().unwrap_or("-"),
        String::from_utf8_lossy(tls.alpn_protocol().unwrap_or(b"-")),
        tls.peer_certificates().len()
    )
}

#[test]
fn the_request_tells_version_cipher_suite_sni_and_alpn() {
    let pki = Pki::new();
    let mut config = (*pki.server_config()).clone();
    config.alpn_protocols = vec![b"echo/1".to_vec(), b"http/1.1".to_vec()];
    let server = TcpServer::builder()
        .tls(Arc::new(config))
        .bind("127.0.0.1:0", describe)
        .unwrap();
    let running = Running::start(server);
    let mut client = (*pki.client_config(false)).clone();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut c = connect(addr(&running), Arc::new(client), "localhost").unwrap();
    let mut line = String::new();
    io::BufReader::new(&mut c).read_line(&mut line).unwrap();
    assert!(line.starts_with("TLSv1_3 TLS13_"), "{line}");
    assert!(
        line.ends_with("sni=localhost alpn=http/1.1 certs=0\n"),
        "{line}"
    );
    running.stop().unwrap();
}

/// `openssl s_client`: one line echoed, the server's certificate verified against the CA.
#[test]
fn openssl_s_client_is_served() {
    if !require_program("openssl") {
        return;
    }
    let pki = Pki::new();
    let server = ThreadingTcpServer::builder()
        .tls_pem(&pki.cert, &pki.key)
        .unwrap()
        .bind("127.0.0.1:0", echo_line)
        .unwrap();
    let running = Running::start(server);
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-verify_return_error",
            "-servername",
            "localhost",
        ])
        .arg("-connect")
        .arg(addr(&running).to_string())
        .arg("-CAfile")
        .arg(&pki.ca)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from openssl\n")
        .unwrap();
    let out = wait_output(child);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from openssl\n");
    running.stop().unwrap();
}

/// Waits for a child process, at most [`LONG`] (then kills it and fails).
fn wait_output(mut child: std::process::Child) -> std::process::Output {
    let deadline = Instant::now() + LONG;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{:?}", child.wait_with_output());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Python's `ssl` module: an echo client, its socket wrapped by `SSLContext.wrap_socket`.
#[test]
fn python_ssl_client_is_served() {
    let pki = Pki::new();
    let running = echo_server::<Threading>(&pki);
    let script = r#"
import socket, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        for line in (b"one\n", b"two\n"):
            s.sendall(line)
            got = b""
            while not got.endswith(b"\n"):
                got += s.recv(100)
            assert got == line, got
        print(s.version(), s.cipher()[0])
        s.unwrap()
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(addr(&running).port().to_string())
        .arg(&pki.ca)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("TLSv1.3 "));
    running.stop().unwrap();
}

/// Errors the `handle_error` hook received.
type Seen = Arc<Mutex<Vec<(io::ErrorKind, String)>>>;

fn recording(seen: &Seen) -> impl Fn(&ClientAddr, &HandlerError) + Send + Sync + 'static {
    let seen = seen.clone();
    move |_, err| {
        if let HandlerError::Io(e) = err {
            seen.lock().unwrap().push((e.kind(), e.to_string()));
        }
    }
}

#[test]
fn a_client_that_never_finishes_the_handshake_is_closed_at_the_deadline() {
    let pki = Pki::new();
    let seen = Seen::default();
    // One worker: the slow client holds it until the deadline, then the next is served.
    let server = TcpServer::builder()
        .tls(pki.server_config())
        .tls_handshake_timeout(Duration::from_millis(1000))
        .handle_error(recording(&seen))
        .bind("127.0.0.1:0", echo_line)
        .unwrap();
    let running = Running::start(server);
    let a = addr(&running);
    let started = Instant::now();
    let mut slow = util::connect(a);
    slow.write_all(&[0x16, 0x03]).unwrap(); // the start of a record, then nothing
    let mut c = connect(a, pki.client_config(false), "localhost").unwrap();
    assert_eq!(line_round_trip(&mut c, "after\n"), "after\n");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    // The slow one was closed.
    let mut buf = [0u8; 64];
    assert!(matches!(slow.read(&mut buf), Ok(0) | Err(_)));
    let stats = running.server.stats();
    assert_eq!(stats.tls_failures, 1, "{stats}");
    assert_eq!(stats.errors, 0, "{stats}");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].0, io::ErrorKind::TimedOut);
    assert!(seen[0].1.contains("tls_handshake_timeout"), "{seen:?}");
    drop(seen);
    running.stop().unwrap();
}

#[test]
fn garbage_and_plaintext_on_the_tls_port_are_closed_and_counted() {
    let pki = Pki::new();
    let seen = Seen::default();
    let server = ThreadingTcpServer::builder()
        .tls(pki.server_config())
        .handle_error(recording(&seen))
        .bind("127.0.0.1:0", echo_line)
        .unwrap();
    let running = Running::start(server);
    let a = addr(&running);
    for junk in [&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], &[0xff; 300][..]] {
        let mut s = util::connect(a);
        s.write_all(junk).unwrap();
        // The server closes: an alert perhaps, then end of file (or a reset).
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        assert!(got.len() < 64, "{got:?}");
    }
    wait_until("two failures counted", || {
        running.server.stats().tls_failures == 2
    });
    // A good client is still served.
    let mut c = connect(a, pki.client_config(false), "localhost").unwrap();
    assert_eq!(line_round_trip(&mut c, "fine\n"), "fine\n");
    let stats = running.server.stats();
    assert_eq!((stats.tls_failures, stats.errors), (2, 0), "{stats}");
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .all(|(_, m)| m.starts_with("TLS handshake failed")),
        "{seen:?}"
    );
    running.stop().unwrap();
}

#[test]
fn a_stream_cut_without_close_notify_is_reported_as_truncated() {
    let pki = Pki::new();
    let seen = Seen::default();
    let server = ThreadingTcpServer::builder()
        .tls(pki.server_config())
        .handle_error(recording(&seen))
        .bind("127.0.0.1:0", echo_lines)
        .unwrap();
    let running = Running::start(server);
    let mut c = connect(addr(&running), pki.client_config(false), "localhost").unwrap();
    assert_eq!(line_round_trip(&mut c, "partial\n"), "partial\n");
    // TCP FIN, no close_notify.
    c.sock.shutdown(Shutdown::Both).unwrap();
    wait_until("the truncation reported", || {
        !seen.lock().unwrap().is_empty()
    });
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].0, io::ErrorKind::UnexpectedEof, "{seen:?}");
    assert!(seen[0].1.contains("truncated"), "{seen:?}");
    drop(seen);
    let stats = running.server.stats();
    assert_eq!((stats.disconnects, stats.errors), (1, 0), "{stats}");
    running.stop().unwrap();
}

#[test]
fn a_graceful_shutdown_sends_close_notify_to_idle_clients() {
    let pki = Pki::new();
    let server = ThreadingTcpServer::builder()
        .tls(pki.server_config())
        .bind("127.0.0.1:0", echo_lines)
        .unwrap();
    let running = Running::start(server);
    let mut c = connect(addr(&running), pki.client_config(false), "localhost").unwrap();
    assert_eq!(line_round_trip(&mut c, "idle next\n"), "idle next\n");
    let server = running.server.clone();
    running.stop().unwrap();
    let started = Instant::now();
    server.server_close();
    assert!(started.elapsed() < Duration::from_secs(5));
    let mut rest = Vec::new();
    c.read_to_end(&mut rest)
        .expect("close_notify before the FIN, not a truncation");
    assert!(rest.is_empty());
    close(c);
}

#[test]
fn many_concurrent_clients_share_a_pool() {
    let pki = Pki::new();
    let running = echo_server::<Threading>(&pki);
    let a = addr(&running);
    let config = pki.client_config(false);
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let config = config.clone();
            std::thread::spawn(move || {
                let mut c = connect(a, config, "localhost").unwrap();
                for j in 0..20 {
                    let line = format!("{i} {j} {}\n", "x".repeat(i * 1000));
                    assert_eq!(line_round_trip(&mut c, &line), line);
                }
                close(c);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    running.stop().unwrap();
}

/// A message handler that takes the connection over for a body: `put N\n` then N bytes →
/// `got N <sum>\n`; any other line is echoed.
#[derive(Default)]
struct Bodies {
    want: u64,
}

impl MessageHandler for Bodies {
    fn handle(&mut self, ch: &mut Channel, line: &[u8]) -> io::Result<()> {
        if let Some(n) = line.strip_prefix(b"put ") {
            ch.take_over();
            self.want = String::from_utf8_lossy(n).trim().parse().unwrap_or(0);
            Ok(())
        } else {
            ch.write_all(line)
        }
    }

    fn handle_blocking(&mut self, _ch: &mut Channel, s: &mut BlockingStream) -> io::Result<()> {
        let n = self.want;
        let mut sum = 0u64;
        let mut left = n;
        let mut buf = [0u8; 4096];
        while left > 0 {
            let k = s.read(&mut buf[..left.min(4096) as usize])?;
            if k == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            sum += buf[..k].iter().map(|&b| b as u64).sum::<u64>();
            left -= k as u64;
        }
        writeln!(s, "got {n} {sum}")
    }
}

#[test]
fn a_message_handler_takes_a_tls_connection_over_in_threading_mode() {
    let pki = Pki::new();
    let server = ThreadingTcpServer::builder()
        .tls(pki.server_config())
        .framing(framing::MessageFraming::Lines { max: 1024 })
        .bind("127.0.0.1:0", Bodies::default)
        .unwrap();
    let running = Running::start(server);
    let mut c = connect(addr(&running), pki.client_config(false), "localhost").unwrap();
    assert_eq!(line_round_trip(&mut c, "before\n"), "before\n");
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let sum: u64 = body.iter().map(|&b| b as u64).sum();
    c.write_all(b"put 100000\n").unwrap();
    c.write_all(&body).unwrap();
    c.write_all(b"after\n").unwrap();
    c.flush().unwrap();
    let mut r = io::BufReader::new(&mut c);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, format!("got 100000 {sum}\n"));
    line.clear();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "after\n");
    drop(r);
    close(c);
    running.stop().unwrap();
}

/// The body of the pre-fork test, in a child process: 2 workers serving TLS from the PEM
/// files named by `TLS_PEM` (`cert:key`).
#[test]
fn prefork_tls_child() {
    if !is_child() {
        return;
    }
    let pem = std::env::var("TLS_PEM").unwrap();
    let (cert, key) = pem.split_once(':').unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let prefork = socketserver::prefork::Prefork::new(2);
    shutdown_on_ctrl_c([prefork.handle()]).unwrap();
    println!("PORT {port}");
    prefork
        .run(("127.0.0.1", port), |listener| {
            ThreadingTcpServer::builder()
                .tls_pem(cert, key)?
                .from_socket(listener, |req: &mut StreamRequest| {
                    writeln!(req.wfile, "{}", std::process::id())
                })
        })
        .unwrap();
}

#[test]
fn prefork_workers_serve_tls() {
    let pki = Pki::new();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "prefork_tls_child",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, "1")
    .env(
        "TLS_PEM",
        format!("{}:{}", pki.cert.display(), pki.key.display()),
    );
    let mut parent = ChildProc::spawn(cmd);
    let line = ChildProc::expect_line(&parent.stdout, "PORT ");
    let port: u16 = line["PORT ".len()..].trim().parse().unwrap();
    let a: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut pids = std::collections::HashSet::new();
    let deadline = Instant::now() + LONG;
    while pids.len() < 2 && Instant::now() < deadline {
        // Workers may still be starting: a refused connection is retried.
        let Ok(mut c) = connect(a, pki.client_config(false), "localhost") else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let mut line = String::new();
        io::BufReader::new(&mut c).read_line(&mut line).unwrap();
        pids.insert(line.trim().parse::<i32>().unwrap());
    }
    assert_eq!(pids.len(), 2, "both workers answered over TLS: {pids:?}");
    parent.signal(libc::SIGINT);
    assert_eq!(parent.wait_exit(), Some(0));
}

/// Echoes every chunk (a message handler with `MessageFraming::Raw`), and says what the
/// handshake negotiated in `setup`.
struct EchoChunks;

impl MessageHandler for EchoChunks {
    fn setup(&mut self, ch: &mut Channel) -> io::Result<()> {
        let tls = ch.tls().expect("TLS is on").clone();
        writeln!(ch, "hello {}", tls.server_name().unwrap_or("-"))
    }

    fn handle(&mut self, ch: &mut Channel, msg: &[u8]) -> io::Result<()> {
        ch.write_all(msg)
    }
}

fn evented_server(pki: &Pki, handshake_timeout: Duration) -> Running<Tcp, Evented> {
    let server = EventedTcpServer::builder()
        .tls(pki.server_config())
        .tls_handshake_timeout(handshake_timeout)
        .framing(framing::MessageFraming::Raw)
        .bind("127.0.0.1:0", || EchoChunks)
        .unwrap();
    Running::start(server)
}

#[test]
fn rustls_client_echoes_in_evented_mode_with_large_messages() {
    let pki = Pki::new();
    let running = evented_server(&pki, DEFAULT_TLS_HANDSHAKE_TIMEOUT);
    let a = addr(&running);
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let config = pki.client_config(false);
            std::thread::spawn(move || {
                let mut c = connect(a, config, "localhost").unwrap();
                let mut r = io::BufReader::new(&mut c);
                let mut hello = String::new();
                r.read_line(&mut hello).unwrap();
                assert_eq!(hello, "hello localhost\n");
                drop(r);
                // 1 MiB each way, in writes of 100 KB: records split and joined.
                let body: Vec<u8> = (0..1 << 20).map(|j| (j * (i + 3) % 251) as u8).collect();
                let reader = {
                    let mut got = vec![0u8; body.len()];
                    let mut c2 = c;
                    for piece in body.chunks(100_000) {
                        c2.write_all(piece).unwrap();
                    }
                    c2.flush().unwrap();
                    c2.read_exact(&mut got).unwrap();
                    (c2, got)
                };
                assert!(reader.1 == body, "client {i}: echo differs");
                let mut c = reader.0;
                c.conn.send_close_notify();
                c.flush().unwrap();
                let mut rest = Vec::new();
                c.read_to_end(&mut rest)
                    .expect("the server answers close_notify with its own");
                assert!(rest.is_empty());
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let stats = running.server.stats();
    assert_eq!((stats.errors, stats.tls_failures), (0, 0), "{stats}");
    running.stop().unwrap();
}

#[test]
fn evented_mode_closes_slow_handshakes_and_garbage_and_counts_them() {
    let pki = Pki::new();
    let running = evented_server(&pki, Duration::from_millis(1000));
    let a = addr(&running);
    let started = Instant::now();
    let mut slow = util::connect(a);
    slow.write_all(&[0x16, 0x03]).unwrap();
    let mut junk = util::connect(a);
    junk.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let _ = junk.read_to_end(&mut got);
    assert!(got.len() < 64, "{got:?}");
    // Meanwhile a good client is served at once.
    let mut c = connect(a, pki.client_config(false), "localhost").unwrap();
    let mut hello = String::new();
    io::BufReader::new(&mut c).read_line(&mut hello).unwrap();
    assert_eq!(hello, "hello localhost\n");
    let mut buf = [0u8; 16];
    let r = slow.read(&mut buf);
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    wait_until("both failures counted", || {
        running.server.stats().tls_failures == 2
    });
    close(c);
    running.stop().unwrap();
}

#[test]
fn evented_mode_reports_a_truncated_tls_stream() {
    let pki = Pki::new();
    let seen = Seen::default();
    let server = EventedTcpServer::builder()
        .tls(pki.server_config())
        .handle_error(recording(&seen))
        .framing(framing::MessageFraming::Raw)
        .bind("127.0.0.1:0", || EchoChunks)
        .unwrap();
    let running = Running::start(server);
    let mut c = connect(addr(&running), pki.client_config(false), "localhost").unwrap();
    let mut hello = String::new();
    io::BufReader::new(&mut c).read_line(&mut hello).unwrap();
    c.sock.shutdown(Shutdown::Both).unwrap();
    wait_until("the truncation reported", || {
        !seen.lock().unwrap().is_empty()
    });
    assert!(seen.lock().unwrap()[0].1.contains("truncated"), "{seen:?}");
    assert_eq!(running.server.stats().disconnects, 1);
    running.stop().unwrap();
}

#[test]
fn a_message_handler_takes_a_tls_connection_over_in_evented_mode() {
    let pki = Pki::new();
    let server = EventedTcpServer::builder()
        .tls(pki.server_config())
        .framing(framing::MessageFraming::Lines { max: 1024 })
        .bind("127.0.0.1:0", Bodies::default)
        .unwrap();
    let running = Running::start(server);
    let mut c = connect(addr(&running), pki.client_config(false), "localhost").unwrap();
    assert_eq!(line_round_trip(&mut c, "before\n"), "before\n");
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
    let sum: u64 = body.iter().map(|&b| b as u64).sum();
    c.write_all(b"put 300000\n").unwrap();
    c.write_all(&body).unwrap();
    c.write_all(b"after\n").unwrap();
    c.flush().unwrap();
    let mut r = io::BufReader::new(&mut c);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, format!("got 300000 {sum}\n"));
    line.clear();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "after\n");
    drop(r);
    close(c);
    running.stop().unwrap();
}

#[test]
fn evented_mode_sends_close_notify_to_idle_clients_when_it_drains() {
    let pki = Pki::new();
    let running = evented_server(&pki, DEFAULT_TLS_HANDSHAKE_TIMEOUT);
    let mut c = connect(addr(&running), pki.client_config(false), "localhost").unwrap();
    let mut hello = String::new();
    io::BufReader::new(&mut c).read_line(&mut hello).unwrap();
    assert_eq!(hello, "hello localhost\n");
    let server = running.server.clone();
    running.stop().unwrap();
    server.server_close();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest)
        .expect("close_notify before the FIN, not a truncation");
    assert!(rest.is_empty());
}

/// Reads one line through the TLS client, byte by byte: `None` if the server closed first.
fn read_tls_line(c: &mut util::tls::Client) -> Option<String> {
    let mut got = Vec::new();
    let mut b = [0u8; 1];
    while !got.ends_with(b"\n") {
        match c.read(&mut b) {
            Ok(1) => got.push(b[0]),
            _ => return None,
        }
    }
    String::from_utf8(got).ok()
}

#[test]
fn evented_mode_drains_a_request_whose_tls_record_came_in_part() {
    let pki = Pki::new();
    let running = evented_server(&pki, DEFAULT_TLS_HANDSHAKE_TIMEOUT);
    let a = addr(&running);
    // Handshake done, no request: the drain gives it until 5 s after its accept, so its
    // close_notify comes after several of the drain's looks (every 0.5 s) at `c`, whose
    // record is still in part all that time.
    let mut idle = connect(a, pki.client_config(false), "localhost").unwrap();
    let mut c = connect(a, pki.client_config(false), "localhost").unwrap();
    for client in [&mut idle, &mut c] {
        assert_eq!(read_tls_line(client).as_deref(), Some("hello localhost\n"));
    }
    // Served once (keep-alive), then a request whose record comes all but its last 5 bytes:
    // the session holds it in part, no plaintext yet.
    assert_eq!(line_round_trip(&mut c, "one\n"), "one\n");
    c.conn.writer().write_all(b"two\n").unwrap();
    let mut record = Vec::new();
    while c.conn.wants_write() {
        c.conn.write_tls(&mut record).unwrap();
    }
    let cut = record.len() - 5;
    c.sock.write_all(&record[..cut]).unwrap();
    let server = running.server.clone();
    let closer = std::thread::spawn(move || {
        server.shutdown();
        server.server_close()
    });
    let mut rest = Vec::new();
    idle.read_to_end(&mut rest)
        .expect("the drain has started: close_notify to the idle client");
    c.sock.write_all(&record[cut..]).unwrap();
    assert_eq!(
        read_tls_line(&mut c).as_deref(),
        Some("two\n"),
        "the request whose record came in part was lost"
    );
    assert!(closer.join().unwrap(), "drain within the grace period");
}

#[test]
fn evented_mode_drains_at_once_past_a_client_that_never_sent_its_hello() {
    let pki = Pki::new();
    let running = evented_server(&pki, DEFAULT_TLS_HANDSHAKE_TIMEOUT);
    let mut silent = std::net::TcpStream::connect(addr(&running)).unwrap();
    wait_until("accepted", || running.server.stats().open >= 1);
    let t = Instant::now();
    running.server.shutdown();
    let clean = running.server.server_close();
    let took = t.elapsed();
    assert!(clean, "closed as idle, not at the grace period's end");
    assert!(
        took < Duration::from_secs(2),
        "{took:?}: idle, as a plain connection that never spoke (not at the 10 s handshake deadline)"
    );
    assert_eq!(
        running.server.stats().tls_failures,
        0,
        "not a failed handshake"
    );
    let mut buf = [0u8; 8];
    silent.set_read_timeout(Some(LONG)).unwrap();
    assert_eq!(
        silent.read(&mut buf).unwrap_or(0),
        0,
        "closed without an alert"
    );
}

#[test]
fn evented_mode_serves_tls_over_a_unix_stream_socket() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("evented-tls.sock");
    let server = EventedUnixStreamServer::builder()
        .tls(pki.server_config())
        .framing(framing::MessageFraming::Raw)
        .bind(&path, || EchoChunks)
        .unwrap();
    let running = Running::start(server);
    let sock = std::os::unix::net::UnixStream::connect(&path).unwrap();
    sock.set_read_timeout(Some(LONG)).unwrap();
    let name = socketserver::tls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn =
        socketserver::tls::rustls::ClientConnection::new(pki.client_config(false), name).unwrap();
    let mut c = socketserver::tls::rustls::StreamOwned::new(conn, sock);
    let mut r = io::BufReader::new(&mut c);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "hello localhost\n");
    drop(r);
    c.write_all(b"over unix\n").unwrap();
    let mut got = [0u8; 10];
    c.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"over unix\n");
    running.stop().unwrap();
}

#[test]
fn evented_tls_round_trips_never_stall_under_many_connections() {
    let pki = Pki::new();
    let running = evented_server(&pki, DEFAULT_TLS_HANDSHAKE_TIMEOUT);
    let a = addr(&running);
    let threads: Vec<_> = (0..32)
        .map(|i| {
            let config = pki.client_config(false);
            std::thread::spawn(move || {
                let mut c = connect(a, config, "localhost").unwrap();
                let mut hello = [0u8; 16];
                c.read_exact(&mut hello).unwrap();
                let mut got = [0u8; 64];
                for j in 0..300u32 {
                    let mut msg = [b'.'; 64];
                    msg[..8].copy_from_slice(&(i as u32 * 1000 + j).to_le_bytes().repeat(2));
                    c.write_all(&msg).unwrap();
                    // A stalled connection fails here at the read timeout.
                    c.read_exact(&mut got).unwrap();
                    assert_eq!(got, msg);
                }
                close(c);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    running.stop().unwrap();
}

/// Behind HAProxy in TCP mode the PROXY header comes first, in plaintext, and the TLS
/// handshake after it: the server reads the header without taking a byte of the
/// ClientHello, then terminates TLS; the handler sees both the original client and the
/// session.
struct WhoTls;

impl MessageHandler for WhoTls {
    fn handle(&mut self, ch: &mut Channel, _msg: &[u8]) -> io::Result<()> {
        let sni = ch.tls().and_then(|t| t.server_name().map(String::from));
        let client = ch.client_address().to_string();
        writeln!(ch, "{client} {sni:?}")
    }
}

#[test]
fn a_proxy_header_before_the_tls_handshake_names_the_client_in_every_mode() {
    fn check<M: Mode>(pki: &Pki) {
        let server = Server::<Tcp, M>::builder()
            .proxy_protocol(ProxyProtocol::Required)
            .tls(pki.server_config())
            .bind("127.0.0.1:0", || WhoTls)
            .unwrap();
        let addr = server.server_address().unwrap();
        let _running = Running::start(server);
        let mut sock = std::net::TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(LONG)).unwrap();
        sock.write_all(b"PROXY TCP4 192.0.2.99 192.0.2.1 4242 443\r\n")
            .unwrap();
        let name = socketserver::tls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn = socketserver::tls::rustls::ClientConnection::new(pki.client_config(false), name)
            .unwrap();
        let mut c = socketserver::tls::rustls::StreamOwned::new(conn, sock);
        let reply = line_round_trip(&mut c, "who\n");
        assert_eq!(
            reply,
            "192.0.2.99:4242 Some(\"localhost\")\n",
            "{}",
            std::any::type_name::<M>()
        );
        close(c);
    }
    let pki = Pki::new();
    check::<Threading>(&pki);
    check::<Evented>(&pki);
}

//! TLS side by side: this crate's `ThreadingTcpServer` and `EventedTcpServer` with
//! `Builder::tls`, against tokio + tokio-rustls, in the same run, with the same certificate
//! (ECDSA P-256, made by rcgen at start), the same rustls configuration and crypto provider
//! (`ring`) and the same cipher suite (the client offers only TLS13_AES_128_GCM_SHA256),
//! over loopback.
//!
//! ```text
//! cargo bench --bench tls                   # 3 reps x 3 s per point
//! cargo bench --bench tls -- --quick        # 1 rep x 1 s
//! ```
//!
//! - `handshakes`: C = 8 client threads, each in a loop: connect, a full handshake (no
//!   resumption), one 1-byte echo (so the server has finished its side), `close_notify`,
//!   close. Reported: handshakes/s.
//! - `echo`: C = 64 connections, set up first, driven by one client thread with `poll(2)`
//!   (one 64-byte request outstanding per connection). Reported: req/s.
//!
//! Beside each figure: the server's CPU per operation (its utime + stime over the window,
//! from `/proc/PID/stat`, divided by the operations) and its RSS at the end (`VmRSS`). Each
//! server is its own process (this binary re-executed as `tls serve NAME CERT KEY`), started
//! fresh for every point. Repetitions are interleaved; the table shows medians, the ratios
//! are medians of per-repetition ratios against tokio.

use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use socketserver::tls::rustls;
use socketserver::tls::{ClientAuth, load_certs, provider, server_config};
use socketserver::{EventedTcpServer, StreamRequest, ThreadingTcpServer};

const SERVERS: [&str; 3] = ["crate", "crate-evented", "tokio-rustls"];
const MSG: usize = 64;

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve") {
        return serve(&args[2], Path::new(&args[3]), Path::new(&args[4]));
    }
    // Under `cargo test --benches`: nothing to measure.
    if !args.iter().any(|a| a == "--bench") {
        return Ok(());
    }
    let quick = args.iter().any(|a| a == "--quick");
    let (reps, secs) = if quick { (1, 1.0) } else { (3, 3.0) };
    let dir = tempfile::tempdir()?;
    let (cert, key) = make_cert(dir.path())?;
    let client = client_config(&cert)?;
    println!(
        "TLS bench: {reps} rep(s) x {secs} s per point, loopback, on this machine ({} CPUs)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut results: Vec<(&str, &str, Vec<Point>)> = Vec::new();
    for scenario in ["handshakes", "echo"] {
        for server in SERVERS {
            results.push((scenario, server, Vec::new()));
        }
    }
    for rep in 0..reps {
        for entry in results.iter_mut() {
            let (scenario, server, points) = (entry.0, entry.1, &mut entry.2);
            let mut proc = ServerProc::start(server, &cert, &key)?;
            let p = match scenario {
                "handshakes" => handshakes(&proc, proc.addr, &client, 8, secs)?,
                _ => echo(&proc, proc.addr, &client, 64, secs)?,
            };
            proc.stop();
            println!(
                "  rep {rep} {scenario:<10} {server:<14} {:>9.0} /s  {:>7.1} us CPU/op  {:>6} KiB  ({}, {} starved)",
                p.rate, p.cpu_us, p.rss_kib, p.suite, p.starved
            );
            points.push(p);
        }
    }
    println!();
    println!(
        "| scenario | server | ops/s | server CPU per op | server RSS | vs tokio-rustls (ops/s) |"
    );
    println!("|---|---|---|---|---|---|");
    for (scenario, server, points) in &results {
        let peer = &results
            .iter()
            .find(|r| r.0 == *scenario && r.1 == "tokio-rustls")
            .expect("the peer ran")
            .2;
        let ratios: Vec<f64> = points
            .iter()
            .zip(peer)
            .map(|(a, b)| a.rate / b.rate)
            .collect();
        let label = match *scenario {
            "handshakes" => "full handshakes, C = 8",
            _ => "echo 64 B, C = 64 (poll client)",
        };
        println!(
            "| {label} | {server} | {:.0} | {:.1} µs | {:.1} MiB | {:.2}× |",
            median(points.iter().map(|p| p.rate)),
            median(points.iter().map(|p| p.cpu_us)),
            median(points.iter().map(|p| p.rss_kib as f64)) / 1024.0,
            median(ratios.into_iter()),
        );
    }
    Ok(())
}

fn median(it: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = it.collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// One measured point.
struct Point {
    rate: f64,
    cpu_us: f64,
    rss_kib: u64,
    suite: String,
    /// Echo: connections that got no reply in the window.
    starved: usize,
}

/// A self-signed ECDSA P-256 certificate for `localhost`, as PEM files.
fn make_cert(dir: &Path) -> io::Result<(std::path::PathBuf, std::path::PathBuf)> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .map_err(io::Error::other)?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem())?;
    std::fs::write(&key, ck.signing_key.serialize_pem())?;
    Ok((cert, key))
}

/// The client: trusts the certificate, offers one cipher suite, never resumes.
fn client_config(cert: &Path) -> io::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in load_certs(cert)? {
        roots.add(c).map_err(io::Error::other)?;
    }
    let mut p = (*provider()).clone();
    p.cipher_suites = vec![rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256];
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(p))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

// ----- servers --------------------------------------------------------------------------

fn serve(name: &str, cert: &Path, key: &Path) -> io::Result<()> {
    let config = Arc::new(server_config(cert, key, ClientAuth::Off)?);
    match name {
        "crate" => {
            let server = ThreadingTcpServer::builder()
                .tls(config)
                .workers(4, 256)
                .bind("127.0.0.1:0", |req: &mut StreamRequest| {
                    let mut buf = [0u8; 4096];
                    loop {
                        let n = req.rfile.read(&mut buf)?;
                        if n == 0 {
                            return Ok(());
                        }
                        req.wfile.write_all(&buf[..n])?;
                        req.wfile.flush()?;
                    }
                })?;
            println!("READY {}", server.server_address()?);
            server.serve_forever()
        }
        "crate-evented" => {
            let server = EventedTcpServer::builder()
                .tls(config)
                .framing(socketserver::framing::MessageFraming::Raw)
                .bind("127.0.0.1:0", || Echo)?;
            println!("READY {}", server.server_address()?);
            server.serve_forever()
        }
        _ => tokio_serve(config),
    }
}

struct Echo;

impl socketserver::MessageHandler for Echo {
    fn handle(&mut self, ch: &mut socketserver::Channel, msg: &[u8]) -> io::Result<()> {
        ch.push(msg);
        Ok(())
    }
}

fn tokio_serve(config: Arc<rustls::ServerConfig>) -> io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_io()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("READY {}", listener.local_addr()?);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        loop {
            let (sock, _) = listener.accept().await?;
            sock.set_nodelay(true)?;
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(sock).await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                loop {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if tls.write_all(&buf[..n]).await.is_err() || tls.flush().await.is_err()
                            {
                                break;
                            }
                        }
                    }
                }
                let _ = tls.shutdown().await;
            });
        }
    })
}

/// A peer server process, killed on drop.
struct ServerProc {
    child: Child,
    addr: SocketAddr,
}

impl ServerProc {
    fn start(name: &str, cert: &Path, key: &Path) -> io::Result<ServerProc> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("serve")
            .arg(name)
            .arg(cert)
            .arg(key)
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        io::BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
        let addr = line
            .strip_prefix("READY ")
            .and_then(|a| a.trim().parse().ok())
            .ok_or_else(|| io::Error::other(format!("{name}: no READY line: {line:?}")))?;
        Ok(ServerProc { child, addr })
    }

    /// utime + stime in seconds.
    fn cpu(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let ticks: f64 = [11, 12]
            .iter()
            .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<f64>().ok()))
            .sum();
        // SAFETY: sysconf has no preconditions.
        ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        self.stop();
    }
}

// ----- clients --------------------------------------------------------------------------

type Client = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn connect(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> io::Result<Client> {
    let sock = TcpStream::connect(addr)?;
    sock.set_nodelay(true)?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    let name = rustls::pki_types::ServerName::try_from("localhost").map_err(io::Error::other)?;
    let conn = rustls::ClientConnection::new(config.clone(), name).map_err(io::Error::other)?;
    let mut c = rustls::StreamOwned::new(conn, sock);
    while c.conn.is_handshaking() {
        c.conn.complete_io(&mut c.sock)?;
    }
    Ok(c)
}

fn suite(c: &Client) -> String {
    c.conn
        .negotiated_cipher_suite()
        .map_or("-".into(), |s| format!("{:?}", s.suite()))
}

/// C threads: connect, handshake, a 1-byte echo, close — for `secs`.
fn handshakes(
    proc: &ServerProc,
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    c: usize,
    secs: f64,
) -> io::Result<Point> {
    let suite_name = suite(&connect(addr, config)?);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let cpu0 = proc.cpu();
    let t0 = Instant::now();
    let threads: Vec<_> = (0..c)
        .map(|_| {
            let (stop, done, config) = (stop.clone(), done.clone(), config.clone());
            std::thread::spawn(move || -> io::Result<()> {
                while !stop.load(Ordering::Relaxed) {
                    let mut s = connect(addr, &config)?;
                    s.write_all(b"x")?;
                    let mut b = [0u8; 1];
                    s.read_exact(&mut b)?;
                    s.conn.send_close_notify();
                    let _ = s.conn.complete_io(&mut s.sock);
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let n = done.load(Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = proc.cpu() - cpu0;
    let rss_kib = proc.rss_kib();
    for t in threads {
        t.join()
            .map_err(|_| io::Error::other("client panicked"))??;
    }
    Ok(Point {
        rate: n as f64 / elapsed,
        cpu_us: cpu * 1e6 / n.max(1) as f64,
        rss_kib,
        suite: suite_name,
        starved: 0,
    })
}

/// C connections, one thread with `poll(2)`, one request outstanding on each.
fn echo(
    proc: &ServerProc,
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    c: usize,
    secs: f64,
) -> io::Result<Point> {
    let mut conns: Vec<(Client, usize)> = (0..c)
        .map(|_| connect(addr, config).map(|s| (s, 0)))
        .collect::<io::Result<_>>()?;
    let mut per_conn = vec![0u64; c];
    let suite_name = suite(&conns[0].0);
    let msg = [b'm'; MSG];
    for (s, _) in conns.iter_mut() {
        s.write_all(&msg)?;
        s.sock.set_nonblocking(true)?;
    }
    let mut fds: Vec<libc::pollfd> = conns
        .iter()
        .map(|(s, _)| libc::pollfd {
            fd: s.sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let mut buf = [0u8; 4096];
    let mut count = 0u64;
    let warmup = Instant::now() + Duration::from_millis(300);
    let (mut t0, mut cpu0, mut started) = (Instant::now(), 0.0, false);
    let mut end = warmup + Duration::from_secs_f64(secs);
    loop {
        let now = Instant::now();
        if !started && now >= warmup {
            (t0, cpu0, started, count) = (now, proc.cpu(), true, 0);
            per_conn.iter_mut().for_each(|n| *n = 0);
            end = now + Duration::from_secs_f64(secs);
        }
        if started && now >= end {
            break;
        }
        // SAFETY: `fds` is a valid array of pollfd for its length.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        for (i, fd) in fds.iter_mut().enumerate() {
            if fd.revents == 0 {
                continue;
            }
            fd.revents = 0;
            let (s, got) = &mut conns[i];
            loop {
                match s.conn.read_tls(&mut s.sock) {
                    Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(_) => {
                        s.conn.process_new_packets().map_err(io::Error::other)?;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            loop {
                match s.conn.reader().read(&mut buf) {
                    Ok(n) if n > 0 => *got += n,
                    _ => break,
                }
            }
            while *got >= MSG {
                *got -= MSG;
                count += 1;
                per_conn[i] += 1;
                s.conn.writer().write_all(&msg)?;
            }
            while s.conn.wants_write() {
                match s.conn.write_tls(&mut s.sock) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = proc.cpu() - cpu0;
    Ok(Point {
        rate: count as f64 / elapsed,
        cpu_us: cpu * 1e6 / count.max(1) as f64,
        rss_kib: proc.rss_kib(),
        suite: suite_name,
        starved: per_conn.iter().filter(|&&n| n == 0).count(),
    })
}

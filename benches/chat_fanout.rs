//! Chat fan-out: the `chat` example (evented) with 1 000 members; one member sends a line,
//! and the time until each of the others has it is measured. Prints p50 / p99 / max over
//! every (line, member) pair, the server's threads and RSS, and the target (p99 ≤ 50 ms).
//!
//! How to run (the example must be built in release first):
//!
//! ```text
//! cargo build --release --example chat
//! cargo bench --bench chat_fanout                       # 1 000 members, 20 lines
//! CHAT_MEMBERS=2000 CHAT_LINES=50 cargo bench --bench chat_fanout
//! ```
//!
//! All members are read by one epoll loop (a thread per member would measure the client's
//! scheduler, not the server). Loopback only.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `target/release/examples/chat`, beside this bench's own binary (`target/release/deps/`).
fn chat_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    dir.join("examples").join("chat")
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let _ = self.child.wait();
    }
}

fn start_server() -> Server {
    let bin = chat_binary();
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --release --example chat` first",
        bin.display()
    );
    let mut child = Command::new(bin)
        .args(["server", "--addr", "127.0.0.1:0", "--log-level", "warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn chat");
    // --log-level warn hides the "listening on" line: find the port from /proc instead.
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    let addr = loop {
        if let Some(a) = listening_addr(pid) {
            break a;
        }
        assert!(Instant::now() < deadline, "the chat server did not listen");
        std::thread::sleep(Duration::from_millis(10));
    };
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("chat server: {line}");
        }
    });
    Server { child, addr }
}

/// The TCP port process `pid` listens on (from `/proc/PID/net/tcp` and its descriptors).
fn listening_addr(pid: u32) -> Option<SocketAddr> {
    let mut inodes = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()? {
        let link = std::fs::read_link(fd.ok()?.path()).ok()?;
        let link = link.to_string_lossy();
        if let Some(inode) = link
            .strip_prefix("socket:[")
            .and_then(|s| s.strip_suffix(']'))
        {
            inodes.push(inode.to_string());
        }
    }
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // local_address, st == 0A (LISTEN), inode
        if f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
            let port = u16::from_str_radix(f[1].split(':').nth(1)?, 16).ok()?;
            return Some(SocketAddr::from(([127, 0, 0, 1], port)));
        }
    }
    None
}

fn status_field(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_string()))
        .unwrap_or_default()
}

/// A member: its socket and the bytes of a line not yet complete.
struct Member {
    sock: TcpStream,
    partial: Vec<u8>,
}

fn join(addr: SocketAddr, nick: &str) -> io::Result<Member> {
    let mut sock = TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(Duration::from_secs(30)))?;
    writeln!(sock, "{nick}")?;
    let mut r = BufReader::new(sock.try_clone()?);
    let mut line = String::new();
    while !line.starts_with("* you are") {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    // Anything the BufReader read past our line is a notice: dropped.
    sock.set_nonblocking(true)?;
    Ok(Member {
        sock,
        partial: Vec::new(),
    })
}

/// The members' sockets in one epoll set (`mio`, edge-triggered).
struct Reader {
    poll: mio::Poll,
    events: mio::Events,
}

impl Reader {
    fn new(members: &[Member]) -> io::Result<Reader> {
        let poll = mio::Poll::new()?;
        for (i, m) in members.iter().enumerate() {
            let fd = m.sock.as_raw_fd();
            poll.registry().register(
                &mut mio::unix::SourceFd(&fd),
                mio::Token(i),
                mio::Interest::READABLE,
            )?;
        }
        Ok(Reader {
            poll,
            events: mio::Events::with_capacity(1024),
        })
    }

    /// Reads whatever the members have (waiting at most `wait`); calls `seen(i, line)` for
    /// each complete line.
    fn drain(
        &mut self,
        members: &mut [Member],
        wait: Duration,
        mut seen: impl FnMut(usize, &[u8]),
    ) {
        if self.poll.poll(&mut self.events, Some(wait)).is_err() {
            return;
        }
        let mut buf = [0u8; 64 * 1024];
        for ev in self.events.iter() {
            let m = &mut members[ev.token().0];
            loop {
                match m.sock.read(&mut buf) {
                    Ok(0) => break,
                    Ok(k) => {
                        m.partial.extend_from_slice(&buf[..k]);
                        while let Some(at) = m.partial.iter().position(|&b| b == b'\n') {
                            let line: Vec<u8> = m.partial.drain(..=at).collect();
                            seen(ev.token().0, &line);
                        }
                    }
                    Err(_) => break,
                }
            }
        }
    }
}

/// Drops what the members have received so far (join notices), without waiting.
fn discard(members: &mut [Member]) {
    let mut buf = [0u8; 64 * 1024];
    for m in members.iter_mut() {
        while matches!(m.sock.read(&mut buf), Ok(k) if k > 0) {}
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let n = env("CHAT_MEMBERS", 1000).max(2);
    let lines = env("CHAT_LINES", 20).max(1);
    let _ = socketserver::raise_fd_limit();
    let server = start_server();
    let pid = server.child.id();
    let t0 = Instant::now();
    let mut members = Vec::with_capacity(n);
    for i in 0..n {
        members.push(join(server.addr, &format!("m{i:04}")).expect("join"));
        if i % 100 == 99 {
            // Keep the join notices from piling up in the members' sockets.
            discard(&mut members);
        }
    }
    let joined = t0.elapsed();
    // Let the last notices arrive and be dropped.
    let mut reader = Reader::new(&members).expect("epoll");
    let quiet = Instant::now() + Duration::from_millis(500);
    while Instant::now() < quiet {
        reader.drain(&mut members, Duration::from_millis(50), |_, _| {});
    }
    let (threads, rss) = (status_field(pid, "Threads:"), status_field(pid, "VmRSS:"));
    let mut latencies = Vec::with_capacity(lines * (n - 1));
    let mut missing = 0usize;
    for k in 0..lines {
        let tag = format!("fanout-{k}-");
        let sent = Instant::now();
        writeln!(members[0].sock, "{tag}").expect("send");
        let mut got = vec![false; n];
        got[0] = true;
        let mut left = n - 1;
        let until = sent + Duration::from_secs(10);
        while left > 0 && Instant::now() < until {
            reader.drain(&mut members, Duration::from_millis(100), |i, line| {
                if !got[i] && line.windows(tag.len()).any(|w| w == tag.as_bytes()) {
                    got[i] = true;
                    left -= 1;
                    latencies.push(sent.elapsed());
                }
            });
        }
        missing += left;
        if std::env::var_os("CHAT_VERBOSE").is_some() {
            eprintln!("line {k}: last delivery after {:?}", sent.elapsed());
        }
    }
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p99 = percentile(&latencies, 0.99);
    println!(
        "chat fan-out: {n} members, {lines} lines, {} deliveries",
        latencies.len()
    );
    println!(
        "  joined in {:.2} s; server threads {threads}, RSS {rss}",
        joined.as_secs_f64()
    );
    println!(
        "  latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; missing {missing}",
        ms(percentile(&latencies, 0.5)),
        ms(p99),
        ms(percentile(&latencies, 1.0))
    );
    let met = p99 <= Duration::from_millis(50) && missing == 0;
    println!(
        "  target p99 <= 50 ms, nothing missing: {}",
        if met { "met" } else { "MISSED" }
    );
}

//! A real HAProxy (Debian's `haproxy`, installed by `.ci/run`) on loopback in front of two
//! instances of the echo example started with `--proxy-protocol`: one sent `send-proxy`
//! (v1), the other `send-proxy-v2`, both health-checked through the header
//! (`check-send-proxy`: v2 checks are `LOCAL` commands). The servers must log the client's
//! real address and port (the client binds 127.0.0.2, which only the header can tell), the
//! health checks must pass, and SIGTERM to one instance under a steady load must move its
//! traffic to the other with no request lost.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use util::{ChildProc, LONG, free_tcp_addr, require_program, spawn_example_server, wait_until};

/// The address the test's clients connect from: a loopback address other than the
/// proxy's own 127.0.0.1, so the servers can only know it from the PROXY header.
const CLIENT_IP: &str = "127.0.0.2";

struct Proxy {
    /// Kept for its drop, which kills and reaps HAProxy.
    _proc: ChildProc,
    front: SocketAddr,
    stats: std::path::PathBuf,
}

/// Starts HAProxy in front of `v1` and `v2`, and waits until both servers are UP.
fn haproxy(dir: &Path, v1: SocketAddr, v2: SocketAddr) -> Proxy {
    let stats = dir.join("haproxy.sock");
    // Port 0 cannot be given to HAProxy: take a free port, retried if another test took it.
    for _attempt in 0..5 {
        let front = free_tcp_addr();
        let cfg = format!(
            "global
    stats socket {stats} mode 600 level admin
    maxconn 1000
defaults
    mode tcp
    timeout connect 200ms
    timeout client 20s
    timeout server 20s
    retries 3
    option redispatch 1
frontend front
    bind {front}
    default_backend echo
backend echo
    balance roundrobin
    # The health check is a real echo through the header: a server that refused the
    # header (or did not answer) would be DOWN.
    option tcp-check
    tcp-check send \"health\\n\"
    tcp-check expect string health
    server v1 {v1} send-proxy check check-send-proxy inter 100ms fall 1 rise 1
    server v2 {v2} send-proxy-v2 check check-send-proxy inter 100ms fall 1 rise 1
",
            stats = stats.display()
        );
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, cfg).unwrap();
        let mut cmd = std::process::Command::new("haproxy");
        cmd.args(["-db", "-f"]).arg(&path);
        let mut proc = ChildProc::spawn(cmd);
        let deadline = Instant::now() + LONG;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = proc.child.try_wait() {
                break; // the port was taken: try another
            }
            if TcpStream::connect(front).is_ok() {
                let proxy = Proxy {
                    _proc: proc,
                    front,
                    stats,
                };
                wait_until("HAProxy's health checks pass for both servers", || {
                    proxy.status("v1") == "UP" && proxy.status("v2") == "UP"
                });
                return proxy;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = proc.child.kill();
    }
    panic!("HAProxy did not start");
}

impl Proxy {
    /// `show stat` on the stats socket: the `status` column of server `name`.
    fn status(&self, name: &str) -> String {
        let Ok(mut s) = UnixStream::connect(&self.stats) else {
            return String::new();
        };
        s.set_read_timeout(Some(LONG)).unwrap();
        s.write_all(b"show stat\n").unwrap();
        let mut csv = String::new();
        let _ = s.read_to_string(&mut csv);
        let mut lines = csv.lines();
        let head: Vec<&str> = lines
            .next()
            .unwrap_or("")
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let col = head
            .iter()
            .position(|c| *c == "status")
            .unwrap_or(usize::MAX);
        lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .find(|f| f.first() == Some(&"echo") && f.get(1) == Some(&name))
            .and_then(|f| f.get(col).map(|s| s.to_string()))
            .unwrap_or_default()
    }
}

/// One request on a new connection from 127.0.0.2 through the proxy: `line` echoed back.
/// The client's port, or why it failed.
fn request(front: SocketAddr, line: &str) -> Result<u16, String> {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).map_err(|e| e.to_string())?;
    let from: SocketAddr = format!("{CLIENT_IP}:0").parse().unwrap();
    sock.bind(&from.into()).map_err(|e| e.to_string())?;
    sock.connect_timeout(&front.into(), LONG)
        .map_err(|e| format!("connect: {e}"))?;
    let port = sock
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map_or(0, |a| a.port());
    let mut c: TcpStream = sock.into();
    c.set_read_timeout(Some(LONG)).unwrap();
    c.write_all(line.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut back = String::new();
    BufReader::new(&c)
        .read_line(&mut back)
        .map_err(|e| format!("recv: {e}"))?;
    if back != line {
        return Err(format!("got {back:?} for {line:?}"));
    }
    Ok(port)
}

/// Instance 1 in the echo example's default mode (evented), instance 2 threading.
fn echo_instance(mode: &str) -> (ChildProc, SocketAddr) {
    spawn_example_server("echo", &["--proxy-protocol", "--mode", mode])
}

#[test]
fn behind_haproxy_both_header_versions_name_the_real_client() {
    if !require_program("haproxy") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (s1, a1) = echo_instance("evented");
    let (s2, a2) = echo_instance("threading");
    let proxy = haproxy(dir.path(), a1, a2);
    // Round robin: two requests reach both servers.
    let mut ports = Vec::new();
    for i in 0..4 {
        ports.push(request(proxy.front, &format!("hello {i}\n")).unwrap());
    }
    // Each instance logs its clients; which one got which request is HAProxy's choice.
    let mut logs: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    let found = |logs: &[Vec<String>; 2], port: u16| {
        let needle = format!("echo: {CLIENT_IP}:{port}: echoed");
        logs.iter()
            .position(|l| l.iter().any(|line| line.contains(&needle)))
    };
    let deadline = Instant::now() + LONG;
    while ports.iter().any(|&p| found(&logs, p).is_none()) && Instant::now() < deadline {
        for (log, s) in logs.iter_mut().zip([&s1, &s2]) {
            log.extend(s.stderr.try_iter());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for log in &logs {
        let refused: Vec<_> = log
            .iter()
            .filter(|l| l.contains("PROXY protocol"))
            .collect();
        assert!(refused.is_empty(), "a header refused: {refused:?}");
    }
    let mut seen = [false, false];
    for &port in &ports {
        let at = found(&logs, port)
            .unwrap_or_else(|| panic!("no log line names {CLIENT_IP}:{port}: {logs:?}"));
        seen[at] = true;
    }
    assert_eq!(
        seen,
        [true, true],
        "the real client's address, in both instances' logs"
    );
    assert_eq!(proxy.status("v1"), "UP");
    assert_eq!(proxy.status("v2"), "UP");
    drop(proxy);
}

#[test]
fn sigterm_to_one_instance_under_load_moves_its_traffic_with_no_request_lost() {
    if !require_program("haproxy") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut s1, a1) = echo_instance("evented");
    let (s2, a2) = echo_instance("threading");
    let proxy = haproxy(dir.path(), a1, a2);
    let front = proxy.front;
    // A steady load: one request after the other, each on a new connection, for as long as
    // it takes to stop instance 1 and see its traffic move (bounded in count and time).
    let (started_tx, started_rx) = crossbeam_channel::bounded::<()>(1);
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
    let load = std::thread::spawn(move || {
        let (mut ok, mut failed) = (0u32, Vec::new());
        let deadline = Instant::now() + LONG;
        for i in 0..20_000u32 {
            match request(front, &format!("request {i}\n")) {
                Ok(_) => ok += 1,
                Err(e) => failed.push(format!("request {i}: {e}")),
            }
            if i == 50 {
                let _ = started_tx.send(());
            }
            if stop_rx.try_recv().is_ok() || Instant::now() > deadline {
                break;
            }
        }
        (ok, failed)
    });
    started_rx.recv_timeout(LONG).expect("the load started");
    // SIGTERM, as systemd or Kubernetes sends: the instance drains and exits 0.
    // SAFETY: kill(2) on our own child, not reaped yet.
    unsafe { libc::kill(s1.child.id() as i32, libc::SIGTERM) };
    let exited = Instant::now();
    let status = loop {
        if let Some(st) = s1.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            exited.elapsed() < LONG,
            "instance 1 did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "instance 1 exited with {status}");
    let drain = exited.elapsed();
    wait_until("HAProxy marks instance 1 down", || {
        proxy.status("v1").starts_with("DOWN")
    });
    // Some more requests, all on instance 2.
    let before = s2.stderr.len();
    std::thread::sleep(Duration::from_millis(300));
    stop_tx.send(()).unwrap();
    let (ok, failed) = load.join().unwrap();
    assert!(
        failed.is_empty(),
        "{} of {} requests lost: {failed:?}",
        failed.len(),
        ok as usize + failed.len()
    );
    assert!(ok > 100, "only {ok} requests made");
    assert!(s2.stderr.len() > before, "instance 2 took the traffic");
    eprintln!("{ok} requests, 0 lost; instance 1 exited {drain:?} after SIGTERM");
}

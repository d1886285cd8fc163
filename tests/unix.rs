//! Unix-domain servers (CPython's Unix* cases, sync and threading; forking ones are in
//! `forking.rs`), and the socket file: stale files, non-sockets, permissions, removal.

mod util;

use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram as StdUnixDatagram, UnixStream as StdUnixStream};
use std::path::{Path, PathBuf};

use socketserver::*;
use util::*;

/// A fresh directory for socket files, removed on drop.
struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "socketserver-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn stream_round_trip(path: &Path) {
    let mut s = StdUnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(LONG)).unwrap();
    s.write_all(b"hello world\n").unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    assert_eq!(out, b"hello world\n");
}

fn dgram_round_trip(server: &Path, client: &Path) {
    let c = StdUnixDatagram::bind(client).unwrap();
    c.set_read_timeout(Some(LONG)).unwrap();
    c.send_to(b"hello world\n", server).unwrap();
    let mut buf = [0u8; 64];
    let n = c.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello world\n");
    drop(c);
    std::fs::remove_file(client).unwrap();
}

fn run_stream<M: Mode>() {
    let dir = TempDir::new("stream");
    let path = dir.path("s.sock");
    let server = Server::<transport::UnixStream, M>::bind(&path, echo_line).unwrap();
    assert_eq!(
        server.server_address().unwrap(),
        ClientAddr::Unix(Some(path.clone()))
    );
    let run = Running::start(server);
    for _ in 0..3 {
        stream_round_trip(&path);
    }
    let server = run.server.clone();
    run.stop().unwrap();
    server.server_close();
    assert!(!path.exists(), "the socket file is removed on close");
}

fn run_dgram<M: Mode>() {
    let dir = TempDir::new("dgram");
    let path = dir.path("d.sock");
    let server = Server::<transport::UnixDatagram, M>::bind(&path, echo_datagram).unwrap();
    let run = Running::start(server);
    for i in 0..3 {
        dgram_round_trip(&path, &dir.path(&format!("client{i}.sock")));
    }
    drop(run);
}

#[test]
fn test_unix_stream_server() {
    run_stream::<Synchronous>();
}

#[test]
fn test_threading_unix_stream_server() {
    run_stream::<Threading>();
}

#[test]
fn test_unix_datagram_server() {
    run_dgram::<Synchronous>();
}

#[test]
fn test_threading_unix_datagram_server() {
    run_dgram::<Threading>();
}

#[test]
fn the_client_address_is_the_peers_bound_path() {
    let dir = TempDir::new("peer");
    let path = dir.path("d.sock");
    let server = UnixDatagramServer::bind(&path, |req: &mut DatagramRequest| {
        let who = req.client_address().to_string();
        req.wfile.write_all(who.as_bytes())
    })
    .unwrap();
    let _run = Running::start(server);
    let client_path = dir.path("me.sock");
    let c = StdUnixDatagram::bind(&client_path).unwrap();
    c.set_read_timeout(Some(LONG)).unwrap();
    c.send_to(b"who am i", &path).unwrap();
    let mut buf = [0u8; 256];
    let n = c.recv(&mut buf).unwrap();
    assert_eq!(
        std::str::from_utf8(&buf[..n]).unwrap(),
        client_path.to_str().unwrap()
    );
}

#[test]
fn a_stale_socket_file_from_a_dead_server_is_replaced() {
    let dir = TempDir::new("stale");
    let path = dir.path("s.sock");
    // A dead server: bound, never listening, closed, file left behind (as Python leaves it).
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let server = ThreadingUnixStreamServer::bind(&path, echo_line).unwrap();
    let _run = Running::start(server);
    stream_round_trip(&path);
}

#[test]
fn a_live_servers_socket_is_never_taken_over() {
    let dir = TempDir::new("live");
    let path = dir.path("s.sock");
    let first = ThreadingUnixStreamServer::bind(&path, echo_line).unwrap();
    let _run = Running::start(first);
    let second = ThreadingUnixStreamServer::bind(&path, echo_line).unwrap_err();
    assert_eq!(second.kind(), io::ErrorKind::AddrInUse);
    assert!(
        second
            .to_string()
            .starts_with(&format!("bind {}: ", path.display())),
        "the error names the path: {second}"
    );
    stream_round_trip(&path); // the first one still serves
}

#[test]
fn a_path_that_is_not_a_socket_is_never_clobbered() {
    let dir = TempDir::new("clobber");
    let path = dir.path("important.txt");
    std::fs::write(&path, b"keep me").unwrap();
    let err = UnixStreamServer::bind(&path, echo_line).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
}

#[test]
fn the_socket_file_gets_the_requested_permissions() {
    let dir = TempDir::new("mode");
    let path = dir.path("s.sock");
    let _server = UnixStreamServer::builder()
        .unix_mode(0o600)
        .bind(&path, echo_line)
        .unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn close_leaves_a_file_that_replaced_ours_alone() {
    let dir = TempDir::new("replaced");
    let path = dir.path("s.sock");
    let server = UnixStreamServer::bind(&path, echo_line).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, b"someone else's").unwrap();
    server.server_close();
    assert_eq!(std::fs::read(&path).unwrap(), b"someone else's");
}

#[cfg(target_os = "linux")]
#[test]
fn abstract_namespace_addresses_need_no_file() {
    let name = format!("\0socketserver-test-{}", std::process::id());
    let server = ThreadingUnixStreamServer::bind(&name, echo_line).unwrap();
    assert!(matches!(
        server.server_address().unwrap(),
        ClientAddr::UnixAbstract(_)
    ));
    let _run = Running::start(server);
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name.as_bytes()[1..]).unwrap();
    let mut s = StdUnixStream::connect_addr(&addr).unwrap();
    s.set_read_timeout(Some(LONG)).unwrap();
    s.write_all(b"abstract\n").unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    assert_eq!(out, b"abstract\n");
}

/// Issue 13.10: the second instance's stale-socket probe connects to the live server; it
/// must not run a handler there nor count as a client.
#[test]
fn a_second_instances_stale_probe_is_not_a_client_of_the_live_server() {
    let dir = TempDir::new("probe");
    let path = dir.path("s.sock");
    let handled = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = handled.clone();
    let first = ThreadingUnixStreamServer::bind(&path, move |req: &mut StreamRequest| {
        h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        echo_line(req)
    })
    .unwrap();
    let run = Running::start(first);
    let second = ThreadingUnixStreamServer::bind(&path, echo_line).unwrap_err();
    assert_eq!(second.kind(), io::ErrorKind::AddrInUse);
    // A real client, accepted after the probe (the accept queue is FIFO).
    stream_round_trip(&path);
    wait_until("the client is counted", || run.server.stats().served >= 1);
    let st = run.server.stats();
    assert_eq!(
        (st.accepted, st.served),
        (1, 1),
        "the probe was counted: {st:?}"
    );
    assert_eq!(handled.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn a_unix_handler_gets_its_peers_credentials() {
    let dir = TempDir::new("cred");
    let path = dir.path("s.sock");
    let server = ThreadingUnixStreamServer::bind(&path, |req: &mut StreamRequest| {
        let c = req.peer_credentials()?;
        write!(req.wfile, "{} {} {:?}", c.uid, c.gid, c.pid)
    })
    .unwrap();
    let _run = Running::start(server);
    let mut s = StdUnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(LONG)).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    #[cfg(target_os = "linux")]
    let pid = Some(std::process::id() as i32);
    #[cfg(not(target_os = "linux"))]
    let pid: Option<i32> = None;
    assert_eq!(out, format!("{uid} {gid} {pid:?}"));
}

#[test]
fn peer_credentials_over_tcp_are_unsupported() {
    let server = ThreadingTcpServer::bind("127.0.0.1:0", |req: &mut StreamRequest| {
        let kind = req.peer_credentials().unwrap_err().kind();
        write!(req.wfile, "{kind:?}")
    })
    .unwrap();
    let addr = server.server_address().unwrap();
    let _run = Running::start(server);
    assert_eq!(round_trip(addr, b""), b"Unsupported");
}

/// The kernel's limit on a Unix datagram socket's receive queue (`net.unix.max_dgram_qlen`).
fn max_dgram_qlen() -> usize {
    std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(10)
}

/// A peer `a` that sends a few more datagrams than its receive queue holds and never reads
/// its replies: the server's next reply to it cannot be sent (`EAGAIN`) until `a` reads.
/// Returns `a` once the server has handled more than `a`'s queue holds.
fn a_peer_that_stops_reading<M: Mode>(
    run: &Running<transport::UnixDatagram, M>,
    server: &Path,
    at: &Path,
) -> StdUnixDatagram {
    let a = StdUnixDatagram::bind(at).unwrap();
    let qlen = max_dgram_qlen();
    for i in 0..qlen + 5 {
        a.send_to(&(i as u32).to_be_bytes(), server).unwrap();
    }
    wait_until("a's receive queue is full", || {
        run.server.stats().served > qlen as u64
    });
    a
}

/// Reads what `a` was sent, so that the replies waiting for it can leave.
fn read_all_replies(a: &StdUnixDatagram) {
    a.set_read_timeout(Some(LONG)).unwrap();
    let mut buf = [0u8; 16];
    for _ in 0..max_dgram_qlen() + 5 {
        a.recv(&mut buf)
            .expect("every reply arrives once the peer reads");
    }
}

#[test]
fn unix_datagram_stalled_peer_child() {
    if !is_child() {
        return;
    }
    let dir = TempDir::new("stalled");
    let path = dir.path("s.sock");
    let server = UnixDatagramServer::builder()
        .write_timeout(Some(LONG))
        .bind(&path, echo_datagram)
        .unwrap();
    let run = Running::start(server);
    let a = a_peer_that_stops_reading(&run, &path, &dir.path("a.sock"));
    // The reply waits for `a`: `poll` says the server's socket is writable all along.
    let cpu = || {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid clock id and timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
        std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    };
    let (before, window) = (cpu(), std::time::Duration::from_secs(1));
    std::thread::sleep(window); // the measuring window, not a wait for an event
    let used = cpu() - before;
    read_all_replies(&a);
    drop(run);
    println!("CPU {used:?} in {window:?}");
    assert!(
        used < window / 4,
        "{used:?} of CPU in {window:?}: the server spins while a reply waits for its peer"
    );
    println!("PASSED");
}

#[test]
fn a_reply_waiting_for_a_unix_datagram_peer_that_does_not_read_costs_no_cpu() {
    // In a process of its own: the CPU measured is the server's alone.
    let mut child = spawn_self("unix_datagram_stalled_peer_child");
    ChildProc::expect_line(&child.stdout, "PASSED");
    assert_eq!(child.wait_exit(), Some(0));
}

#[test]
fn a_threading_unix_datagram_server_serves_others_while_a_reply_waits_for_a_peer() {
    let dir = TempDir::new("stalled-threading");
    let path = dir.path("s.sock");
    let server = ThreadingUnixDatagramServer::builder()
        .write_timeout(Some(LONG * 3))
        .bind(&path, echo_datagram)
        .unwrap();
    let run = Running::start(server);
    let a = a_peer_that_stops_reading(&run, &path, &dir.path("a.sock"));
    // The leader waits to send `a`'s reply, as a handler that blocks: another receiver
    // takes over and serves `b`.
    let b = StdUnixDatagram::bind(dir.path("b.sock")).unwrap();
    b.set_read_timeout(Some(LONG)).unwrap();
    b.send_to(b"from b", &path).unwrap();
    let mut buf = [0u8; 16];
    let n = b.recv(&mut buf).expect("b is served while a's reply waits");
    assert_eq!(&buf[..n], b"from b");
    read_all_replies(&a);
}

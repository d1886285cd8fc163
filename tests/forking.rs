//! Forking servers (CPython's Forking* cases) and fork safety: only our own children are
//! reaped, `max_children` holds before forking, no zombies after close, and a child never
//! hangs on a lock another parent thread held at fork time.

mod util;

use std::io::{self, BufRead, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use socketserver::*;
use util::*;

/// No child of this process is left: `waitpid(-1, WNOHANG)` finds none (ECHILD) — only
/// meaningful inside a child process that owns all its children.
fn has_children() -> bool {
    // SAFETY: waitpid with WNOHANG and a null status pointer.
    let r = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
    r == 0
}

/// Forks a foreign child that exits 72 (CPython's `simple_subprocess`).
fn foreign_child() -> libc::pid_t {
    // SAFETY: the child only calls _exit.
    match unsafe { libc::fork() } {
        0 => unsafe { libc::_exit(72) },
        pid => pid,
    }
}

fn assert_foreign_child_exit_72(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waitpid on our own child.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid, "the foreign child was reaped by the server");
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 72);
}

/// The whole CPython scenario, in a child process of its own (forking from the
/// multithreaded test harness is what the fork-safety test is about; these ones want a
/// clean `waitpid(-1)` view).
fn run_in_child(test: &str) {
    let mut child = spawn_self(test);
    ChildProc::expect_line(&child.stdout, "PASSED");
    assert_eq!(child.wait_exit(), Some(0));
}

fn forking_round_trips<T, F>(server: Server<T, Forking>, examine: F)
where
    T: Transport,
    F: Fn(&Server<T, Forking>),
{
    let foreign = foreign_child();
    let run = Running::start(server);
    for _ in 0..3 {
        examine(&run.server);
    }
    let server = run.server.clone();
    run.stop().unwrap();
    assert!(
        server.server_close(),
        "children finish within the grace period"
    );
    assert_eq!(server.stats().workers, 0);
    assert_foreign_child_exit_72(foreign);
    assert!(!has_children(), "zombies left after server_close");
}

#[test]
fn forking_tcp_child() {
    if !is_child() {
        return;
    }
    let server = ForkingTcpServer::bind("127.0.0.1:0", echo_line).unwrap();
    forking_round_trips(server, |s| {
        let addr: SocketAddr = s.server_address().unwrap();
        assert_eq!(round_trip(addr, b"hello world\n"), b"hello world\n");
    });
    println!("PASSED");
}

#[test]
fn test_forking_tcp_server() {
    run_in_child("forking_tcp_child");
}

#[test]
fn forking_udp_child() {
    if !is_child() {
        return;
    }
    let server = ForkingUdpServer::bind("127.0.0.1:0", echo_datagram).unwrap();
    forking_round_trips(server, |s| {
        let c = udp_client();
        c.send_to(b"hello world\n", s.server_address().unwrap())
            .unwrap();
        let mut buf = [0u8; 64];
        let n = c.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello world\n");
    });
    println!("PASSED");
}

#[test]
fn test_forking_udp_server() {
    run_in_child("forking_udp_child");
}

#[test]
fn forking_unix_child() {
    if !is_child() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("socketserver-fork-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s.sock");
    let server = ForkingUnixStreamServer::bind(&path, echo_line).unwrap();
    forking_round_trips(server, |_| {
        let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
        s.set_read_timeout(Some(LONG)).unwrap();
        s.write_all(b"hello world\n").unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"hello world\n");
    });
    let dpath = dir.join("d.sock");
    let server = ForkingUnixDatagramServer::bind(&dpath, echo_datagram).unwrap();
    forking_round_trips(server, |_| {
        let cpath = dir.join("c.sock");
        let _ = std::fs::remove_file(&cpath);
        let c = std::os::unix::net::UnixDatagram::bind(&cpath).unwrap();
        c.set_read_timeout(Some(LONG)).unwrap();
        c.send_to(b"hello world\n", &dpath).unwrap();
        let mut buf = [0u8; 64];
        let n = c.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello world\n");
    });
    std::fs::remove_dir_all(&dir).unwrap();
    println!("PASSED");
}

#[test]
fn test_forking_unix_stream_and_datagram_servers() {
    run_in_child("forking_unix_child");
}

#[test]
fn forking_udp_burst_child() {
    if !is_child() {
        return;
    }
    let server = ForkingUdpServer::bind("127.0.0.1:0", echo_datagram).unwrap();
    let addr = server.server_address().unwrap();
    // Queued before the server runs: its first `recvmmsg` takes them all at once.
    let c = udp_client();
    for i in 0..8u32 {
        c.send_to(&i.to_be_bytes(), addr).unwrap();
    }
    let run = Running::start(server);
    let mut got: Vec<u32> = (0..8)
        .map(|_| {
            let mut buf = [0u8; 16];
            let n = c.recv(&mut buf).expect("a reply to every queued datagram");
            u32::from_be_bytes(buf[..n].try_into().unwrap())
        })
        .collect();
    got.sort();
    assert_eq!(got, (0..8).collect::<Vec<_>>());
    drop(run);
    println!("PASSED");
}

/// A child is forked per datagram, so the serving loop takes one at a time from its
/// receive batch: the rest of the batch is served next, not left until another datagram
/// comes.
#[test]
fn forking_udp_server_serves_every_datagram_of_a_receive_batch() {
    run_in_child("forking_udp_burst_child");
}

#[test]
fn forking_udp_stop_child() {
    if !is_child() {
        return;
    }
    let server = ForkingUdpServer::builder()
        .max_children(1)
        .bind("127.0.0.1:0", |req: &mut DatagramRequest| {
            thread::sleep(Duration::from_millis(200));
            echo_datagram(req)
        })
        .unwrap();
    let addr = server.server_address().unwrap();
    let c = udp_client();
    for i in 0..3u32 {
        c.send_to(&i.to_be_bytes(), addr).unwrap();
    }
    let run = Running::start(server);
    wait_until("the first child runs", || run.server.stats().workers == 1);
    // Watch the children while the stop serves the rest of the batch.
    let server = run.server.clone();
    let watching = Arc::new(AtomicBool::new(true));
    let w = watching.clone();
    let most = thread::spawn(move || {
        let mut most = 0;
        while w.load(Ordering::SeqCst) {
            most = most.max(server.stats().workers);
            thread::sleep(Duration::from_millis(1));
        }
        most
    });
    run.stop().unwrap();
    let mut buf = [0u8; 16];
    for _ in 0..3 {
        c.recv(&mut buf)
            .expect("every datagram received before the stop is served");
    }
    watching.store(false, Ordering::SeqCst);
    assert_eq!(most.join().unwrap(), 1, "max_children held while stopping");
    println!("PASSED");
}

/// The stop serves the datagrams already received, one child at a time when
/// `max_children` is 1: it waits for a child to end rather than fork past the limit.
#[test]
fn forking_udp_server_keeps_max_children_while_it_serves_the_rest_of_a_batch_at_stop() {
    run_in_child("forking_udp_stop_child");
}

#[test]
fn forking_error_child() {
    if !is_child() {
        return;
    }
    // ErrorHandlerTest.test_forking_handled: the child reports through handle_error (here
    // a pipe, since the hook runs in the child) and exits 1, which the parent counts.
    let (mut rx, tx) = std::os::unix::net::UnixStream::pair().unwrap();
    let tx = Arc::new(parking_lot::Mutex::new(tx));
    let server = ForkingTcpServer::builder()
        .handle_error(move |_, err| {
            let _ = writeln!(tx.lock(), "Error handled: {err}");
        })
        .bind("127.0.0.1:0", |_req: &mut StreamRequest| {
            Err(io::Error::other("ValueError"))
        })
        .unwrap();
    let addr = server.server_address().unwrap();
    let run = Running::start(server);
    let _ = round_trip(addr, b"x");
    rx.set_read_timeout(Some(LONG)).unwrap();
    let mut line = String::new();
    io::BufReader::new(&mut rx).read_line(&mut line).unwrap();
    assert_eq!(line, "Error handled: ValueError\n");
    wait_until("child reaped", || run.server.stats().served == 1);
    assert_eq!(
        run.server.stats().errors,
        1,
        "exit status 1 is counted as an error"
    );
    println!("PASSED");
}

#[test]
fn test_forking_handled() {
    run_in_child("forking_error_child");
}

#[test]
fn forking_max_children_child() {
    if !is_child() {
        return;
    }
    // A burst of 12 slow requests with max_children 3: never more than 3 children at once.
    let server = ForkingTcpServer::builder()
        .max_children(3)
        .bind("127.0.0.1:0", |req: &mut StreamRequest| {
            let mut line = String::new();
            req.rfile.read_line(&mut line)?; // held open until the client sends
            req.wfile.write_all(line.as_bytes())
        })
        .unwrap();
    let addr = server.server_address().unwrap();
    let run = Running::start(server);
    let mut clients: Vec<_> = (0..12).map(|_| connect(addr)).collect();
    wait_until("3 children", || run.server.stats().workers == 3);
    // The others wait in the backlog: the limit holds while they wait.
    let deadline = Instant::now() + Duration::from_millis(300);
    while Instant::now() < deadline {
        assert!(run.server.stats().workers <= 3);
        thread::sleep(Duration::from_millis(10));
    }
    for (i, c) in clients.iter_mut().enumerate() {
        writeln!(c, "{i}").unwrap();
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        assert_eq!(out, format!("{i}\n"));
        assert!(run.server.stats().workers <= 3);
    }
    println!("PASSED");
}

#[test]
fn max_children_is_respected_under_a_burst() {
    run_in_child("forking_max_children_child");
}

/// A logger whose single lock is held for a while on every call: the worst case for a
/// child forked while another thread logs.
struct SlowLockLogger(parking_lot::Mutex<u64>);
impl log::Log for SlowLockLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, _: &log::Record<'_>) {
        let mut n = self.0.lock();
        *n += 1;
        for _ in 0..1000 {
            std::hint::black_box(*n);
        }
    }
    fn flush(&self) {}
}
static LOGGER: SlowLockLogger = SlowLockLogger(parking_lot::Mutex::new(0));

#[test]
fn fork_safety_child() {
    if !is_child() {
        return;
    }
    log::set_logger(&LOGGER).unwrap();
    log::set_max_level(log::LevelFilter::Info);
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let chatter = thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            log::info!("parent thread logging");
        }
    });
    let server = ForkingTcpServer::builder()
        .max_children(8)
        .bind("127.0.0.1:0", |req: &mut StreamRequest| {
            log::info!("child logging"); // a no-op in the child: log is off there
            echo_line(req)
        })
        .unwrap();
    let addr = server.server_address().unwrap();
    let run = Running::start(server);
    for i in 0..200 {
        let msg = format!("request {i}\n");
        assert_eq!(
            round_trip(addr, msg.as_bytes()),
            msg.as_bytes(),
            "request {i}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    chatter.join().unwrap();
    let server = run.server.clone();
    run.stop().unwrap();
    assert!(server.server_close());
    assert!(!has_children());
    println!("PASSED");
}

#[test]
fn forked_children_do_not_hang_while_another_parent_thread_logs() {
    run_in_child("fork_safety_child");
}

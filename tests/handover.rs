//! Restarts that refuse nobody: `SIGUSR2` makes an example server start a copy of itself
//! on the same listening socket (`Server::hand_over`: descriptor 3, `LISTEN_FDS`), wait
//! for its `READY=1`, then stop accepting and drain. Clients connecting in a loop all the
//! while see no refusal and no unanswered request, counted on both sides: the clients
//! count answers, the two servers' summaries count what they served.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use util::*;

/// Kills (SIGKILL) a process that is not our child on drop: the successor, which the
/// example started, if the test fails before stopping it.
struct KillOnDrop(libc::pid_t);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the successor's pid, which the test read from its log.
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}

#[derive(Default)]
struct Counts {
    answered: AtomicU64,
    refused: AtomicU64,
    unanswered: AtomicU64,
    /// Slowest connect + round trip, in microseconds.
    slowest_us: AtomicU64,
}

/// One client: connect, send a line, read it back, close — in a loop until `stop`
/// (and at most `max` connections).
fn client_loop(addr: SocketAddr, id: u64, max: u64, stop: &AtomicBool, counts: &Counts) {
    for i in 0..max {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let start = Instant::now();
        let mut conn = match TcpStream::connect(addr) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("client {id}: connect {i}: {e}");
                counts.refused.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        let msg = format!("{id}:{i}\n");
        let mut reply = vec![0u8; msg.len()];
        let ok = conn.set_read_timeout(Some(LONG)).is_ok()
            && conn.write_all(msg.as_bytes()).is_ok()
            && conn.read_exact(&mut reply).is_ok()
            && reply == msg.as_bytes();
        if ok {
            counts.answered.fetch_add(1, Ordering::Relaxed);
        } else {
            eprintln!("client {id}: connection {i} got no (right) answer");
            counts.unanswered.fetch_add(1, Ordering::Relaxed);
        }
        let us = start.elapsed().as_micros() as u64;
        counts.slowest_us.fetch_max(us, Ordering::Relaxed);
    }
}

fn served(summary: &str) -> u64 {
    summary
        .split(", ")
        .find_map(|part| part.strip_prefix("stopped: "))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no served count in {summary:?}"))
}

fn wait_for(counts: &Counts, at_least: u64) {
    let deadline = Instant::now() + LONG;
    while counts.answered.load(Ordering::Relaxed) < at_least {
        assert!(Instant::now() < deadline, "the clients made no progress");
        thread::sleep(Duration::from_millis(2));
    }
}

fn hand_over_under_load(mode: &str) {
    const CLIENTS: u64 = 4;
    let (mut old, addr) = spawn_example_server("echo", &["--mode", mode]);
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let (counts, stop) = (counts.clone(), stop.clone());
            thread::spawn(move || client_loop(addr, id, 50_000, &stop, &counts))
        })
        .collect();
    wait_for(&counts, 300);

    let before = counts.answered.load(Ordering::Relaxed);
    let signalled = Instant::now();
    old.signal(libc::SIGUSR2);
    let line = ChildProc::expect_line(&old.stderr, "hand-over: successor pid ");
    let ready = signalled.elapsed();
    let pid: libc::pid_t = line["hand-over: successor pid ".len()..]
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line:?}"));
    let successor = KillOnDrop(pid);
    assert_eq!(old.wait_exit(), Some(0), "the old server's exit status");
    let drained = signalled.elapsed();
    let old_summary = ChildProc::expect_line(&old.stderr, "stopped:");
    let during = counts.answered.load(Ordering::Relaxed) - before;

    // The successor alone now: it serves some more.
    let after_old = counts.answered.load(Ordering::Relaxed);
    wait_for(&counts, after_old + 300);
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    // SAFETY: kill(2) on the successor's pid.
    unsafe { libc::kill(successor.0, libc::SIGTERM) };
    let new_summary = ChildProc::expect_line(&old.stderr, "stopped:");

    let answered = counts.answered.load(Ordering::Relaxed);
    let refused = counts.refused.load(Ordering::Relaxed);
    let unanswered = counts.unanswered.load(Ordering::Relaxed);
    let (old_served, new_served) = (served(&old_summary), served(&new_summary));
    eprintln!(
        "hand-over ({mode} mode, {CLIENTS} clients in a loop): {answered} connections \
         answered, {refused} refused, {unanswered} unanswered; old server served \
         {old_served}, successor {new_served}; SIGUSR2 → successor ready in {ready:?}, \
         old process gone in {drained:?}, {during} connections answered meanwhile; slowest \
         connection {} ms",
        counts.slowest_us.load(Ordering::Relaxed) as f64 / 1000.0
    );
    assert_eq!(refused, 0, "connections refused during the hand-over");
    assert_eq!(unanswered, 0, "connections unanswered during the hand-over");
    assert_eq!(
        old_served + new_served,
        answered,
        "the servers' counts ({old_summary} / {new_summary}) against the clients'"
    );
    assert!(old_served > 0 && new_served > 0, "both servers served");
}

#[test]
fn sigusr2_hands_over_with_no_connection_refused_or_unanswered_evented() {
    hand_over_under_load("evented");
}

#[test]
fn sigusr2_hands_over_with_no_connection_refused_or_unanswered_threading() {
    hand_over_under_load("threading");
}

#[test]
fn hand_over_passes_the_socket_as_fd_3_with_the_successors_own_pid() {
    use socketserver::TcpServer;
    if is_child() {
        // The successor: systemd's conventions, exactly.
        let pid = std::process::id().to_string();
        assert_eq!(std::env::var("LISTEN_PID").as_deref(), Ok(pid.as_str()));
        assert_eq!(std::env::var("LISTEN_FDS").as_deref(), Ok("1"));
        assert_eq!(
            std::env::var("LISTEN_FDNAMES").as_deref(),
            Ok("socketserver")
        );
        let passed = socketserver::systemd::take_named("socketserver")
            .unwrap()
            .expect("a socket named socketserver");
        assert_eq!(passed.fd(), 3);
        let server = TcpServer::builder().from_passed(passed, echo_line).unwrap();
        socketserver::systemd::notify_ready().unwrap();
        server.handle_request().unwrap();
        return;
    }
    let server = TcpServer::bind("127.0.0.1:0", echo_line).unwrap();
    let addr = server.server_address().unwrap();
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "hand_over_passes_the_socket_as_fd_3_with_the_successors_own_pid",
        "--exact",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, "1");
    let mut child = server.hand_over(&cmd, LONG).unwrap();
    // This server does not serve: the successor answers, on the same socket.
    assert_eq!(
        round_trip(addr, b"to the successor\n"),
        b"to the successor\n"
    );
    assert!(child.wait().unwrap().success(), "the successor's checks");
}

#[test]
fn a_successor_that_exits_before_it_is_ready_fails_the_hand_over() {
    use socketserver::TcpServer;
    let server = TcpServer::bind("127.0.0.1:0", echo_line).unwrap();
    let err = server
        .hand_over(&std::process::Command::new("/bin/true"), LONG)
        .unwrap_err();
    assert!(
        err.to_string().contains("exited before it was ready"),
        "{err}"
    );
    // The server still listens.
    let addr = server.server_address().unwrap();
    let run = Running::start(server);
    assert_eq!(round_trip(addr, b"still here\n"), b"still here\n");
    run.stop().unwrap();
}

#[test]
fn a_successor_not_ready_in_time_is_killed_and_the_hand_over_times_out() {
    use socketserver::TcpServer;
    let server = TcpServer::bind("127.0.0.1:0", echo_line).unwrap();
    let mut cmd = std::process::Command::new("/bin/sleep");
    cmd.arg("30");
    let started = Instant::now();
    let err = server
        .hand_over(&cmd, Duration::from_millis(300))
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_restart_while_a_manager_holds_the_socket_queues_clients_instead_of_refusing_them() {
    // What `systemctl restart` does with a `.socket` unit: the manager keeps the listening
    // socket, stops the service (SIGTERM: it drains and exits) and starts a new one on the
    // same socket. A client that comes in between waits in the socket's queue and is
    // answered by the new process. Here a server that never serves plays the manager.
    use socketserver::TcpServer;
    let manager = TcpServer::bind("127.0.0.1:0", echo_line).unwrap();
    let addr = manager.server_address().unwrap();
    let mut cmd = std::process::Command::new(example_path("echo"));
    cmd.args(["server", "--mode", "threading"]);
    let mut first = manager.hand_over(&cmd, LONG).unwrap();
    assert_eq!(round_trip(addr, b"one\n"), b"one\n");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(first.id() as libc::pid_t, libc::SIGTERM) };
    assert!(
        first.wait().unwrap().success(),
        "the first service's exit status"
    );

    // Nobody serves now: the connection is queued by the kernel, not refused.
    let mut c = TcpStream::connect(addr).expect("connect while no service runs");
    c.write_all(b"in between\n").unwrap();
    let mut second = manager.hand_over(&cmd, LONG).unwrap();
    c.set_read_timeout(Some(LONG)).unwrap();
    let mut reply = [0u8; 11];
    c.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"in between\n");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(second.id() as libc::pid_t, libc::SIGTERM) };
    assert!(
        second.wait().unwrap().success(),
        "the second service's exit status"
    );
}

/// Opens `n` connections to `addr` (queued by the kernel: nobody accepts yet).
fn queued_connections(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let c = TcpStream::connect(addr).unwrap();
            c.set_nonblocking(true).unwrap();
            c
        })
        .collect()
}

fn listener(addr: SocketAddr, reuse_port: bool) -> socket2::Socket {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_reuse_port(reuse_port).unwrap();
    s.bind(&addr.into()).unwrap();
    s.listen(128).unwrap();
    s
}

/// How many of `conns` the kernel has reset (a non-blocking read fails with
/// `ECONNRESET`; the others have nothing to read yet).
fn resets(conns: &[TcpStream]) -> usize {
    conns
        .iter()
        .filter(|c| {
            let mut b = [0u8; 1];
            let read = (&**c).read(&mut b);
            matches!(read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
        })
        .count()
}

#[test]
fn why_the_socket_is_passed_closing_a_reuseport_listener_resets_its_queue() {
    // SO_REUSEPORT overlap: two listening sockets, two accept queues. Closing the old one
    // resets what waits in its queue.
    let old = listener("127.0.0.1:0".parse().unwrap(), true);
    let addr = old.local_addr().unwrap().as_socket().unwrap();
    let new = listener(addr, true);
    let conns = queued_connections(addr, 64);
    drop(old);
    // Over loopback the resets arrive at once; allow a moment all the same.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut reset = resets(&conns);
    while reset == 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
        reset = resets(&conns);
    }
    assert!(reset > 0, "no connection reset: the kernel kept one queue?");
    drop(new);

    // One socket shared (what hand_over passes): closing one descriptor of it loses
    // nothing; every queued connection is accepted through the other.
    let old = listener("127.0.0.1:0".parse().unwrap(), false);
    let addr = old.local_addr().unwrap().as_socket().unwrap();
    let shared = old.try_clone().unwrap(); // dup(2), as the successor's fd 3 is
    let conns = queued_connections(addr, 64);
    drop(old);
    shared.set_nonblocking(true).unwrap();
    let accepted = std::iter::from_fn(|| shared.accept().ok()).count();
    assert_eq!(
        accepted, 64,
        "every queued connection accepted through the shared socket"
    );
    assert_eq!(resets(&conns), 0);
    eprintln!(
        "SO_REUSEPORT: closing the old listener reset {reset} of 64 queued connections; \
         shared socket: 0 of 64"
    );
}

//! The `echo` example, end to end as real processes: TCP and UDP in every mode, Ctrl-C
//! exits 0 with a summary, and the client fails cleanly when no server is there.

mod util;

use std::io::{Read, Write};

use util::*;

const MODES: [&str; 3] = ["sync", "threading", "forking"];

#[test]
fn tcp_echo_round_trips_in_every_mode() {
    for mode in MODES {
        let (mut server, addr) = spawn_example_server("echo", &["--mode", mode]);
        let out = run_example_client("echo", addr, &[], "hello\n你好\nthird line\n".as_bytes());
        assert_eq!(out.code, Some(0), "{mode}: {out:?}");
        assert_eq!(out.stdout, "hello\n你好\nthird line\n", "{mode}");

        // Many round trips on one raw connection, as `nc` would do.
        let mut c = connect(addr);
        let mut buf = [0u8; 5];
        for i in 0..50 {
            let msg = format!("{i:04}\n");
            c.write_all(msg.as_bytes()).unwrap();
            c.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, msg.as_bytes(), "{mode}");
        }
        drop(c);

        server.signal(libc::SIGINT);
        assert_eq!(
            server.wait_exit(),
            Some(0),
            "{mode}: exit status after SIGINT"
        );
        ChildProc::expect_line(&server.stderr, "stopped:");
    }
}

#[test]
fn udp_echo_round_trips_in_every_mode() {
    for mode in MODES {
        let (mut server, addr) = spawn_example_server("echo", &["--udp", "--mode", mode]);
        let out = run_example_client("echo", addr, &["--udp"], b"ping\npong\n");
        assert_eq!(out.code, Some(0), "{mode}: {out:?}");
        assert_eq!(out.stdout, "ping\npong\n", "{mode}");
        server.signal(libc::SIGTERM);
        assert_eq!(
            server.wait_exit(),
            Some(0),
            "{mode}: exit status after SIGTERM"
        );
    }
}

// Threading mode: an idle connection is closed at once by the drain too (issue 13.2),
// see `tests/drain.rs`, `sigint_with_an_idle_client_exits_at_once`.

/// Evented mode (echo's default): the drain closes a connection waiting for its next
/// message at once, like Go's `Server.Shutdown`, and the server exits promptly.
#[test]
fn evented_sigint_closes_an_idle_connection_at_once_and_exits_promptly() {
    let (mut server, addr) = spawn_example_server("echo", &[]);
    let mut c = connect(addr);
    c.write_all(b"before\n").unwrap();
    let mut buf = [0u8; 7];
    c.read_exact(&mut buf).unwrap();
    let t = std::time::Instant::now();
    server.signal(libc::SIGINT);
    assert_eq!(
        c.read(&mut buf).unwrap_or(0),
        0,
        "the idle connection is closed"
    );
    assert_eq!(server.wait_exit(), Some(0));
    assert!(
        t.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        t.elapsed()
    );
    let summary = ChildProc::expect_line(&server.stderr, "stopped:");
    assert!(summary.contains("1 served"), "{summary}");
}

/// Issue 17.1: in sync mode the handler runs on the main thread, which is where the kernel
/// delivers a process-wide SIGINT/SIGTERM; the read it interrupts must be retried, not end
/// the connection with `Interrupted system call`.
#[test]
fn sync_mode_sigint_or_sigterm_lets_the_in_flight_connection_finish() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let (mut server, addr) = spawn_example_server("echo", &["--mode", "sync"]);
        let mut c = connect(addr);
        let mut buf = [0u8; 4];
        c.write_all(b"one\n").unwrap();
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"one\n");
        server.signal(sig);
        ChildProc::expect_line(&server.stderr, "shutting down");
        c.write_all(b"two\n").unwrap();
        c.read_exact(&mut buf)
            .unwrap_or_else(|e| panic!("signal {sig}: no reply to `two`: {e}"));
        assert_eq!(&buf, b"two\n", "signal {sig}");
        drop(c);
        assert_eq!(server.wait_exit(), Some(0), "signal {sig}");
        let summary = ChildProc::expect_line(&server.stderr, "stopped:");
        assert!(
            summary.contains("1 served, 0 errors"),
            "signal {sig}: {summary}"
        );
    }
}

#[test]
fn client_without_a_server_fails_with_a_message() {
    assert_client_fails_cleanly("echo", free_tcp_addr(), &[], b"hello\n", "cannot connect");
}

#[test]
fn server_on_a_busy_port_fails_with_a_message() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut cmd = std::process::Command::new(example_path("echo"));
    cmd.args(["server", "--addr", &addr]);
    let mut server = ChildProc::spawn(cmd);
    assert_eq!(server.wait_exit(), Some(1));
    ChildProc::expect_line(&server.stderr, "cannot listen on");
}

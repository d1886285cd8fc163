//! The `upper` example, end to end as real processes: TCP and UDP in every mode (our
//! client, raw sockets, every byte value), Ctrl-C exits 0 with a summary, the tutorials'
//! Python client (`tests/python/upper_client.py`) interoperates, and the client fails
//! cleanly when no server is there.

mod util;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::Command;

use util::*;

const MODES: [&str; 3] = ["sync", "threading", "forking"];
/// Stream transports run in evented mode too (datagram ones do not).
const TCP_MODES: [&str; 4] = ["sync", "threading", "forking", "evented"];
const PYTHON_CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/upper_client.py");

/// Every byte value, and what the server must make of it: only `a`..=`z` change.
fn all_bytes() -> (Vec<u8>, Vec<u8>) {
    let sent: Vec<u8> = (0..=255u8).collect();
    let want = sent
        .iter()
        .map(|&b| if b.is_ascii_lowercase() { b - 32 } else { b })
        .collect();
    (sent, want)
}

/// Runs the Python client in `proto` mode against `addr`; python3 is required (a missing
/// interpreter fails the test, it is not skipped).
#[track_caller]
fn python_client(proto: &str, addr: SocketAddr) -> (Option<i32>, String) {
    let found = Command::new("python3").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "python3 is required for the interop tests"
    );
    let mut cmd = Command::new("python3");
    cmd.args([PYTHON_CLIENT, proto, &addr.port().to_string()]);
    let mut proc = ChildProc::spawn(cmd);
    let code = proc.wait_exit();
    let mut out: Vec<String> = proc.stdout.iter().collect();
    out.extend(proc.stderr.iter());
    (code, out.join("\n"))
}

#[test]
fn tcp_upper_round_trips_in_every_mode() {
    for mode in TCP_MODES {
        let (mut server, addr) = spawn_example_server("upper", &["--mode", mode]);
        let out = run_example_client(
            "upper",
            addr,
            &[],
            "hello\nwörld, 你好\nMiXeD 123 !?\n".as_bytes(),
        );
        assert_eq!(out.code, Some(0), "{mode}: {out:?}");
        assert_eq!(out.stdout, "HELLO\nWöRLD, 你好\nMIXED 123 !?\n", "{mode}");

        // Many round trips on one raw connection, as `nc` would do.
        let mut c = connect(addr);
        let mut buf = [0u8; 6];
        for i in 0..50 {
            let msg = format!("ab{i:03}\n");
            c.write_all(msg.as_bytes()).unwrap();
            c.read_exact(&mut buf).unwrap();
            assert_eq!(buf, format!("AB{i:03}\n").as_bytes(), "{mode}");
        }
        // Binary data: every byte but a..=z comes back unchanged.
        let (sent, want) = all_bytes();
        c.write_all(&sent).unwrap();
        let mut got = vec![0u8; want.len()];
        c.read_exact(&mut got).unwrap();
        assert_eq!(got, want, "{mode}");
        drop(c);

        server.signal(libc::SIGINT);
        assert_eq!(server.wait_exit(), Some(0), "{mode}: exit after SIGINT");
        ChildProc::expect_line(&server.stderr, "stopped:");
    }
}

#[test]
fn udp_upper_round_trips_in_every_mode() {
    for mode in MODES {
        let (mut server, addr) = spawn_example_server("upper", &["--udp", "--mode", mode]);
        let out = run_example_client("upper", addr, &["--udp"], "ping\n\nwörld\n".as_bytes());
        assert_eq!(out.code, Some(0), "{mode}: {out:?}");
        assert_eq!(out.stdout, "PING\n\nWöRLD\n", "{mode}");

        // One datagram in, one back, to the sender; an empty one gets an empty one.
        let sock = udp_client();
        let mut buf = [0u8; 1024];
        let (sent, want) = all_bytes();
        for (msg, reply) in [
            (&b"abc xyz"[..], &b"ABC XYZ"[..]),
            (b"", b""),
            (&sent, &want),
        ] {
            sock.send_to(msg, addr).unwrap();
            let (n, from) = sock.recv_from(&mut buf).unwrap();
            assert_eq!(from, addr, "{mode}");
            assert_eq!(&buf[..n], reply, "{mode}");
        }

        server.signal(libc::SIGINT);
        assert_eq!(server.wait_exit(), Some(0), "{mode}: exit after SIGINT");
        let summary = ChildProc::expect_line(&server.stderr, "stopped:");
        assert!(summary.contains("6 served"), "{mode}: {summary}");
    }
}

#[test]
fn the_servers_log_one_line_per_connection_and_datagram() {
    let (mut server, addr) = spawn_example_server("upper", &["--mode", "sync"]);
    let mut c = connect(addr);
    let local = c.local_addr().unwrap();
    c.write_all(b"abc").unwrap();
    c.read_exact(&mut [0u8; 3]).unwrap();
    drop(c);
    let line = ChildProc::expect_line(&server.stderr, &format!("upper: {local}:"));
    assert!(line.contains("upper-cased 3 bytes"), "{line}");
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(), Some(0), "exit after SIGTERM");

    let (mut server, addr) = spawn_example_server("upper", &["--udp", "--mode", "sync"]);
    let sock = udp_client();
    sock.send_to(b"abcd", addr).unwrap();
    sock.recv_from(&mut [0u8; 16]).unwrap();
    let local = sock.local_addr().unwrap();
    let line = ChildProc::expect_line(&server.stderr, &format!("upper: {local}:"));
    assert!(line.contains("4 bytes"), "{line}");
    server.signal(libc::SIGINT);
    assert_eq!(server.wait_exit(), Some(0));
}

#[test]
fn python_tutorial_client_talks_to_upper_in_every_mode() {
    for mode in TCP_MODES {
        for proto in ["tcp", "udp"] {
            if proto == "udp" && mode == "evented" {
                continue; // datagram servers have no evented mode
            }
            let udp: &[&str] = if proto == "udp" { &["--udp"] } else { &[] };
            let mut args = vec!["--mode", mode];
            args.extend(udp);
            let (mut server, addr) = spawn_example_server("upper", &args);
            let (code, out) = python_client(proto, addr);
            assert_eq!(code, Some(0), "{mode} {proto}: python client: {out}");
            assert!(out.contains("ok"), "{mode} {proto}: {out}");
            server.signal(libc::SIGINT);
            assert_eq!(server.wait_exit(), Some(0), "{mode} {proto}");
        }
    }
}

#[test]
fn client_without_a_server_fails_with_a_message() {
    assert_client_fails_cleanly("upper", free_tcp_addr(), &[], b"hello\n", "cannot connect");
    // UDP on loopback: the ICMP "port unreachable" arrives as ECONNREFUSED at once.
    let udp = udp_client().local_addr().unwrap();
    assert_client_fails_cleanly("upper", udp, &["--udp"], b"hello\n", "no reply from");
}

#[test]
fn a_client_whose_server_goes_away_says_so() {
    let (server, addr) = spawn_example_server("upper", &["--mode", "sync"]);
    // The server is killed while the client still has lines to send: the client must notice
    // and exit 1, not hang or panic.
    let mut cmd = Command::new(example_path("upper"));
    cmd.args(["client", "--addr", &addr.to_string()]);
    let mut client = ChildProc::spawn_with_stdin(cmd);
    let mut stdin = client.child.stdin.take().unwrap();
    stdin.write_all(b"first\n").unwrap();
    assert_eq!(ChildProc::expect_line(&client.stdout, "FIRST"), "FIRST");
    // SIGKILL: the kernel closes its end, so the next reply never comes.
    drop(server);
    stdin.write_all(b"again\n").unwrap();
    drop(stdin);
    assert_eq!(client.wait_exit(), Some(1));
    let err = ChildProc::expect_line(&client.stderr, "upper client:");
    assert!(!err.contains("panicked"), "{err}");
}

/// Issue 17.1: a SIGINT/SIGTERM that interrupts the sync server's read (the handler runs on
/// the main thread) must not cost the connection in flight.
#[test]
fn sync_mode_sigint_or_sigterm_closes_the_idle_connection_cleanly() {
    util::sync_mode_signal_closes_the_idle_connection_cleanly("upper", str::to_uppercase);
}

//! systemd socket activation with the real `systemd-socket-activate` (Debian's `systemd`,
//! installed by `.ci/run`): the examples serve on a passed TCP or UDP socket with no flag,
//! and say so; the library adopts passed Unix stream and datagram sockets; a passed socket
//! of the wrong type is refused with a message naming both; and the `LISTEN_*` variables
//! do not reach the commands a server runs.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};

use socketserver::{UnixDatagramServer, UnixStreamServer};
use util::*;

const SSA: &str = "systemd-socket-activate";

fn loopback_tcp() -> String {
    free_tcp_addr().to_string()
}

fn loopback_udp() -> String {
    free_udp_addr().to_string()
}

#[test]
fn echo_serves_a_tcp_socket_passed_by_systemd_socket_activate() {
    if !require_program(SSA) {
        return;
    }
    let (mut server, addr) =
        spawn_socket_activated(&[], loopback_tcp, &[], &example_path("echo"), &["server"]);
    let addr: SocketAddr = addr.parse().unwrap();
    // The first connection makes systemd-socket-activate exec the example, which finds the
    // connection waiting in the passed socket's queue.
    let out = run_example_client("echo", addr, &[], b"hello\nagain\n");
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout, "hello\nagain\n");
    let used = ChildProc::expect_line(&server.stderr, "using passed socket 0");
    assert!(
        used.contains("a listening TCP socket") && used.contains(&addr.to_string()),
        "{used}"
    );
    ChildProc::expect_line(&server.stderr, &format!("listening on {addr}"));
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(), Some(0), "exit status after SIGTERM");
    let summary = ChildProc::expect_line(&server.stderr, "stopped:");
    assert!(summary.contains("1 served"), "{summary}");
}

#[test]
fn timeserver_serves_a_udp_socket_passed_with_datagram() {
    if !require_program(SSA) {
        return;
    }
    let (mut server, addr) = spawn_socket_activated(
        &["--datagram"],
        loopback_udp,
        &[],
        &example_path("timeserver"),
        &["server"],
    );
    let addr: SocketAddr = addr.parse().unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(LONG)).unwrap();
    // The datagram wakes systemd-socket-activate and waits in the socket for the example.
    sock.send_to(b"%Y", addr).unwrap();
    let mut buf = [0u8; 512];
    let (n, from) = sock.recv_from(&mut buf).unwrap();
    assert_eq!(from, addr);
    let year = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(
        year.len() == 4 && year.bytes().all(|b| b.is_ascii_digit()),
        "{year:?}"
    );
    let used = ChildProc::expect_line(&server.stderr, "using passed socket 0");
    assert!(
        used.contains("a UDP socket (SOCK_DGRAM, AF_INET)"),
        "{used}"
    );
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(), Some(0), "exit status after SIGTERM");
}

#[test]
fn a_tcp_example_given_a_udp_socket_exits_naming_both() {
    if !require_program(SSA) {
        return;
    }
    let (mut server, addr) = spawn_socket_activated(
        &["--datagram"],
        loopback_udp,
        &[],
        &example_path("echo"),
        &["server"],
    );
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(b"wake up", addr.as_str()).unwrap();
    assert_eq!(server.wait_exit(), Some(1), "exit status of a mismatch");
    let err = ChildProc::expect_line(&server.stderr, "cannot adopt the passed socket");
    assert!(
        err.contains("a UDP socket (SOCK_DGRAM, AF_INET)")
            && err.contains("does not fit this TCP server")
            && err.contains("needs a listening TCP socket")
            && err.contains("ListenStream="),
        "{err}"
    );
}

#[test]
fn the_listen_variables_do_not_reach_the_commands_a_server_runs() {
    if !require_program(SSA) {
        return;
    }
    let (_server, addr) = spawn_socket_activated(
        &[],
        loopback_tcp,
        &[],
        &example_path("remote_cmd"),
        &["server"],
    );
    let out = run_example_client("remote_cmd", addr.parse().unwrap(), &[], b"env; echo END\n");
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("END"), "{out:?}");
    assert!(!out.stdout.contains("LISTEN_"), "{}", out.stdout);
}

/// A test of this binary run as a child under systemd-socket-activate (`CHILD_ENV` set).
fn spawn_self_activated(test: &str, opts: &[&str], path: &std::path::Path) -> ChildProc {
    let exe = std::env::current_exe().unwrap();
    let p = path.display().to_string();
    let (proc, _) = spawn_socket_activated(
        opts,
        || p.clone(),
        &[(CHILD_ENV, "1")],
        &exe,
        &[test, "--exact", "--nocapture", "--test-threads=1"],
    );
    proc
}

#[test]
fn a_unix_stream_server_adopts_a_socket_passed_by_path() {
    if is_child() {
        let server = UnixStreamServer::builder()
            .from_systemd(echo_line)
            .expect("adopt the passed Unix stream socket");
        println!("ADDRESS {}", server.server_address().unwrap());
        server.handle_request().unwrap();
        return;
    }
    if !require_program(SSA) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("echo.sock");
    let child = spawn_self_activated(
        "a_unix_stream_server_adopts_a_socket_passed_by_path",
        &[],
        &path,
    );
    let mut c = std::os::unix::net::UnixStream::connect(&path).unwrap();
    c.set_read_timeout(Some(LONG)).unwrap();
    c.write_all(b"over unix\n").unwrap();
    let mut reply = String::new();
    c.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "over unix\n");
    let line = ChildProc::expect_line(&child.stdout, "ADDRESS ");
    assert!(line.contains("echo.sock"), "{line}");
}

#[test]
fn a_unix_datagram_server_adopts_a_socket_passed_by_path() {
    if is_child() {
        let server = UnixDatagramServer::builder()
            .from_systemd(echo_datagram)
            .expect("adopt the passed Unix datagram socket");
        server.handle_request().unwrap();
        return;
    }
    if !require_program(SSA) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("echo.dgram");
    let child = spawn_self_activated(
        "a_unix_datagram_server_adopts_a_socket_passed_by_path",
        &["--datagram"],
        &path,
    );
    let client_path = dir.path().join("client.dgram");
    let c = std::os::unix::net::UnixDatagram::bind(&client_path).unwrap();
    c.set_read_timeout(Some(LONG)).unwrap();
    c.send_to(b"datagram over unix", &path).unwrap();
    let mut buf = [0u8; 64];
    let n = c.recv(&mut buf).unwrap_or_else(|e| {
        let said: Vec<String> = child
            .stderr
            .try_iter()
            .chain(child.stdout.try_iter())
            .collect();
        panic!("no reply ({e}); the child said {said:#?}")
    });
    assert_eq!(&buf[..n], b"datagram over unix");
}

#[test]
fn a_unix_stream_server_refuses_a_passed_tcp_socket() {
    if is_child() {
        let err = UnixStreamServer::builder()
            .from_systemd(echo_line)
            .expect_err("a TCP socket must not fit a Unix stream server");
        println!("ERROR {err}");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        return;
    }
    if !require_program(SSA) {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let (child, addr) = spawn_socket_activated(
        &[],
        loopback_tcp,
        &[(CHILD_ENV, "1")],
        &exe,
        &[
            "a_unix_stream_server_refuses_a_passed_tcp_socket",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ],
    );
    let _wake = TcpStream::connect(addr.as_str()).unwrap();
    let line = ChildProc::expect_line(&child.stdout, "ERROR ");
    assert!(
        line.contains("a listening TCP socket (SOCK_STREAM, AF_INET)")
            && line.contains("does not fit this Unix stream server")
            && line.contains("ListenStream=/path"),
        "{line}"
    );
}

#[test]
fn the_readme_units_pass_systemd_analyze_verify() {
    if !require_program("systemd-analyze") {
        return;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let echo = example_path("echo");
    let mut units = Vec::new();
    for unit in ["echo.socket", "echo.service"] {
        let text = std::fs::read_to_string(root.join("examples/systemd").join(unit)).unwrap();
        assert!(
            readme.contains(&text),
            "README.md does not show {unit} as it is"
        );
        // The binary where it is built, so that systemd-analyze finds it executable.
        let text = text.replace("/usr/local/bin/echo", &echo.display().to_string());
        let path = dir.path().join(unit);
        std::fs::write(&path, text).unwrap();
        units.push(path);
    }
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&units)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}

#[test]
fn every_other_example_uses_a_passed_socket_with_no_flag() {
    if !require_program(SSA) {
        return;
    }
    let uploads = tempfile::tempdir().unwrap();
    let dir = uploads.path().display().to_string();
    let cases: [(&str, Vec<&str>); 4] = [
        ("upper", vec!["server"]),
        ("chat", vec!["server"]),
        ("upload", vec!["server", "--dir", &dir]),
        ("remote_cmd", vec!["server"]),
    ];
    for (name, args) in cases {
        let (mut server, addr) =
            spawn_socket_activated(&[], loopback_tcp, &[], &example_path(name), &args);
        // The first connection makes systemd-socket-activate start the example.
        let wake = TcpStream::connect(addr.as_str()).unwrap();
        let used = ChildProc::expect_line(&server.stderr, "using passed socket 0");
        assert!(used.contains(&addr), "{name}: {used}");
        ChildProc::expect_line(&server.stderr, &format!("listening on {addr}"));
        drop(wake);
        server.signal(libc::SIGTERM);
        assert_eq!(
            server.wait_exit(),
            Some(0),
            "{name}: exit status after SIGTERM"
        );
    }
}

#[test]
fn examples_report_ready_once_serving_and_stopping_when_the_drain_starts() {
    // Type=notify: the manager's NOTIFY_SOCKET, played by the test.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    notify.set_read_timeout(Some(LONG)).unwrap();
    let (mut server, addr) =
        spawn_example_server_with_env("echo", &[], &[("NOTIFY_SOCKET", path.to_str().unwrap())]);
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1\n");
    // Ready means serving.
    assert_eq!(round_trip(addr, b"ready?\n"), b"ready?\n");
    server.signal(libc::SIGTERM);
    let n = notify.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STOPPING=1\n");
    assert_eq!(server.wait_exit(), Some(0));
}

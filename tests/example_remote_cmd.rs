//! The `remote_cmd` example, end to end as real processes: the JSON-header reply byte for
//! byte in every mode, stdout then stderr, many commands per connection, the timeout (the
//! whole process group is killed), the output cap, loopback-only binding, Ctrl-C, and the
//! tutorials' Python client.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use socketserver::framing::{Framing, TransferHeader, md5_hex};
use util::*;

const MODES: [&str; 3] = ["sync", "threading", "forking"];
const PY_CLIENT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/python/remote_cmd_client.py"
);

/// Sends `command` raw, as the tutorials' client does; returns the raw header and the body.
#[track_caller]
fn run_command(conn: &mut TcpStream, command: &str) -> (Vec<u8>, Vec<u8>) {
    conn.write_all(command.as_bytes()).unwrap();
    let framing = Framing::python();
    let header = framing.read_frame(conn).unwrap().expect("a reply header");
    let parsed: TransferHeader = serde_json::from_slice(&header).unwrap();
    let mut body = vec![0u8; parsed.total_size as usize];
    conn.read_exact(&mut body).unwrap();
    assert_eq!(parsed.md5, md5_hex(&body), "{command}: md5 of the body");
    (header, body)
}

/// Whether `pid` exists and is not a zombie waiting for its (re)parent to reap it.
fn is_running(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().next());
    matches!(state, Some(s) if s != "Z" && s != "X")
}

#[test]
fn commands_run_and_reply_with_the_json_header_in_every_mode() {
    for mode in MODES {
        let (server, addr) = spawn_example_server("remote_cmd", &["--mode", mode]);
        let mut c = connect(addr);
        let (header, body) = run_command(&mut c, "echo hi");
        assert_eq!(body, b"hi\n", "{mode}");
        let want = format!(
            r#"{{"filename": "echo hi", "total_size": 3, "md5": "{}"}}"#,
            md5_hex(b"hi\n")
        );
        assert_eq!(String::from_utf8(header).unwrap(), want, "{mode}");
        let line = ChildProc::expect_line(&server.stderr, "\"echo hi\": exit status: 0, 3 bytes");
        assert!(!line.is_empty());

        // stderr follows stdout, whatever order they were written in; same connection.
        let (_, body) = run_command(&mut c, "echo err >&2; echo out; exit 3");
        assert_eq!(body, b"out\nerr\n", "{mode}");
        ChildProc::expect_line(&server.stderr, "exit status: 3, 8 bytes");
        let (_, body) = run_command(&mut c, "printf ''");
        assert!(body.is_empty(), "{mode}");
        drop(c);

        // Our client: one command per line, outputs in order, empty lines skipped.
        let input = "echo first\n\nprintf 'second\\n'; echo third >&2\n";
        let out = run_example_client("remote_cmd", addr, &[], input.as_bytes());
        assert_eq!(out.code, Some(0), "{mode}: {out:?}");
        assert_eq!(out.stdout, "first\nsecond\nthird\n", "{mode}");

        let summary = server.stop_with_sigint();
        assert!(summary.contains("2 served, 0 errors"), "{mode}: {summary}");
    }
}

#[test]
fn a_command_over_the_timeout_is_killed_with_its_process_group() {
    let (server, addr) = spawn_example_server("remote_cmd", &["--timeout", "1"]);
    let mut c = connect(addr);
    let started = Instant::now();
    // A background child in the group, whose pid is printed first.
    let (_, body) = run_command(&mut c, "sleep 100 & echo $!; sleep 100");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let body = String::from_utf8(body).unwrap();
    assert!(
        body.contains("[remote_cmd: timed out after 1s, process group killed]"),
        "{body}"
    );
    ChildProc::expect_line(&server.stderr, "timed out after 1s");
    let pid: u32 = body.lines().next().unwrap().trim().parse().unwrap();
    wait_until("the background sleep to die", || !is_running(pid));
    // The connection is still usable.
    let (_, body) = run_command(&mut c, "echo alive");
    assert_eq!(body, b"alive\n");
    drop(c);
    server.stop_with_sigint();
}

#[test]
fn output_over_the_cap_is_cut_and_the_command_stopped() {
    let args = ["--max-output", "1000", "--timeout", "30"];
    let (server, addr) = spawn_example_server("remote_cmd", &args);
    let mut c = connect(addr);
    // Exactly the cap: complete, no note.
    let (_, body) = run_command(&mut c, "head -c 1000 /dev/zero");
    assert_eq!(body, vec![0u8; 1000]);
    // `yes` never ends: the cap, not the 30 s timeout, stops it.
    let started = Instant::now();
    let (_, body) = run_command(&mut c, "yes");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(&body[..1000], "y\n".repeat(500).as_bytes());
    let note = String::from_utf8_lossy(&body[1000..]);
    assert!(
        note.contains("[remote_cmd: output over 1000 bytes, cut"),
        "{note}"
    );
    // stdout and stderr together count.
    let (_, body) = run_command(&mut c, "head -c 600 /dev/zero; head -c 600 /dev/zero >&2");
    assert_eq!(&body[..1000], &[0u8; 1000][..]);
    assert!(String::from_utf8_lossy(&body[1000..]).contains("output over 1000 bytes"));
    ChildProc::expect_line(&server.stderr, "output over 1000 bytes");
    drop(c);
    server.stop_with_sigint();
}

#[test]
fn a_non_loopback_address_is_refused_without_allow_remote() {
    for addr in ["0.0.0.0:0", "[::]:0"] {
        let mut cmd = Command::new(example_path("remote_cmd"));
        cmd.args(["server", "--addr", addr]);
        let mut server = ChildProc::spawn(cmd);
        assert_eq!(server.wait_exit(), Some(1), "{addr}");
        ChildProc::expect_line(&server.stderr, "refusing to listen on");
    }
    // With --allow-remote the check is lifted and a warning logged. (192.0.2.1 is a
    // documentation address, not ours: the bind then fails, so nothing is ever exposed.)
    let mut cmd = Command::new(example_path("remote_cmd"));
    cmd.args(["server", "--allow-remote", "--addr", "192.0.2.1:0"]);
    let mut server = ChildProc::spawn(cmd);
    assert_eq!(server.wait_exit(), Some(1));
    ChildProc::expect_line(&server.stderr, "ANYONE who can reach 192.0.2.1:0");
    ChildProc::expect_line(&server.stderr, "cannot listen on");
}

#[test]
fn the_tutorials_python_client_works_unchanged() {
    for mode in MODES {
        let (server, addr): (ChildProc, SocketAddr) =
            spawn_example_server("remote_cmd", &["--mode", mode]);
        let mut cmd = Command::new("python3");
        cmd.args([PY_CLIENT, &addr.port().to_string()]);
        let mut py = ChildProc::spawn(cmd);
        assert_eq!(
            py.wait_exit(),
            Some(0),
            "{mode}: python3 is required for the interop tests"
        );
        ChildProc::expect_line(&py.stdout, "ok");
        server.stop_with_sigint();
    }
}

#[test]
fn client_without_a_server_fails_with_a_message() {
    assert_client_fails_cleanly(
        "remote_cmd",
        free_tcp_addr(),
        &[],
        b"echo hi\n",
        "cannot connect",
    );
}

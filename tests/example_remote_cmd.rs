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

const MODES: [&str; 4] = ["sync", "threading", "forking", "evented"];
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

/// Whether any live (non-zombie) process is in process group `pgid`.
fn group_alive(pgid: u32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .any(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            // After the ")" of the command name: state, ppid, pgrp.
            let f: Vec<&str> = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            f.len() > 2 && f[0] != "Z" && f[0] != "X" && f[2] == pgid.to_string()
        })
}

/// Kills a process group on drop, so that a failing test leaves nothing running.
struct KillGroup(u32);

impl Drop for KillGroup {
    fn drop(&mut self) {
        // SAFETY: killpg(2); the group is one the test made the server start.
        unsafe { libc::killpg(self.0 as libc::pid_t, libc::SIGKILL) };
    }
}

/// Issue 17.2: a command still running when the server goes is killed with its group: the
/// threading and evented servers at the end of `main`, the forking server's child on its
/// SIGTERM. Meanwhile the running command stalls no other client.
#[test]
fn a_running_command_stalls_no_one_and_dies_with_the_server_in_every_concurrent_mode() {
    for mode in ["threading", "forking", "evented"] {
        let tmp = tempfile::tempdir().unwrap();
        let pidfile = tmp.path().join("pgid");
        let (mut server, addr) =
            spawn_example_server("remote_cmd", &["--mode", mode, "--timeout", "60"]);
        let mut c = connect(addr);
        let cmd = format!("echo $$ > {}; sleep 47", pidfile.display());
        c.write_all(cmd.as_bytes()).unwrap();
        wait_until("the command to start", || {
            std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n'))
        });
        // `sh -c` is the group leader: its pid is the group id.
        let pgid: u32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let _guard = KillGroup(pgid);
        assert!(group_alive(pgid), "{mode}");
        let mut other = connect(addr);
        let (_, body) = run_command(&mut other, "echo other");
        assert_eq!(body, b"other\n", "{mode}");
        assert!(
            group_alive(pgid),
            "{mode}: still running while the other was served"
        );
        drop(other);
        server.signal(libc::SIGINT);
        ChildProc::expect_line(&server.stderr, "shutting down");
        server.signal(libc::SIGINT); // force: no 10 s grace period
        assert_eq!(server.wait_exit(), Some(0), "{mode}");
        wait_until("the command's process group to be killed", || {
            !group_alive(pgid)
        });
    }
}

/// Issue 17.2: `cmd &` with its output elsewhere returns at once; the job it left behind
/// is killed with the command's group when the command ends, so --timeout bounds it.
#[test]
fn a_job_left_in_the_background_is_killed_when_its_command_ends() {
    for mode in MODES {
        let (server, addr) = spawn_example_server("remote_cmd", &["--mode", mode]);
        let mut c = connect(addr);
        let started = Instant::now();
        let (_, body) = run_command(&mut c, "sleep 95 >/dev/null 2>&1 & echo $!");
        assert!(started.elapsed() < Duration::from_secs(10), "{mode}");
        let pid: u32 = String::from_utf8(body).unwrap().trim().parse().unwrap();
        // SAFETY: kill(2) on the job, should the test fail.
        let _guard = scopeguard(move || unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        });
        wait_until("the background job to be killed", || !is_running(pid));
        drop(c);
        server.stop_with_sigint();
    }
}

/// Runs `f` on drop.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

/// Issue 17.6: options out of range are refused when parsed (exit 2, clap's usage error),
/// not wrapped (`--max-output` 2^64-1 + 1 = 0) or left to panic later (`--timeout 1e19`).
#[test]
fn out_of_range_options_are_refused_when_parsed() {
    for (args, name) in [
        (
            &["--max-output", "18446744073709551615"][..],
            "--max-output",
        ),
        (&["--max-output", "1073741825"], "--max-output"),
        (&["--max-output=-1"], "--max-output"),
        (&["--timeout", "1e19"], "--timeout"),
        (&["--timeout", "86401"], "--timeout"),
        (&["--timeout", "0"], "--timeout"),
        (&["--timeout=-1"], "--timeout"),
        (&["--timeout", "nan"], "--timeout"),
        (&["--timeout", "inf"], "--timeout"),
        (&["--timeout", "soon"], "--timeout"),
    ] {
        let mut cmd = Command::new(example_path("remote_cmd"));
        cmd.args(["server", "--addr", "127.0.0.1:0"]).args(args);
        let mut server = ChildProc::spawn(cmd);
        assert_eq!(server.wait_exit(), Some(2), "{args:?}");
        let why = ChildProc::expect_line(&server.stderr, "error:");
        assert!(why.contains(name), "{args:?}: {why}");
    }
}

/// Issue 17.6: the largest values accepted work (no overflow in `max + 1` or `now + timeout`).
#[test]
fn the_largest_accepted_limits_work() {
    let args = ["--max-output", "1073741824", "--timeout", "86400"];
    let (server, addr) = spawn_example_server("remote_cmd", &args);
    let mut c = connect(addr);
    let (_, body) = run_command(&mut c, "echo hi");
    assert_eq!(body, b"hi\n");
    drop(c);
    server.stop_with_sigint();
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

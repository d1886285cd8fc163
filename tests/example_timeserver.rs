//! The `timeserver` example, end to end as real processes: formats and the empty request in
//! every mode, bad formats get an `error:` reply and the server carries on, Ctrl-C exits 0,
//! the tutorials' Python client (`tests/python/time_client.py`) agrees with Python's own
//! `time.strftime`, and the client gives up cleanly when no reply comes.

mod util;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;

use util::*;

const MODES: [&str; 3] = ["sync", "threading", "forking"];
const PYTHON_CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/time_client.py");

/// This machine's local year, as the server (same environment) sees it.
fn local_year() -> i32 {
    // SAFETY: an all-zero `tm` is valid; localtime_r fills it.
    unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        assert!(!libc::localtime_r(&now, &mut tm).is_null());
        tm.tm_year + 1900
    }
}

/// `YYYY-MM-DD HH:MM:SS`, the shape of `%F %X` in the C locale.
fn is_date_time(s: &str) -> bool {
    let shape = "dddd-dd-dd dd:dd:dd";
    s.len() == shape.len()
        && s.bytes().zip(shape.bytes()).all(|(c, p)| match p {
            b'd' => c.is_ascii_digit(),
            p => c == p,
        })
}

/// Sends one datagram to the server, returns the reply (which must come from the server).
#[track_caller]
fn ask(sock: &UdpSocket, server: SocketAddr, format: &[u8]) -> String {
    sock.send_to(format, server).unwrap();
    let mut buf = [0u8; 2048];
    let (n, from) = sock.recv_from(&mut buf).unwrap();
    assert_eq!(from, server);
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

#[test]
fn formats_and_the_empty_request_in_every_mode() {
    for mode in MODES {
        let (mut server, addr) = spawn_example_server("timeserver", &["--mode", mode]);
        let before = local_year();
        let out = run_example_client(
            "timeserver",
            addr,
            &[],
            "%Y\n\n%F %X\n100%% %%Y 年\n".as_bytes(),
        );
        let after = local_year();
        assert_eq!(out.code, Some(0), "{mode}: {out:?}");
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines.len(), 4, "{mode}: {out:?}");
        let year: i32 = lines[0].parse().unwrap();
        assert!((before..=after).contains(&year), "{mode}: {lines:?}");
        assert!(
            is_date_time(lines[1]),
            "{mode}: empty line -> {:?}",
            lines[1]
        );
        assert!(is_date_time(lines[2]), "{mode}: %F %X -> {:?}", lines[2]);
        assert_eq!(lines[3], "100% %Y 年", "{mode}");

        server.signal(libc::SIGINT);
        assert_eq!(server.wait_exit(), Some(0), "{mode}: exit after SIGINT");
        let summary = ChildProc::expect_line(&server.stderr, "stopped:");
        assert!(summary.contains("4 served"), "{mode}: {summary}");
    }
}

#[test]
fn bad_formats_get_an_error_reply_and_the_server_carries_on() {
    for mode in MODES {
        let (mut server, addr) = spawn_example_server("timeserver", &["--mode", mode]);
        let sock = udp_client();
        let cases: [(&[u8], &str); 7] = [
            (
                &[b'x'; 257],
                "error: the format is 257 bytes long, at most 256",
            ),
            (
                b"%1025Y",
                "error: the time in this format is empty or longer than 1024 bytes",
            ),
            (
                b"%99999Y",
                "error: the time in this format is empty or longer than 1024 bytes",
            ),
            (b"\xff%Y", "error: the format is not valid UTF-8"),
            (b"%Y\0%m", "error: the format contains a NUL byte"),
            // The limits themselves are allowed.
            (&[b'x'; 256], &"x".repeat(256)),
            (b"%1024Y", "000000"),
        ];
        for (format, want) in cases {
            let got = ask(&sock, addr, format);
            assert!(got.starts_with(want), "{mode}: {format:?} -> {got:?}");
        }
        assert_eq!(ask(&sock, addr, b"%1024Y").len(), 1024, "{mode}");
        // Still serving, still correct.
        assert!(is_date_time(&ask(&sock, addr, b"")), "{mode}");

        server.signal(libc::SIGINT);
        assert_eq!(server.wait_exit(), Some(0), "{mode}: exit after SIGINT");
        let summary = ChildProc::expect_line(&server.stderr, "stopped:");
        assert!(summary.contains("9 served"), "{mode}: {summary}");
        assert!(summary.contains(" 0 panics"), "{mode}: {summary}");
    }
}

#[test]
fn the_server_logs_each_request_and_each_refusal() {
    let (mut server, addr) = spawn_example_server("timeserver", &["--mode", "sync"]);
    let sock = udp_client();
    let local = sock.local_addr().unwrap();
    ask(&sock, addr, b"%Y");
    let line = ChildProc::expect_line(&server.stderr, &format!("timeserver: {local}:"));
    assert!(line.contains("4 bytes"), "{line}");
    ask(&sock, addr, b"\xff");
    let line = ChildProc::expect_line(&server.stderr, &format!("timeserver: {local}:"));
    assert!(
        line.contains("refused: the format is not valid UTF-8"),
        "{line}"
    );
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(), Some(0), "exit after SIGTERM");
}

/// A time zone the machine is unlikely to be in, as a POSIX `TZ` rule (no zone files
/// needed): a server that used UTC, or the wrong offset, would disagree with Python.
const TZ: &str = "TST-5:30";

/// Like [`spawn_example_server`], with `TZ` set for the server.
#[track_caller]
fn spawn_server_in_tz(mode: &str) -> (ChildProc, SocketAddr) {
    spawn_example_server_with_env("timeserver", &["--mode", mode], &[("TZ", TZ)])
}

#[test]
fn python_tutorial_client_agrees_with_python_strftime_in_every_mode() {
    let found = Command::new("python3").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "python3 is required for the interop tests"
    );
    for mode in MODES {
        let (mut server, addr) = spawn_server_in_tz(mode);
        let mut cmd = Command::new("python3");
        cmd.args([PYTHON_CLIENT, &addr.port().to_string()])
            .env("TZ", TZ);
        let mut python = ChildProc::spawn(cmd);
        let code = python.wait_exit();
        let mut out: Vec<String> = python.stdout.iter().collect();
        out.extend(python.stderr.iter());
        assert_eq!(code, Some(0), "{mode}: python client: {out:?}");
        assert_eq!(out, ["ok"], "{mode}");
        server.signal(libc::SIGINT);
        assert_eq!(server.wait_exit(), Some(0), "{mode}");
    }
}

#[test]
fn client_gives_up_after_5_s_without_a_reply() {
    // A socket that receives but never answers.
    let silent = udp_client();
    let addr = silent.local_addr().unwrap();
    let out = run_example_client("timeserver", addr, &[], b"%Y\n");
    let mut buf = [0u8; 64];
    let (n, _) = silent.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"%Y", "what the client sent");
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("no reply from"), "{out:?}");
    assert!(out.stderr.contains("within 5 s"), "{out:?}");
    assert!(!out.stderr.contains("panicked"), "{out:?}");
}

#[test]
fn client_without_a_server_fails_with_a_message() {
    // A port that was free a moment ago; on loopback the ICMP "port unreachable" comes back
    // as ECONNREFUSED at once.
    let addr = udp_client().local_addr().unwrap();
    assert_client_fails_cleanly("timeserver", addr, &[], b"\n", "no reply from");
}

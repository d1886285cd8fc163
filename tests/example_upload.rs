//! The `upload` example, end to end as real processes: messages and files in every mode,
//! a 200 MiB upload while another client talks, hostile names, over-limit files, bad frames
//! and a client dying mid-upload (nothing is ever left on disk), no silent overwrite,
//! Ctrl-C, and the tutorials' Python client.

mod util;

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::path::Path;
use std::process::Command;

use socketserver::framing::{Framing, UPLOAD_CLOSE, UploadHeader, to_python_json};
use util::*;

const MODES: [&str; 4] = ["sync", "threading", "forking", "evented"];
const MIB: usize = 1024 * 1024;
const PY_CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/upload_client.py");

fn upload_server(dir: &Path, args: &[&str]) -> (ChildProc, SocketAddr) {
    let dir = dir.to_str().unwrap();
    spawn_example_server("upload", &[&["--dir", dir], args].concat())
}

/// Every entry of `dir`, hidden ones (temporary `.part` files) included, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut w = Vec::new();
    Framing::python().write_frame(&mut w, payload).unwrap();
    w
}

fn file_header(name: &str) -> Vec<u8> {
    let h = UploadHeader::File {
        file_name: name.into(),
    };
    frame(&to_python_json(&h).unwrap())
}

fn message(text: &str) -> Vec<u8> {
    [frame(br#"{"msg_type": "msg"}"#), frame(text.as_bytes())].concat()
}

#[test]
fn messages_and_files_round_trip_in_every_mode() {
    let src = tempfile::tempdir().unwrap();
    let small = src.path().join("hello.txt");
    fs::write(&small, "hello, file\n").unwrap();
    let big = src.path().join("big.bin");
    let big_bytes: Vec<u8> = (0..3 * MIB).map(|i| (i % 251) as u8).collect();
    fs::write(&big, &big_bytes).unwrap();
    for mode in MODES {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("uploads"); // missing: the server creates it
        let (server, addr) = upload_server(&dir, &["--mode", mode]);
        let input = format!(
            "msg|hello\nfile|{}\nmsg|你好 \"quoted\"\nfile|{}\nbogus line\nq\nmsg|after q\n",
            small.display(),
            big.display()
        );
        let out = run_example_client("upload", addr, &[], input.as_bytes());
        assert_eq!(out.code, Some(0), "{mode}: {out:?}");
        assert!(
            out.stdout.contains("sent file \"big.bin\""),
            "{mode}: {out:?}"
        );
        assert!(out.stdout.ends_with("done\n"), "{mode}: {out:?}");
        assert!(out.stderr.contains("big.bin: 50%"), "{mode}: {out:?}");
        assert!(out.stderr.contains("big.bin: 100%"), "{mode}: {out:?}");
        assert!(
            out.stderr.contains("ignoring \"bogus line\""),
            "{mode}: {out:?}"
        );
        for needle in [
            "message: \"hello\"",
            "stored \"hello.txt\" (12 bytes)",
            "message: \"你好 \\\"quoted\\\"\"",
            "stored \"big.bin\" (3145728 bytes)",
            "done: 2 message(s), 2 file(s)",
        ] {
            ChildProc::expect_line(&server.stderr, needle);
        }
        assert_eq!(entries(&dir), ["big.bin", "hello.txt"], "{mode}");
        assert_eq!(fs::read(dir.join("hello.txt")).unwrap(), b"hello, file\n");
        assert!(
            fs::read(dir.join("big.bin")).unwrap() == big_bytes,
            "{mode}"
        );

        // The session may also end by just closing the socket, without `close`.
        let mut c = connect(addr);
        c.write_all(&message("no close frame")).unwrap();
        drop(c);
        ChildProc::expect_line(&server.stderr, "message: \"no close frame\"");
        ChildProc::expect_line(&server.stderr, "done: 1 message(s), 0 file(s)");

        let summary = server.stop_with_sigint();
        assert!(summary.contains("2 served, 0 errors"), "{mode}: {summary}");
    }
}

/// A 200 MiB body sent in 1 MiB chunks (each one tagged with its index, so a misplaced
/// chunk shows), half of it before another client's message, half after.
///
/// The body is streamed to disk, never held whole: the server's peak RSS (`VmHWM`) stays
/// far below the file's size.
#[test]
fn a_200_mib_upload_arrives_intact_while_another_client_sends_messages() {
    for mode in ["threading", "evented"] {
        upload_200_mib_beside_messages(mode);
    }
}

fn upload_200_mib_beside_messages(mode: &str) {
    const CHUNKS: usize = 200;
    let base: Vec<u8> = (0..MIB).map(|i| (i * 7 % 253) as u8).collect();
    let chunk = |i: usize| {
        let mut c = base.clone();
        c[..8].copy_from_slice(&(i as u64).to_le_bytes());
        c
    };
    let tmp = tempfile::tempdir().unwrap();
    let (server, addr) = upload_server(tmp.path(), &["--mode", mode]);
    let mut up = connect(addr);
    up.write_all(&file_header("big.bin")).unwrap();
    up.write_all(&((CHUNKS * MIB) as i32).to_le_bytes())
        .unwrap();
    for i in 0..CHUNKS / 2 {
        up.write_all(&chunk(i)).unwrap();
    }
    // The upload is half way: another client's messages are served and logged meanwhile.
    let out = run_example_client("upload", addr, &[], b"msg|during the upload\nq\n");
    assert_eq!(out.code, Some(0), "{out:?}");
    ChildProc::expect_line(&server.stderr, "message: \"during the upload\"");
    ChildProc::expect_line(&server.stderr, "done: 1 message(s), 0 file(s)");
    for i in CHUNKS / 2..CHUNKS {
        up.write_all(&chunk(i)).unwrap();
    }
    up.write_all(&frame(UPLOAD_CLOSE)).unwrap();
    up.shutdown(Shutdown::Write).unwrap();
    assert_eq!(
        up.read(&mut [0u8; 1]).unwrap(),
        0,
        "the server closes after `close`"
    );
    ChildProc::expect_line(&server.stderr, "stored \"big.bin\" (209715200 bytes)");
    let peak = peak_rss_kib(server.child.id());
    assert!(
        peak < 64 * 1024,
        "{mode}: peak RSS {peak} KiB for a 200 MiB upload"
    );

    assert_eq!(entries(tmp.path()), ["big.bin"]);
    let mut stored = fs::File::open(tmp.path().join("big.bin")).unwrap();
    let mut got = vec![0u8; MIB];
    for i in 0..CHUNKS {
        stored.read_exact(&mut got).unwrap();
        assert!(got == chunk(i), "{mode}: chunk {i} differs");
    }
    assert_eq!(stored.read(&mut got).unwrap(), 0, "stored file is too long");
    server.stop_with_sigint();
}

/// `VmHWM` of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn hostile_names_are_refused_and_nothing_is_written_in_every_mode() {
    let names = [
        "../x",
        "a/b",
        "/etc/passwd",
        "a\0b",
        "",
        "..",
        "x\\y",
        "C:evil",
    ];
    for mode in MODES {
        let tmp = tempfile::tempdir().unwrap();
        let (server, addr) = upload_server(tmp.path(), &["--mode", mode]);
        for name in names {
            let reply = round_trip(addr, &[file_header(name), frame(b"evil")].concat());
            assert!(
                reply.is_empty(),
                "{mode} {name:?}: the server sends nothing"
            );
            let needle = format!("file {name:?} not stored: refused file name");
            ChildProc::expect_line(&server.stderr, &needle);
            assert!(entries(tmp.path()).is_empty(), "{mode} {name:?}");
        }
        // Still serving.
        round_trip(addr, &message("still here"));
        ChildProc::expect_line(&server.stderr, "message: \"still here\"");
        let summary = server.stop_with_sigint();
        assert!(
            summary.contains(&format!("{} errors", names.len())),
            "{summary}"
        );
    }
}

#[test]
fn bad_input_closes_the_connection_leaves_nothing_and_the_server_keeps_serving() {
    let over_limit = [file_header("big.bin"), frame(&[7u8; 2000])].concat();
    let cases: [(&str, Vec<u8>, &str); 8] = [
        (
            "negative length",
            (-1i32).to_le_bytes().to_vec(),
            "negative frame length -1",
        ),
        (
            "huge header",
            (1i32 << 30).to_le_bytes().to_vec(),
            "exceeds the limit",
        ),
        ("garbage JSON", frame(b"{not json"), "invalid JSON header"),
        (
            "unknown type",
            frame(br#"{"msg_type": "nope"}"#),
            "invalid JSON header",
        ),
        (
            "truncated frame",
            [&100i32.to_le_bytes()[..], b"short"].concat(),
            "the stream ended inside a message (9 bytes of it received)",
        ),
        (
            "message without text",
            frame(br#"{"msg_type": "msg"}"#),
            "no message text: stream ended",
        ),
        (
            "over --max-size",
            over_limit,
            "exceeds the limit of 1000 bytes",
        ),
        (
            "negative file length",
            [file_header("f"), (-5i32).to_le_bytes().to_vec()].concat(),
            "negative frame length -5",
        ),
    ];
    for mode in MODES {
        let tmp = tempfile::tempdir().unwrap();
        let (server, addr) = upload_server(tmp.path(), &["--mode", mode, "--max-size", "1000"]);
        for (what, bytes, needle) in &cases {
            assert!(round_trip(addr, bytes).is_empty(), "{mode} {what}");
            let line = ChildProc::expect_line(&server.stderr, needle);
            assert!(
                line.contains("closing the connection"),
                "{mode} {what}: {line}"
            );
            assert!(entries(tmp.path()).is_empty(), "{mode} {what}");
        }
        // A file at the limit is fine.
        round_trip(addr, &[file_header("ok.bin"), frame(&[1u8; 1000])].concat());
        ChildProc::expect_line(&server.stderr, "stored \"ok.bin\" (1000 bytes)");
        assert_eq!(entries(tmp.path()), ["ok.bin"]);
        server.stop_with_sigint();
    }
}

#[test]
fn a_client_gone_mid_upload_leaves_no_partial_file_in_every_mode() {
    for mode in MODES {
        let tmp = tempfile::tempdir().unwrap();
        let (server, addr) = upload_server(tmp.path(), &["--mode", mode]);
        for reset in [false, true] {
            let mut c = connect(addr);
            c.write_all(&file_header("partial.bin")).unwrap();
            c.write_all(&((10 * MIB) as i32).to_le_bytes()).unwrap();
            c.write_all(&vec![9u8; MIB]).unwrap();
            // The transfer has started: its temporary file exists.
            wait_until("a temporary file", || !entries(tmp.path()).is_empty());
            assert!(entries(tmp.path())[0].ends_with(".part"), "{mode}");
            if reset {
                socket2::SockRef::from(&c)
                    .set_linger(Some(std::time::Duration::ZERO))
                    .unwrap();
            }
            drop(c); // FIN, or RST with a zero linger
            let line = ChildProc::expect_line(&server.stderr, "\"partial.bin\" not stored");
            let why = if reset {
                "reset"
            } else {
                "ended inside a body"
            };
            assert!(line.contains(why), "{mode}: {line}");
            assert!(entries(tmp.path()).is_empty(), "{mode} reset={reset}");
        }
        server.stop_with_sigint();
    }
}

#[test]
fn an_existing_file_is_not_overwritten_unless_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("a.txt");
    fs::write(&target, "original").unwrap();
    let upload = [
        file_header("a.txt"),
        frame(b"replacement"),
        frame(UPLOAD_CLOSE),
    ]
    .concat();

    let (server, addr) = upload_server(tmp.path(), &[]);
    round_trip(addr, &upload);
    ChildProc::expect_line(&server.stderr, "already exists");
    assert_eq!(fs::read_to_string(&target).unwrap(), "original");
    assert_eq!(entries(tmp.path()), ["a.txt"]);
    server.stop_with_sigint();

    let (server, addr) = upload_server(tmp.path(), &["--overwrite"]);
    round_trip(addr, &upload);
    ChildProc::expect_line(&server.stderr, "stored \"a.txt\" (11 bytes)");
    assert_eq!(fs::read_to_string(&target).unwrap(), "replacement");
    assert_eq!(entries(tmp.path()), ["a.txt"]);
    server.stop_with_sigint();
}

#[test]
fn the_tutorials_python_client_works_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("up");
    let src = tmp.path().join("上传.bin");
    let body: Vec<u8> = (0..300_000).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(&src, &body).unwrap();
    for mode in MODES {
        let _ = fs::remove_dir_all(&dir);
        let (server, addr) = upload_server(&dir, &["--mode", mode]);
        let mut cmd = Command::new("python3");
        cmd.args([PY_CLIENT, &addr.port().to_string(), src.to_str().unwrap()]);
        let mut py = ChildProc::spawn(cmd);
        assert_eq!(
            py.wait_exit(),
            Some(0),
            "python3 is required for the interop tests"
        );
        ChildProc::expect_line(&server.stderr, "message: \"你好 from Python\"");
        ChildProc::expect_line(&server.stderr, "stored \"上传.bin\" (300000 bytes)");
        ChildProc::expect_line(&server.stderr, "done: 1 message(s), 1 file(s)");
        assert!(fs::read(dir.join("上传.bin")).unwrap() == body, "{mode}");
        server.stop_with_sigint();
    }
}

#[test]
fn client_without_a_server_fails_with_a_message() {
    assert_client_fails_cleanly(
        "upload",
        free_tcp_addr(),
        &[],
        b"msg|hi\n",
        "cannot connect",
    );
}

#[test]
fn the_directory_quota_refuses_a_file_that_would_pass_it_in_every_mode() {
    for mode in MODES {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("already.bin"), [0u8; 400]).unwrap();
        let (server, addr) = upload_server(tmp.path(), &["--mode", mode, "--quota", "1000"]);
        // 400 on disk + 500 = 900: fits.
        round_trip(addr, &[file_header("a.bin"), frame(&[1u8; 500])].concat());
        ChildProc::expect_line(&server.stderr, "stored \"a.bin\" (500 bytes)");
        // 900 + 101 > 1000: refused before a byte is written, nothing left behind.
        round_trip(addr, &[file_header("b.bin"), frame(&[2u8; 101])].concat());
        let line = ChildProc::expect_line(&server.stderr, "\"b.bin\" not stored");
        assert!(
            line.contains("quota: 900 of 1000 bytes used, 101 more refused"),
            "{mode}: {line}"
        );
        // A failed transfer gives its reservation back: 100 more still fit exactly.
        let mut c = connect(addr);
        c.write_all(&file_header("cut.bin")).unwrap();
        c.write_all(&100i32.to_le_bytes()).unwrap();
        drop(c);
        ChildProc::expect_line(&server.stderr, "\"cut.bin\" not stored");
        round_trip(addr, &[file_header("c.bin"), frame(&[3u8; 100])].concat());
        ChildProc::expect_line(&server.stderr, "stored \"c.bin\" (100 bytes)");
        assert_eq!(
            entries(tmp.path()),
            ["a.bin", "already.bin", "c.bin"],
            "{mode}"
        );
        server.stop_with_sigint();
    }
}

/// Starts a 10 MB upload, sends 1 MB of it and stalls; returns once its temporary file
/// holds that 1 MB.
#[track_caller]
fn stalled_upload(addr: SocketAddr, dir: &Path) -> std::net::TcpStream {
    let mut c = connect(addr);
    c.write_all(&file_header("stalled.bin")).unwrap();
    c.write_all(&((10 * MIB) as i32).to_le_bytes()).unwrap();
    c.write_all(&vec![9u8; MIB]).unwrap();
    wait_until("the temporary file to hold 1 MiB", || {
        fs::read_dir(dir).unwrap().any(|e| {
            let e = e.unwrap();
            e.file_name().to_string_lossy().ends_with(".part")
                && e.metadata().is_ok_and(|m| m.len() == MIB as u64)
        })
    });
    c
}

/// Issue 17.3: a forked child ended by SIGTERM in the middle of an upload removes its
/// temporary file: the server's own SIGTERM after the grace period (here forced by a
/// second SIGINT), and a SIGTERM to the whole process group, as systemd sends.
#[test]
fn a_forked_child_terminated_mid_upload_leaves_no_partial_file() {
    for group in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_str().unwrap();
        let args = ["--dir", dir, "--mode", "forking"];
        let (mut server, addr) = if group {
            spawn_example_server_in_own_group("upload", &args)
        } else {
            spawn_example_server("upload", &args)
        };
        let c = stalled_upload(addr, tmp.path());
        if group {
            // SAFETY: killpg(2) on the server's own process group (it is the leader).
            unsafe { libc::killpg(server.child.id() as libc::pid_t, libc::SIGTERM) };
        } else {
            server.signal(libc::SIGINT);
            ChildProc::expect_line(&server.stderr, "shutting down");
            server.signal(libc::SIGINT); // force: the child gets SIGTERM at once
        }
        assert_eq!(server.wait_exit(), Some(0), "group={group}");
        drop(c);
        assert!(
            entries(tmp.path()).is_empty(),
            "group={group}: {:?}",
            entries(tmp.path())
        );
    }
}

/// Issue 17.3: temporary files whose writer is dead (SIGKILL, a crash) are removed when
/// the server starts; a live writer's, and every other file, are left alone.
#[test]
fn stale_partial_files_of_dead_writers_are_removed_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let mut gone = Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    let dead = format!(".socketserver-{dead_pid}-0-000000001.part");
    let live = format!(".socketserver-{}-0-000000002.part", std::process::id());
    for name in [
        dead.as_str(),
        live.as_str(),
        "keep.bin",
        ".socketserver-x.part",
    ] {
        fs::write(tmp.path().join(name), [0u8; 100]).unwrap();
    }
    // (The server logs each file it removes before its `listening on` line.)
    let (server, _addr) = upload_server(tmp.path(), &[]);
    let mut want = vec![
        live.clone(),
        "keep.bin".into(),
        ".socketserver-x.part".into(),
    ];
    want.sort();
    assert_eq!(entries(tmp.path()), want);
    server.stop_with_sigint();
}

/// Issue 17.5: the quota follows what is on disk: a file replaced with --overwrite counts
/// once, and a file removed by hand stops counting without a restart.
#[test]
fn the_quota_follows_the_directory_through_overwrites_and_deletions_in_every_mode() {
    let upload = |name: &str, len: usize| [file_header(name), frame(&vec![5u8; len])].concat();
    for mode in MODES {
        let tmp = tempfile::tempdir().unwrap();
        let args = ["--mode", mode, "--quota", "1000000", "--overwrite"];
        let (server, addr) = upload_server(tmp.path(), &args);
        for i in 0..5 {
            round_trip(addr, &upload("same.bin", 300_000));
            let line = ChildProc::expect_line(&server.stderr, "\"same.bin\" ");
            assert!(
                line.starts_with("\"same.bin\" (300000 bytes)"),
                "{mode} #{i}: {line}"
            );
        }
        round_trip(addr, &upload("a.bin", 600_000));
        ChildProc::expect_line(&server.stderr, "stored \"a.bin\" (600000 bytes)");
        round_trip(addr, &upload("b.bin", 200_000));
        let line = ChildProc::expect_line(&server.stderr, "\"b.bin\" not stored");
        assert!(
            line.contains("quota: 900000 of 1000000 bytes used, 200000 more refused"),
            "{mode}: {line}"
        );
        fs::remove_file(tmp.path().join("a.bin")).unwrap();
        round_trip(addr, &upload("b.bin", 200_000));
        ChildProc::expect_line(&server.stderr, "stored \"b.bin\" (200000 bytes)");
        assert_eq!(entries(tmp.path()), ["b.bin", "same.bin"], "{mode}");
        server.stop_with_sigint();
    }
}

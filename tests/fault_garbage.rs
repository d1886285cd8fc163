//! Garbage on every example protocol: random bytes on each TCP server, random datagrams on
//! each UDP server. Each must answer with an error or close — never panic, never stop — and
//! serve the next, well-formed client; every server still exits 0 on SIGINT with no panic.
//! (Protocol-specific bad input — negative lengths, bad JSON, hostile names, over-long
//! lines — is tested in each `tests/example_*.rs`.)

mod util;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use util::*;

/// Deterministic noise (xorshift64*), `n` bytes; `high` keeps every byte >= 0x80.
fn noise(seed: u64, n: usize, high: bool) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let b = (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8;
            if high { b | 0x80 } else { b }
        })
        .collect()
}

/// (example, extra server args, a well-formed request afterwards, its reply's start)
type Case<'a> = (&'a str, Vec<&'a str>, &'a [u8], &'a [u8]);

#[track_caller]
fn stop_cleanly(server: ChildProc, name: &str) {
    let summary = server.stop_with_sigint();
    assert!(summary.contains(" 0 panics"), "{name}: {summary}");
}

#[test]
fn random_bytes_on_every_tcp_example_are_survived() {
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().to_str().unwrap();
    let cases: [Case<'_>; 5] = [
        ("echo", vec![], b"fine\n", b"fine\n"),
        ("upper", vec![], b"fine\n", b"FINE\n"),
        ("chat", vec![], b"nick\n", b"* welcome"),
        (
            "upload",
            vec!["--dir", dir_arg],
            b"\x13\0\0\0{\"msg_type\": \"msg\"}\x02\0\0\0hi\x05\0\0\0close",
            b"",
        ),
        ("remote_cmd", vec![], b"echo fine", b""),
    ];
    for (name, args, ok_request, ok_reply) in cases {
        let (server, addr) = spawn_example_server(name, &args);
        for seed in 1..=20u64 {
            let mut c = connect(addr);
            // remote_cmd runs what it gets: only bytes >= 0x80, which no shell can run.
            let bytes = noise(
                seed,
                1 + (seed as usize * 3217) % 70_000,
                name == "remote_cmd",
            );
            let _ = c.write_all(&bytes);
            let _ = c.shutdown(Shutdown::Write);
            c.set_read_timeout(Some(LONG)).unwrap();
            // An error reply or a close, within the timeout: never a hang.
            let mut sink = Vec::new();
            match c.read_to_end(&mut sink) {
                Ok(_) => {}
                Err(e) => assert!(
                    e.kind() == std::io::ErrorKind::ConnectionReset,
                    "{name} seed {seed}: {e}"
                ),
            }
        }
        // The next, well-formed client is served.
        let mut c = connect(addr);
        c.write_all(ok_request).unwrap();
        if name == "remote_cmd" {
            let mut len = [0u8; 4];
            c.read_exact(&mut len).unwrap();
            let mut header = vec![0u8; i32::from_le_bytes(len) as usize];
            c.read_exact(&mut header).unwrap();
            assert!(
                header.starts_with(b"{\"filename\": \"echo fine\""),
                "{name}"
            );
        } else if name == "upload" {
            // No reply in this protocol: the server reads `close` and closes.
            assert_eq!(c.read(&mut [0u8; 1]).unwrap(), 0, "{name}");
            ChildProc::expect_line(&server.stderr, "message: \"hi\"");
        } else {
            let mut got = vec![0u8; ok_reply.len()];
            c.read_exact(&mut got).unwrap();
            assert_eq!(got, ok_reply, "{name}");
        }
        drop(c);
        stop_cleanly(server, name);
    }
    // Nothing the noise said was stored as a file.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn random_datagrams_on_every_udp_example_are_survived() {
    let cases: [Case<'_>; 4] = [
        ("echo", vec!["--udp"], b"fine", b"fine"),
        ("upper", vec!["--udp"], b"fine", b"FINE"),
        ("timeserver", vec![], b"%%", b"%"),
        ("chat", vec!["--udp"], b"", b"* relay"),
    ];
    for (name, args, ok_request, ok_reply) in cases {
        let (server, addr) = spawn_example_server(name, &args);
        let noisy = udp_client();
        for seed in 1..=50u64 {
            let n = (seed as usize * 1297) % 65_000;
            noisy.send_to(&noise(seed, n, false), addr).unwrap();
        }
        // A fresh client gets its answer (the noisy one may get error replies meanwhile).
        let c = udp_client();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.send_to(ok_request, addr).unwrap();
        let mut buf = vec![0u8; 65_536];
        let (n, from) = c.recv_from(&mut buf).unwrap();
        assert_eq!(from, addr, "{name}");
        assert!(buf[..n].starts_with(ok_reply), "{name}: {:?}", &buf[..n]);
        stop_cleanly(server, name);
    }
}

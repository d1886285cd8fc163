//! The examples over TLS, end to end as real processes: `--tls-cert/--tls-key` on the
//! servers (and `--tls-client-ca` for mTLS), `--tls-ca` (and `--tls-cert/--tls-key`) on
//! their clients, the tutorials' Python upload client with its socket wrapped by `ssl`,
//! `openssl s_client` against `upper`, and a 200 MiB upload byte-identical.

mod util;

use std::fs;
use std::io::{Read, Write};
use std::process::{Command, Stdio};

use util::tls::{Pki, connect as tls_connect};
use util::*;

const MODES: [&str; 4] = ["sync", "threading", "forking", "evented"];
const PY_WRAP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/tls_wrap.py");
const PY_UPLOAD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/upload_client.py");

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

fn tls_server_args(pki: &Pki) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        s(&pki.cert).into(),
        "--tls-key".into(),
        s(&pki.key).into(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn echo_and_upper_serve_their_clients_over_tls_in_every_mode() {
    let pki = Pki::new();
    for (example, want) in [("echo", "hello\n你好\n"), ("upper", "HELLO\n你好\n")] {
        for mode in MODES {
            let mut args = tls_server_args(&pki);
            args.extend(["--mode".into(), mode.into()]);
            let (server, addr) = spawn_example_server(example, &strs(&args));
            let out = run_example_client(
                example,
                addr,
                &["--tls-ca", s(&pki.ca)],
                "hello\n你好\n".as_bytes(),
            );
            assert_eq!(out.code, Some(0), "{example} {mode}: {out:?}");
            assert_eq!(out.stdout, want, "{example} {mode}");
            // A plaintext client is refused, and counted.
            let mut plain = connect(addr);
            plain.write_all(b"hello\n").unwrap();
            let mut got = Vec::new();
            let _ = plain.read_to_end(&mut got);
            assert!(!got.starts_with(b"hello"), "{example} {mode}: {got:?}");
            let summary = server.stop_with_sigint();
            assert!(
                summary.contains("1 served, 0 errors"),
                "{example} {mode}: {summary}"
            );
        }
    }
}

#[test]
fn echo_serves_tls_in_its_default_evented_mode() {
    let pki = Pki::new();
    let (server, addr) = spawn_example_server("echo", &strs(&tls_server_args(&pki)));
    let out = run_example_client("echo", addr, &["--tls-ca", s(&pki.ca)], b"x\n");
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), "x\n"), "{out:?}");
    server.stop_with_sigint();
}

#[test]
fn openssl_s_client_pokes_upper() {
    if !require_program("openssl") {
        return;
    }
    let pki = Pki::new();
    let (server, addr) = spawn_example_server("upper", &strs(&tls_server_args(&pki)));
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet", "-verify_return_error"])
        .args(["-servername", "localhost", "-connect", &addr.to_string()])
        .args(["-CAfile", s(&pki.ca)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"shout\n").unwrap();
    let mut reply = [0u8; 6];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut reply)
        .unwrap();
    assert_eq!(&reply, b"SHOUT\n");
    drop(stdin);
    let _ = child.kill();
    let _ = child.wait();
    server.stop_with_sigint();
}

#[test]
fn mtls_serves_a_client_with_a_certificate_and_refuses_one_without() {
    let pki = Pki::new();
    let mut args = tls_server_args(&pki);
    args.extend(["--tls-client-ca".into(), s(&pki.ca).into()]);
    let (server, addr) = spawn_example_server("echo", &strs(&args));
    let with = [
        "--tls-ca",
        s(&pki.ca),
        "--tls-cert",
        s(&pki.client_cert),
        "--tls-key",
        s(&pki.client_key),
    ];
    let out = run_example_client("echo", addr, &with, b"mutual\n");
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), "mutual\n"),
        "{out:?}"
    );
    let out = run_example_client("echo", addr, &["--tls-ca", s(&pki.ca)], b"anonymous\n");
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    ChildProc::expect_line(&server.stderr, "TLS handshake failed");
    server.stop_with_sigint();
}

#[test]
fn the_tutorials_python_upload_client_wrapped_in_ssl_uploads_in_every_mode() {
    let pki = Pki::new();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("secret.bin");
    let body: Vec<u8> = (0..300_000).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(&src, &body).unwrap();
    for mode in MODES {
        let dir = tmp.path().join(mode);
        let mut args = tls_server_args(&pki);
        args.extend(["--mode".into(), mode.into(), "--dir".into(), s(&dir).into()]);
        let (server, addr) = spawn_example_server("upload", &strs(&args));
        let mut cmd = Command::new("python3");
        cmd.args([
            PY_WRAP,
            s(&pki.ca),
            PY_UPLOAD,
            &addr.port().to_string(),
            s(&src),
        ]);
        let mut py = ChildProc::spawn(cmd);
        assert_eq!(py.wait_exit(), Some(0), "{mode}");
        ChildProc::expect_line(&server.stderr, "stored \"secret.bin\" (300000 bytes)");
        ChildProc::expect_line(&server.stderr, "done: 1 message(s), 1 file(s)");
        assert!(fs::read(dir.join("secret.bin")).unwrap() == body, "{mode}");
        server.stop_with_sigint();
    }
}

#[test]
fn remote_cmd_runs_a_command_over_tls() {
    let pki = Pki::new();
    let (server, addr) = spawn_example_server("remote_cmd", &strs(&tls_server_args(&pki)));
    let out = run_example_client(
        "remote_cmd",
        addr,
        &["--tls-ca", s(&pki.ca)],
        b"echo over tls\n",
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout, "over tls\n", "{out:?}");
    server.stop_with_sigint();
}

/// 200 MiB through the upload example over TLS, in 1 MiB chunks each tagged with its
/// index: the stored file is byte-identical.
#[test]
fn a_200_mib_upload_over_tls_arrives_byte_identical() {
    for mode in ["threading", "evented"] {
        upload_200_mib(mode);
    }
}

fn upload_200_mib(mode: &str) {
    use socketserver::framing::{Framing, UPLOAD_CLOSE, UploadHeader, to_python_json};
    const MIB: usize = 1024 * 1024;
    const CHUNKS: usize = 200;
    let pki = Pki::new();
    let tmp = tempfile::tempdir().unwrap();
    let mut args = tls_server_args(&pki);
    args.extend(["--mode".into(), mode.into(), "--dir".into()]);
    args.push(s(tmp.path()).into());
    let (server, addr) = spawn_example_server("upload", &strs(&args));
    let base: Vec<u8> = (0..MIB).map(|i| (i * 7 % 253) as u8).collect();
    let chunk = |i: usize| {
        let mut c = base.clone();
        c[..8].copy_from_slice(&(i as u64).to_le_bytes());
        c
    };
    let frame = |payload: &[u8]| {
        let mut w = Vec::new();
        Framing::python().write_frame(&mut w, payload).unwrap();
        w
    };
    let header = UploadHeader::File {
        file_name: "big.bin".into(),
    };
    let mut up = tls_connect(addr, pki.client_config(false), "localhost").unwrap();
    up.write_all(&frame(&to_python_json(&header).unwrap()))
        .unwrap();
    up.write_all(&((CHUNKS * MIB) as i32).to_le_bytes())
        .unwrap();
    for i in 0..CHUNKS {
        up.write_all(&chunk(i)).unwrap();
    }
    up.write_all(&frame(UPLOAD_CLOSE)).unwrap();
    up.conn.send_close_notify();
    up.flush().unwrap();
    let mut rest = Vec::new();
    up.read_to_end(&mut rest)
        .expect("the server closes with close_notify after `close`");
    ChildProc::expect_line(&server.stderr, "stored \"big.bin\" (209715200 bytes)");
    let mut stored = fs::File::open(tmp.path().join("big.bin")).unwrap();
    let mut got = vec![0u8; MIB];
    for i in 0..CHUNKS {
        stored.read_exact(&mut got).unwrap();
        assert!(got == chunk(i), "{mode}: chunk {i} differs");
    }
    assert_eq!(stored.read(&mut got).unwrap(), 0, "stored file is too long");
    server.stop_with_sigint();
}

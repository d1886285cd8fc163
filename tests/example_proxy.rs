//! `--proxy-protocol` on every stream example (echo, upper, chat, upload, remote_cmd): a
//! connection must start with a PROXY header, the logs name the original client, and
//! remote_cmd's loopback-only rule judges that client, not the proxy (127.0.0.1).
//! Run with the examples built (`cargo test --all-features` builds them).

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};

use util::{ChildProc, LONG, connect, spawn_example_server};

/// A v1 header for a client at `src` (a documentation address: only the header says it).
fn header(src: &str, server: SocketAddr) -> Vec<u8> {
    let src: SocketAddr = src.parse().unwrap();
    format!(
        "PROXY TCP4 {} {} {} {}\r\n",
        src.ip(),
        server.ip(),
        src.port(),
        server.port()
    )
    .into_bytes()
}

fn proxied(addr: SocketAddr, src: &str, first: &[u8]) -> TcpStream {
    let mut c = connect(addr);
    c.write_all(&[header(src, addr), first.to_vec()].concat())
        .unwrap();
    c
}

fn read_line(r: &mut impl BufRead) -> String {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    line
}

/// A connection without a header is closed unanswered, and the server says why.
fn refuses_a_bare_connection(server: &ChildProc, addr: SocketAddr) {
    let mut c = connect(addr);
    c.write_all(b"no header here\n").unwrap();
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    ChildProc::expect_line(&server.stderr, "no PROXY protocol header");
}

#[test]
fn echo_and_upper_log_the_original_client_and_refuse_bare_connections() {
    for (name, sent, back, verb) in [
        ("echo", "hello\n", "hello\n", "echoed"),
        ("upper", "hello\n", "HELLO\n", "upper-cased"),
    ] {
        for mode in ["evented", "threading"] {
            let (server, addr) = spawn_example_server(name, &["--proxy-protocol", "--mode", mode]);
            let mut c = BufReader::new(proxied(addr, "192.0.2.10:40010", sent.as_bytes()));
            assert_eq!(read_line(&mut c), back, "{name} {mode}");
            drop(c);
            ChildProc::expect_line(&server.stderr, &format!("192.0.2.10:40010: {verb}"));
            refuses_a_bare_connection(&server, addr);
        }
    }
}

#[test]
fn chat_names_the_original_client_when_a_member_joins() {
    let (server, addr) = spawn_example_server("chat", &["--proxy-protocol"]);
    let mut alice = BufReader::new(proxied(addr, "192.0.2.11:40011", b"alice\n"));
    assert!(read_line(&mut alice).starts_with("* welcome"));
    assert_eq!(read_line(&mut alice), "* you are alice\n");
    ChildProc::expect_line(&server.stderr, "192.0.2.11:40011");
    refuses_a_bare_connection(&server, addr);
}

#[test]
fn upload_logs_the_original_client_of_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = spawn_example_server(
        "upload",
        &["--proxy-protocol", "--dir", dir.path().to_str().unwrap()],
    );
    let frame = |b: &[u8]| [(b.len() as i32).to_le_bytes().to_vec(), b.to_vec()].concat();
    let mut first = frame(br#"{"msg_type": "msg"}"#);
    first.extend(frame("hi from behind a proxy".as_bytes()));
    first.extend(frame(b"close"));
    let mut c = proxied(addr, "192.0.2.12:40012", &first);
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    ChildProc::expect_line(&server.stderr, "upload: 192.0.2.12:40012: message");
    refuses_a_bare_connection(&server, addr);
}

#[test]
fn remote_cmd_judges_the_proxied_client_by_the_loopback_rule() {
    let (server, addr) = spawn_example_server("remote_cmd", &["--proxy-protocol"]);
    // A remote client behind a proxy on this machine: the proxy is 127.0.0.1, the client
    // is not, and is refused.
    let mut c = proxied(addr, "192.0.2.13:40013", b"echo pwned");
    c.set_read_timeout(Some(LONG)).unwrap();
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    assert!(rest.is_empty(), "a remote client ran a command: {rest:?}");
    ChildProc::expect_line(&server.stderr, "192.0.2.13:40013: refused");
    // A header without addresses leaves the proxy's (loopback) address: refused too.
    let mut c = connect(addr);
    c.write_all(b"PROXY UNKNOWN\r\necho pwned").unwrap();
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    assert!(rest.is_empty(), "an unknown client ran a command: {rest:?}");
    ChildProc::expect_line(&server.stderr, "refused: the PROXY header names no client");
    // A local client through the same proxy runs its command.
    let mut c = proxied(addr, "127.0.0.13:40014", b"echo hi");
    let mut len = [0u8; 4];
    c.read_exact(&mut len).unwrap();
    assert!(i32::from_le_bytes(len) > 0);
    ChildProc::expect_line(&server.stderr, "remote_cmd: 127.0.0.13:40014: \"echo hi\"");
}

#[test]
fn the_datagram_examples_refuse_the_flag() {
    let out = std::process::Command::new(util::example_path("timeserver"))
        .args(["server", "--addr", "127.0.0.1:0", "--proxy-protocol"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--proxy-protocol is for stream servers"),
        "{stderr}"
    );
}

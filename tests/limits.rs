//! Connection limits: `max_connections` under both overload policies, and the connection
//! deadline that stops slowloris clients.

mod util;

use std::io::{self, BufRead, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use socketserver::*;
use util::*;

fn ask(s: &mut TcpStream, msg: &str) -> String {
    s.write_all(msg.as_bytes()).unwrap();
    let mut line = String::new();
    io::BufReader::new(&*s).read_line(&mut line).unwrap();
    line
}

#[test]
fn max_connections_with_block_holds_extra_clients_in_the_backlog() {
    let server = ThreadingTcpServer::builder()
        .max_connections(Some(2))
        .bind("127.0.0.1:0", echo_lines)
        .unwrap();
    let addr = server.server_address().unwrap();
    let run = Running::start(server);
    let mut a = connect(addr);
    let mut b = connect(addr);
    assert_eq!(ask(&mut a, "a\n"), "a\n");
    assert_eq!(ask(&mut b, "b\n"), "b\n");
    let mut c = connect(addr); // completes the handshake in the kernel backlog
    c.write_all(b"c\n").unwrap();
    // Not accepted while two are open.
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(200) {
        assert_eq!(run.server.stats().accepted, 2);
        assert!(run.server.stats().open <= 2);
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(a); // one closes: c is accepted and served
    let mut line = String::new();
    io::BufReader::new(&c).read_line(&mut line).unwrap();
    assert_eq!(line, "c\n");
    assert_eq!(run.server.stats().rejected, 0);
}

#[test]
fn max_connections_with_reject_closes_and_counts_the_excess() {
    let server = ThreadingTcpServer::builder()
        .max_connections(Some(2))
        .overload(Overload::Reject)
        .bind("127.0.0.1:0", echo_lines)
        .unwrap();
    let addr = server.server_address().unwrap();
    let run = Running::start(server);
    let mut a = connect(addr);
    let mut b = connect(addr);
    assert_eq!(ask(&mut a, "a\n"), "a\n");
    assert_eq!(ask(&mut b, "b\n"), "b\n");
    for _ in 0..3 {
        let mut c = connect(addr);
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        assert!(out.is_empty());
    }
    wait_until("3 rejected", || run.server.stats().rejected == 3);
    // The two open connections are unaffected.
    assert_eq!(ask(&mut a, "still\n"), "still\n");
}

#[test]
fn connection_deadline_ends_a_slowloris_client_while_others_are_served() {
    let server = ThreadingTcpServer::builder()
        .connection_deadline(Some(Duration::from_millis(300)))
        .bind("127.0.0.1:0", echo_lines)
        .unwrap();
    let addr = server.server_address().unwrap();
    let run = Running::start(server);
    // A client that trickles a byte every 20 ms and never finishes its line: its read
    // timeout never fires, only the deadline ends it.
    let mut slow = connect(addr);
    let started = Instant::now();
    let mut closed = false;
    for _ in 0..500 {
        if slow.write_all(b"x").is_err() {
            closed = true;
            break;
        }
        // Normal clients keep getting answers meanwhile.
        assert_eq!(round_trip(addr, b"hi\n"), b"hi\n");
        std::thread::sleep(Duration::from_millis(20));
        if run.server.stats().deadline_expired == 1 {
            closed = true;
            break;
        }
    }
    assert!(closed, "the trickling client was never cut off");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "cut before its deadline: {took:?}"
    );
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest); // the server ended it: EOF (or reset)
    assert_eq!(run.server.stats().deadline_expired, 1);
}

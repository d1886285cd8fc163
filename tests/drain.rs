//! The drain (`server_close`, Ctrl-C) in the classic threading mode, as Go's
//! `Server.Shutdown` does it: connections whose handler waits for a new request with nothing
//! received close at once; a handler in the middle of a request finishes it; a queued
//! connection whose request has arrived is still served (issue 13.2).

mod util;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::bounded;
use socketserver::*;
use util::*;

/// Reads the rest of the stream (EOF or reset); `true` if it ended within `LONG`.
fn read_to_eof(s: &mut std::net::TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    rest
}

#[test]
fn server_close_closes_an_idle_keep_alive_connection_at_once() {
    let server = ThreadingTcpServer::builder()
        .shutdown_grace(LONG)
        .read_timeout(None)
        .bind("127.0.0.1:0", echo_lines)
        .unwrap();
    let addr = server.server_address().unwrap();
    let run = Running::start(server);
    let mut c = connect(addr);
    c.write_all(b"one\n").unwrap();
    let mut line = String::new();
    BufReader::new(&c).read_line(&mut line).unwrap();
    assert_eq!(line, "one\n");
    // The handler now waits for the next line: an idle keep-alive connection.
    let server = run.server.clone();
    drop(run); // stops serve_forever
    let t = Instant::now();
    let clean = server.server_close();
    let took = t.elapsed();
    assert!(clean, "the drain had to force the idle connection");
    assert!(took < Duration::from_secs(2), "server_close took {took:?}");
    assert_eq!(
        read_to_eof(&mut c),
        b"",
        "the idle client sees the connection end"
    );
    let st = server.stats();
    assert_eq!((st.served, st.errors, st.dropped), (1, 0, 0), "{st:?}");
}

/// Reads "begin", then (after telling the test) "end" with no reply in between, then
/// replies "done": the wait for "end" is in the middle of a request.
fn begin_end(tx: crossbeam_channel::Sender<()>) -> impl Fn(&mut StreamRequest) -> io::Result<()> {
    move |req: &mut StreamRequest| {
        let mut line = String::new();
        while req.rfile.read_line(&mut line)? > 0 {
            if line == "begin\n" {
                let _ = tx.send(());
                line.clear();
                req.rfile.read_line(&mut line)?;
                assert_eq!(line, "end\n");
                req.wfile.write_all(b"done\n")?;
            }
            line.clear();
        }
        Ok(())
    }
}

#[test]
fn a_handler_in_the_middle_of_a_request_finishes_it_then_the_connection_closes() {
    let (tx, started) = bounded(1);
    let server = Arc::new(
        ThreadingTcpServer::builder()
            .shutdown_grace(LONG)
            .read_timeout(None)
            .bind("127.0.0.1:0", begin_end(tx))
            .unwrap(),
    );
    let addr = server.server_address().unwrap();
    let s = server.clone();
    let serving = thread::spawn(move || s.serve_forever());
    let mut c = connect(addr);
    c.write_all(b"begin\n").unwrap();
    started.recv_timeout(LONG).unwrap();
    server.shutdown();
    serving.join().unwrap().unwrap();
    let s = server.clone();
    let closing = thread::spawn(move || s.server_close());
    wait_until("the drain started", || server.handle().is_draining());
    // The handler is between "begin" and "end": it must be left to finish.
    c.write_all(b"end\n").unwrap();
    let mut reply = [0u8; 5];
    c.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"done\n");
    // Its next wait is for a new request: the drain ends the connection.
    assert_eq!(read_to_eof(&mut c), b"");
    assert!(closing.join().unwrap(), "the drain had to force");
}

#[test]
fn a_handler_can_ask_whether_the_server_is_draining() {
    let (tx, asked) = bounded(2);
    let server = Arc::new(
        ThreadingTcpServer::builder()
            .shutdown_grace(LONG)
            .bind("127.0.0.1:0", move |req: &mut StreamRequest| {
                let mut line = String::new();
                req.rfile.read_line(&mut line)?;
                let _ = tx.send(req.is_draining());
                req.mark_busy();
                line.clear();
                req.rfile.read_line(&mut line)?;
                let _ = tx.send(req.server().is_draining());
                Ok(())
            })
            .unwrap(),
    );
    let addr = server.server_address().unwrap();
    let run = Running::start_arc(server.clone());
    let mut c = connect(addr);
    c.write_all(b"one\n").unwrap();
    assert!(
        !asked.recv_timeout(LONG).unwrap(),
        "draining before the close"
    );
    run.stop().unwrap();
    let s = server.clone();
    let closing = thread::spawn(move || s.server_close());
    wait_until("the drain started", || server.handle().is_draining());
    c.write_all(b"two\n").unwrap();
    assert!(
        asked.recv_timeout(LONG).unwrap(),
        "not draining during the close"
    );
    assert!(closing.join().unwrap());
}

#[test]
fn mark_idle_lets_the_drain_close_a_connection_that_gets_no_replies() {
    let (tx, got) = bounded(4);
    let server = ThreadingTcpServer::builder()
        .shutdown_grace(LONG)
        .read_timeout(None)
        .bind("127.0.0.1:0", move |req: &mut StreamRequest| {
            // A sink: requests get no reply; each line is a whole request.
            let mut line = String::new();
            while req.rfile.read_line(&mut line)? > 0 {
                let _ = tx.send(());
                req.mark_idle();
                line.clear();
            }
            Ok(())
        })
        .unwrap();
    let addr = server.server_address().unwrap();
    let run = Running::start(server);
    let mut c = connect(addr);
    c.write_all(b"log this\n").unwrap();
    got.recv_timeout(LONG).unwrap();
    let server = run.server.clone();
    drop(run);
    let t = Instant::now();
    assert!(server.server_close(), "the drain had to force");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(read_to_eof(&mut c), b"");
}

#[test]
fn a_queued_connection_whose_request_has_arrived_is_served_by_the_drain() {
    let (tx, started) = bounded(1);
    let server = Arc::new(
        ThreadingTcpServer::builder()
            .workers(1, 1)
            .max_connections(Some(2))
            .shutdown_grace(LONG)
            .read_timeout(None)
            .bind("127.0.0.1:0", begin_end(tx))
            .unwrap(),
    );
    let addr = server.server_address().unwrap();
    let run = Running::start_arc(server.clone());
    // A holds the only worker in the middle of a request.
    let mut a = connect(addr);
    a.write_all(b"begin\n").unwrap();
    started.recv_timeout(LONG).unwrap();
    // B's request is in its socket, queued behind A.
    let mut b = connect(addr);
    b.write_all(b"begin\nend\n").unwrap();
    wait_until("B is queued", || server.stats().queued == 1);
    run.stop().unwrap();
    let s = server.clone();
    let closing = thread::spawn(move || s.server_close());
    wait_until("the drain started", || server.handle().is_draining());
    a.write_all(b"end\n").unwrap();
    let mut reply = Vec::new();
    a.read_to_end(&mut reply).unwrap();
    assert_eq!(reply, b"done\n");
    reply.clear();
    b.read_to_end(&mut reply).unwrap();
    assert_eq!(reply, b"done\n", "the queued request was not served");
    assert!(closing.join().unwrap());
    assert_eq!(server.stats().served, 2);
}

/// The echo example in threading mode with one idle keep-alive client: SIGINT, and the
/// process has exited well within the grace period (10 s). Target 100 ms; asserted with
/// room for a loaded machine.
#[test]
fn sigint_with_an_idle_client_exits_at_once() {
    let (mut server, addr) = spawn_example_server("echo", &["--mode", "threading"]);
    let mut clients = Vec::new();
    for i in 0..3 {
        let mut c = connect(addr);
        let msg = format!("hello {i}\n");
        c.write_all(msg.as_bytes()).unwrap();
        let mut buf = vec![0u8; msg.len()];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(buf, msg.as_bytes());
        clients.push(c);
    }
    let t = Instant::now();
    server.signal(libc::SIGINT);
    assert_eq!(server.wait_exit(), Some(0));
    let took = t.elapsed();
    eprintln!("SIGINT to exit with 3 idle clients: {took:?}");
    assert!(took < Duration::from_secs(1), "exit took {took:?}");
    let summary = ChildProc::expect_line(&server.stderr, "stopped:");
    assert!(summary.contains("3 served, 0 errors"), "{summary}");
    for mut c in clients {
        assert_eq!(read_to_eof(&mut c), b"");
    }
}

#[test]
fn a_connection_that_has_sent_nothing_gets_a_few_seconds_before_the_drain_closes_it() {
    let server = Arc::new(
        ThreadingTcpServer::builder()
            .shutdown_grace(LONG)
            .read_timeout(None)
            .bind("127.0.0.1:0", echo_lines)
            .unwrap(),
    );
    let addr = server.server_address().unwrap();
    let run = Running::start_arc(server.clone());
    let mut silent = connect(addr);
    wait_until("its handler runs", || server.stats().active == 1);
    run.stop().unwrap();
    let t = Instant::now();
    let s = server.clone();
    let closing = thread::spawn(move || s.server_close());
    wait_until("the drain started", || server.handle().is_draining());
    // Its request may be on the way: it is served if it arrives within 5 s (Go's rule).
    silent.write_all(b"late\n").unwrap();
    let mut line = String::new();
    BufReader::new(&silent).read_line(&mut line).unwrap();
    assert_eq!(line, "late\n");
    // Then it is an idle keep-alive connection: closed at once.
    assert_eq!(read_to_eof(&mut silent), b"");
    assert!(closing.join().unwrap());
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    // One that never sends is closed after 5 s, well within the grace period (20 s).
    let server = Arc::new(
        ThreadingTcpServer::builder()
            .shutdown_grace(LONG)
            .read_timeout(None)
            .bind("127.0.0.1:0", echo_lines)
            .unwrap(),
    );
    let addr = server.server_address().unwrap();
    let run = Running::start_arc(server.clone());
    let mut mute = connect(addr);
    wait_until("its handler runs", || server.stats().active == 1);
    run.stop().unwrap();
    let t = Instant::now();
    assert!(
        server.server_close(),
        "forced at the end of the grace period"
    );
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(8),
        "took {took:?}"
    );
    assert_eq!(read_to_eof(&mut mute), b"");
}

//! Log lines a person can read, and timeouts reported as timeouts (issue 13.3, 13.4): a read
//! timeout is `io::ErrorKind::TimedOut` naming the knob and the duration, counted apart
//! from errors and logged below ERROR; peers gone are not ERROR lines; repeated
//! per-connection events get at most one line a second per kind, and the close gives the
//! totals.

mod util;

use std::io::{self, BufRead, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use socketserver::*;
use util::*;

/// What `handle_error` saw: kind, message, the `TimeoutError` inside (knob, duration).
type Seen = (
    io::ErrorKind,
    String,
    Option<(&'static str, Option<Duration>)>,
);

#[test]
fn a_read_timeout_is_timed_out_naming_the_knob_and_the_duration() {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let s2 = seen.clone();
    let server = ThreadingTcpServer::builder()
        .read_timeout(Some(Duration::from_millis(200)))
        .handle_error(move |_, err| {
            if let HandlerError::Io(e) = err {
                let t = e
                    .get_ref()
                    .and_then(|i| i.downcast_ref::<TimeoutError>())
                    .map(|t| (t.knob(), t.duration()));
                s2.lock().push((e.kind(), e.to_string(), t));
            }
        })
        .bind("127.0.0.1:0", echo_lines)
        .unwrap();
    let addr = server.server_address().unwrap();
    let run = Running::start(server);
    let mut c = connect(addr);
    c.write_all(b"one\n").unwrap();
    let mut line = String::new();
    std::io::BufReader::new(&c).read_line(&mut line).unwrap();
    // Then silence: the handler's next read times out.
    wait_until("the timeout is reported", || !seen.lock().is_empty());
    let (kind, msg, t) = seen.lock()[0].clone();
    assert_eq!(kind, io::ErrorKind::TimedOut);
    assert_eq!(msg, "read timed out after 200ms (read_timeout)");
    assert_eq!(t, Some(("read_timeout", Some(Duration::from_millis(200)))));
    let st = run.server.stats();
    assert_eq!((st.timeouts, st.errors), (1, 0), "{st:?}");
}

#[test]
fn a_read_timeout_is_logged_below_error() {
    let server = ThreadingTcpServer::builder()
        .read_timeout(Some(Duration::from_millis(100)))
        .bind("127.0.0.1:0", echo_lines)
        .unwrap();
    let addr = server.server_address().unwrap();
    let run = Running::start(server);
    let c = connect(addr);
    let me = c.local_addr().unwrap().to_string();
    wait_until("the timeout is logged", || !captured_logs(&me).is_empty());
    let lines = captured_logs(&me);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0].level, log::Level::Info, "{lines:?}");
    assert!(
        lines[0]
            .message
            .contains("read timed out after 100ms (read_timeout)"),
        "{lines:?}"
    );
    assert_eq!(run.server.stats().timeouts, 1);
}

/// A handler failing the way a peer gone makes it fail.
fn peer_gone(req: &mut StreamRequest) -> io::Result<()> {
    let mut line = String::new();
    req.rfile.read_line(&mut line)?;
    Err(io::Error::new(
        io::ErrorKind::ConnectionReset,
        format!("gone {line}"),
    ))
}

#[test]
fn many_peers_gone_make_at_most_a_line_a_second_and_the_close_gives_the_totals() {
    const CLIENTS: usize = 60;
    captured_logs(""); // installs the logger
    let server = Arc::new(
        ThreadingTcpServer::builder()
            .bind("127.0.0.1:0", peer_gone)
            .unwrap(),
    );
    let port = server.server_address().unwrap().port();
    let tag = format!("tag{port}");
    let run = Running::start_arc(server.clone());
    let t = Instant::now();
    for _ in 0..CLIENTS {
        round_trip(
            server.server_address().unwrap(),
            format!("{tag}\n").as_bytes(),
        );
    }
    wait_until("every handler ran", || {
        server.stats().disconnects == CLIENTS as u64
    });
    let secs = t.elapsed().as_secs() as usize;
    run.stop().unwrap();
    assert!(server.server_close());
    let lines = captured_logs(&tag);
    assert!(
        !lines.is_empty() && lines.len() <= secs + 2,
        "{} lines in {secs} s: {lines:?}",
        lines.len()
    );
    assert!(
        lines.iter().all(|l| l.level == log::Level::Info),
        "{lines:?}"
    );
    let st = server.stats();
    assert_eq!((st.disconnects, st.errors), (CLIENTS as u64, 0), "{st:?}");
    let needle = format!("{CLIENTS} disconnects");
    let summary = captured_logs("log lines left out");
    assert!(
        summary.iter().any(|l| l.message.contains(&needle)
            && l.message
                .contains(&format!("{} disconnect(s)", CLIENTS - lines.len()))),
        "no summary with the totals: {summary:?}"
    );
}

#[test]
fn handler_errors_while_serving_are_each_logged_at_error() {
    captured_logs(""); // installs the logger
    let server = ThreadingTcpServer::builder()
        .bind("127.0.0.1:0", |req: &mut StreamRequest| {
            let mut line = String::new();
            req.rfile.read_line(&mut line)?;
            Err(io::Error::other(format!("bad request {}", line.trim())))
        })
        .unwrap();
    let addr = server.server_address().unwrap();
    let tag = format!("err{}", addr.port());
    let run = Running::start(server);
    for i in 0..5 {
        round_trip(addr, format!("{tag}-{i}\n").as_bytes());
    }
    wait_until("5 errors", || run.server.stats().errors == 5);
    let lines = captured_logs(&tag);
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert!(lines.iter().all(|l| l.level == log::Level::Error));
}

/// Reads lines and echoes them until the client closes: one long-lived client per worker.
fn ask(s: &mut std::net::TcpStream, msg: &str) -> String {
    s.write_all(msg.as_bytes()).unwrap();
    let mut line = String::new();
    io::BufReader::new(&*s).read_line(&mut line).unwrap();
    line
}

#[test]
fn by_default_no_accepted_connection_waits_for_a_worker_and_the_backlog_is_reported() {
    let server = ThreadingTcpServer::builder()
        .workers(1, 2)
        .bind("127.0.0.1:0", echo_lines)
        .unwrap();
    let addr = server.server_address().unwrap();
    let run = Running::start(server);
    let (mut a, mut b) = (connect(addr), connect(addr));
    assert_eq!(ask(&mut a, "a\n"), "a\n");
    assert_eq!(ask(&mut b, "b\n"), "b\n");
    // Two long-lived clients hold both workers; three more connect.
    let mut more: Vec<_> = (0..3).map(|_| connect(addr)).collect();
    for c in &mut more {
        c.write_all(b"c\n").unwrap();
    }
    let needle = format!("{addr}: 2 connection(s) open");
    wait_until("the backlog warning", || !captured_logs(&needle).is_empty());
    let warning = &captured_logs(&needle)[0];
    assert_eq!(warning.level, log::Level::Warn);
    assert!(
        warning
            .message
            .contains("3 more connection(s) wait in the listen backlog"),
        "{warning:?}"
    );
    let st = run.server.stats();
    assert_eq!((st.accepted, st.queued, st.saturated), (2, 0, 0), "{st:?}");
    drop(a); // a worker frees: the next one is accepted and served
    let mut line = String::new();
    io::BufReader::new(&more[0]).read_line(&mut line).unwrap();
    assert_eq!(line, "c\n");
}

#[test]
fn limits_that_let_accepted_connections_wait_for_a_worker_are_warned_about_at_build() {
    captured_logs(""); // installs the logger
    let _server = ThreadingTcpServer::builder()
        .workers(4, 7)
        .max_connections(Some(300))
        .bind("127.0.0.1:0", echo_lines)
        .unwrap();
    let lines = captured_logs("max_connections (300) is above the pool's maximum of 7 workers");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0].level, log::Level::Warn);
    assert!(
        lines[0]
            .message
            .contains("up to 293 accepted connection(s)"),
        "{lines:?}"
    );
    // The defaults are consistent: no warning.
    let _default = ThreadingTcpServer::builder()
        .workers(4, 9)
        .bind("127.0.0.1:0", echo_lines)
        .unwrap();
    assert!(captured_logs("maximum of 9 workers").is_empty());
}

#[test]
fn a_forced_close_with_a_full_queue_logs_a_line_not_one_per_request() {
    const QUEUED: usize = 20;
    captured_logs(""); // installs the logger
    let (tx, started) = crossbeam_channel::bounded(1);
    let server = Arc::new(
        ThreadingTcpServer::builder()
            .workers(1, 1)
            .max_connections(None)
            .read_timeout(None)
            .bind("127.0.0.1:0", move |req: &mut StreamRequest| {
                let _ = tx.send(());
                req.mark_busy();
                let mut line = String::new();
                req.rfile.read_line(&mut line).map(drop) // until the forced close
            })
            .unwrap(),
    );
    let addr = server.server_address().unwrap();
    let run = Running::start_arc(server.clone());
    let _busy = connect(addr);
    started.recv_timeout(LONG).unwrap();
    let _queued: Vec<_> = (0..QUEUED).map(|_| connect(addr)).collect();
    wait_until("all queued", || server.stats().queued == QUEUED);
    run.stop().unwrap();
    server.handle().force_close();
    assert!(!server.server_close());
    let st = server.stats();
    assert_eq!(st.dropped, QUEUED as u64, "{st:?}");
    let lines = captured_logs("closed the request from");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0].level, log::Level::Warn);
    let summary = captured_logs(&format!("{} dropped request(s)", QUEUED - 1));
    assert_eq!(summary.len(), 1, "no summary with the totals");
}

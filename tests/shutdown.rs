//! Shutdown and graceful drain: Python's `shutdown()` contract, without its polling,
//! deadlock and stale-flag bugs, plus a bounded drain on `server_close`.

mod util;

use std::io::{self, BufRead, Read, Write};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded};
use socketserver::*;
use util::*;

/// Runs `serve_forever` on a thread and reports when it returns.
fn serve_in_thread<T: Transport, M: Mode>(
    server: &Arc<Server<T, M>>,
) -> crossbeam_channel::Receiver<io::Result<()>> {
    let (tx, rx) = bounded(1);
    let s = server.clone();
    thread::spawn(move || {
        let _ = tx.send(s.serve_forever());
    });
    rx
}

fn shutdown_from_handler<M: Mode>() {
    let server = Arc::new(
        Server::<Tcp, M>::bind("127.0.0.1:0", |req: &mut StreamRequest| {
            req.server().shutdown();
            req.wfile.write_all(b"bye\n")
        })
        .unwrap(),
    );
    let addr = server.server_address().unwrap();
    let done = serve_in_thread(&server);
    assert_eq!(round_trip(addr, b"x"), b"bye\n");
    done.recv_timeout(LONG)
        .expect("serve_forever did not return after shutdown from a handler")
        .unwrap();
}

#[test]
fn shutdown_from_inside_a_sync_handler_does_not_deadlock() {
    shutdown_from_handler::<Synchronous>();
}

#[test]
fn shutdown_from_inside_a_threading_handler_returns() {
    shutdown_from_handler::<Threading>();
}

#[test]
fn shutdown_of_an_idle_server_is_prompt_idempotent_and_serving_resumes() {
    let server = Arc::new(ThreadingTcpServer::bind("127.0.0.1:0", echo_line).unwrap());
    let addr = server.server_address().unwrap();
    for round in 0..3 {
        let done = serve_in_thread(&server);
        wait_until("loop running", || server.handle().is_serving());
        assert_eq!(round_trip(addr, b"ping\n"), b"ping\n", "round {round}");
        let t = Instant::now();
        server.shutdown();
        let took = t.elapsed();
        done.recv_timeout(LONG).unwrap().unwrap();
        // The target is 100 ms (Python: up to 500 ms); asserted generously, the real
        // figure is in the benchmark.
        assert!(took < Duration::from_secs(1), "shutdown took {took:?}");
        server.shutdown(); // idempotent: no stale state for the next round
    }
}

#[test]
fn shutdown_of_a_sync_server_closes_the_keep_alive_connection_its_handler_waits_on() {
    // The handler runs on the serving thread, waiting for the client's next line: the loop
    // can return only once it ends. A read timeout longer than the test's waits, so that
    // only the shutdown can end it in time.
    let server = Arc::new(
        TcpServer::builder()
            .read_timeout(Some(LONG * 3))
            .bind("127.0.0.1:0", echo_lines)
            .unwrap(),
    );
    let addr = server.server_address().unwrap();
    for round in 0..2 {
        let done = serve_in_thread(&server);
        let mut r = io::BufReader::new(connect(addr));
        r.get_mut().write_all(b"hi\n").unwrap();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert_eq!(line, "hi\n", "round {round}");
        // Keep-alive: a second request on the connection (after a shutdown and a new
        // `serve_forever`, the drain that shutdown began is over).
        r.get_mut().write_all(b"again\n").unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
        assert_eq!(line, "again\n", "round {round}: keep-alive served");
        let (tx, stopped) = bounded(1);
        let s = server.clone();
        thread::spawn(move || {
            s.shutdown();
            let _ = tx.send(());
        });
        stopped
            .recv_timeout(LONG)
            .expect("shutdown() returned: the idle keep-alive connection was closed");
        done.recv_timeout(LONG).unwrap().unwrap();
        line.clear();
        assert_eq!(
            r.read_line(&mut line).unwrap_or(0),
            0,
            "the client sees end of file"
        );
    }
}

#[test]
fn handle_request_after_a_sync_shutdown_serves_keep_alive_connections() {
    let server = Arc::new(TcpServer::bind("127.0.0.1:0", echo_lines).unwrap());
    let addr = server.server_address().unwrap();
    let done = serve_in_thread(&server);
    wait_until("loop running", || server.handle().is_serving());
    server.shutdown();
    done.recv_timeout(LONG).unwrap().unwrap();
    // One request through `handle_request`: a keep-alive conversation, not cut after its
    // first reply by a drain that the shutdown began.
    let s = server.clone();
    let handled = thread::spawn(move || s.handle_request());
    let mut r = io::BufReader::new(connect(addr));
    for line in ["hi\n", "again\n"] {
        r.get_mut().write_all(line.as_bytes()).unwrap();
        let mut got = String::new();
        r.read_line(&mut got).unwrap();
        assert_eq!(got, line);
    }
    drop(r);
    assert!(matches!(handled.join().unwrap(), Ok(Handled::Request)));
}

#[test]
fn shutdown_before_serve_forever_makes_that_loop_return() {
    let server = ThreadingTcpServer::bind("127.0.0.1:0", echo_line).unwrap();
    server.shutdown();
    server.serve_forever().unwrap(); // returns at once instead of serving forever
}

#[test]
fn serve_forever_after_server_close_is_an_error() {
    let server = TcpServer::bind("127.0.0.1:0", echo_line).unwrap();
    server.server_close();
    assert!(server.serve_forever().is_err());
}

#[test]
fn second_concurrent_serve_forever_is_an_error() {
    let server = Arc::new(TcpServer::bind("127.0.0.1:0", echo_line).unwrap());
    let done = serve_in_thread(&server);
    wait_until("loop running", || server.handle().is_serving());
    assert!(server.serve_forever().is_err());
    server.shutdown();
    done.recv_timeout(LONG).unwrap().unwrap();
}

/// A handler that tells the test it started, then waits for the test's go-ahead.
fn gated_server(
    workers: usize,
    grace: Duration,
) -> (
    Arc<ThreadingTcpServer>,
    crossbeam_channel::Receiver<()>,
    crossbeam_channel::Sender<()>,
) {
    let (started_tx, started_rx) = unbounded();
    let (go_tx, go_rx) = unbounded::<()>();
    let server = ThreadingTcpServer::builder()
        .workers(workers, workers)
        // Connections beyond the workers wait in the queue (not the default).
        .max_connections(None)
        .shutdown_grace(grace)
        .bind("127.0.0.1:0", move |req: &mut StreamRequest| {
            let mut line = String::new();
            req.rfile.read_line(&mut line)?;
            let _ = started_tx.send(());
            let _ = go_rx.recv_timeout(LONG);
            req.wfile.write_all(format!("done {line}").as_bytes())
        })
        .unwrap();
    (Arc::new(server), started_rx, go_tx)
}

#[test]
fn in_flight_and_queued_requests_complete_during_graceful_drain() {
    let (server, started, go) = gated_server(1, LONG);
    let addr = server.server_address().unwrap();
    let done = serve_in_thread(&server);
    let mut a = connect(addr);
    a.write_all(b"a\n").unwrap();
    started.recv_timeout(LONG).unwrap();
    // The only worker is busy: b is accepted and waits in the queue.
    let mut b = connect(addr);
    b.write_all(b"b\n").unwrap();
    wait_until("b accepted", || server.stats().accepted == 2);

    server.shutdown();
    done.recv_timeout(LONG).unwrap().unwrap();
    let s = server.clone();
    let closing = thread::spawn(move || s.server_close());
    // Let both finish: a is released, then b runs on the freed worker.
    go.send(()).unwrap();
    started.recv_timeout(LONG).unwrap();
    go.send(()).unwrap();
    let (mut ra, mut rb) = (String::new(), String::new());
    a.read_to_string(&mut ra).unwrap();
    b.read_to_string(&mut rb).unwrap();
    assert_eq!((ra.as_str(), rb.as_str()), ("done a\n", "done b\n"));
    assert!(
        closing.join().unwrap(),
        "drain should finish within the grace period"
    );
    let st = server.stats();
    assert_eq!((st.served, st.dropped), (2, 0));
}

#[test]
fn handler_blocked_in_read_is_released_when_the_grace_period_ends() {
    let (tx, rx) = unbounded();
    let server = Arc::new(
        ThreadingTcpServer::builder()
            .read_timeout(None)
            .bind("127.0.0.1:0", move |req: &mut StreamRequest| {
                let _ = tx.send("reading");
                let mut buf = Vec::new();
                let r = req.rfile.read_to_end(&mut buf); // the client never sends
                let _ = tx.send(if r.is_ok() { "eof" } else { "error" });
                Ok(())
            })
            .unwrap(),
    );
    let addr = server.server_address().unwrap();
    let done = serve_in_thread(&server);
    let mut idle_client = connect(addr);
    assert_eq!(rx.recv_timeout(LONG).unwrap(), "reading");
    server.shutdown();
    done.recv_timeout(LONG).unwrap().unwrap();
    let t = Instant::now();
    let clean = server.server_close_timeout(Duration::from_millis(200));
    assert!(
        !clean,
        "the drain cannot be clean: the handler never finishes by itself"
    );
    assert!(t.elapsed() < LONG);
    assert!(
        rx.recv_timeout(LONG).is_ok(),
        "the handler was not released"
    );
    // The client sees the connection end.
    let mut buf = Vec::new();
    let _ = idle_client.read_to_end(&mut buf);
}

#[test]
fn force_close_drops_queued_requests_visibly_not_silently() {
    // The handler blocks reading its socket, which the forced close shuts down.
    let (started_tx, started) = unbounded();
    let server = Arc::new(
        ThreadingTcpServer::builder()
            .workers(1, 1)
            .max_connections(None) // b waits in the queue
            .bind("127.0.0.1:0", move |req: &mut StreamRequest| {
                let mut line = String::new();
                req.rfile.read_line(&mut line)?;
                let _ = started_tx.send(());
                req.rfile.read_line(&mut line)?; // the client never sends it
                req.wfile.write_all(b"unexpected")
            })
            .unwrap(),
    );
    let addr = server.server_address().unwrap();
    let done = serve_in_thread(&server);
    let mut a = connect(addr);
    a.write_all(b"a\n").unwrap();
    started.recv_timeout(LONG).unwrap();
    let mut b = connect(addr);
    b.write_all(b"b\n").unwrap();
    wait_until("b queued", || server.stats().queued == 1);
    server.handle().force_close();
    done.recv_timeout(LONG).unwrap().unwrap();
    assert!(!server.server_close(), "a forced close is not clean");
    for s in [&mut a, &mut b] {
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        assert!(out.is_empty(), "closed unanswered");
    }
    let st = server.stats();
    assert_eq!(st.dropped, 1, "the queued request is counted as dropped");
    assert_eq!(st.queued, 0);
}

#[test]
fn handle_request_times_out_and_calls_handle_timeout() {
    let (tx, rx) = unbounded();
    let server = TcpServer::builder()
        .timeout(Some(Duration::from_millis(50)))
        .handle_timeout(move |_| {
            let _ = tx.send(());
        })
        .bind("127.0.0.1:0", echo_line)
        .unwrap();
    assert_eq!(server.handle_request().unwrap(), Handled::Timeout);
    assert!(rx.try_recv().is_ok(), "handle_timeout was not called");
}

#[test]
fn handle_request_serves_exactly_one_request() {
    let server = Arc::new(
        TcpServer::builder()
            .timeout(Some(LONG))
            .bind("127.0.0.1:0", echo_line)
            .unwrap(),
    );
    let addr = server.server_address().unwrap();
    let client = thread::spawn(move || round_trip(addr, b"one\n"));
    assert_eq!(server.handle_request().unwrap(), Handled::Request);
    assert_eq!(client.join().unwrap(), b"one\n");
    assert_eq!(server.stats().served, 1);
}

#[test]
fn unbound_server_can_be_configured_then_bound_and_activated() {
    // Python's bind_and_activate=False.
    let server = TcpServer::builder()
        .build_unbound("127.0.0.1:0", echo_line)
        .unwrap();
    assert!(server.serve_forever().is_err(), "not activated yet");
    server.socket().unwrap().set_reuse_address(true).unwrap();
    server.server_bind().unwrap();
    assert_ne!(server.server_address().unwrap().port(), 0);
    server.server_activate().unwrap();
    let addr = server.server_address().unwrap();
    let _run = Running::start(server);
    assert_eq!(round_trip(addr, b"late\n"), b"late\n");
}

/// Connections the kernel completed before the close (the listen backlog) are served by
/// the drain, not reset when the listener closes: behind a load balancer they may already
/// carry a request that the proxy will not retry.
#[test]
fn connections_waiting_in_the_backlog_at_close_are_served_not_reset() {
    fn check<M: Mode>(server: Server<Tcp, M>) {
        let addr = server.server_address().unwrap();
        // Never served: every connection waits in the backlog, its request sent.
        let clients: Vec<std::net::TcpStream> = (0..8)
            .map(|i| {
                let mut c = connect(addr);
                writeln!(c, "queued {i}").unwrap();
                c
            })
            .collect();
        assert!(server.server_close(), "the drain finished");
        for (i, c) in clients.into_iter().enumerate() {
            let mut line = String::new();
            std::io::BufReader::new(c)
                .read_line(&mut line)
                .unwrap_or_else(|e| panic!("client {i} lost: {e}"));
            assert_eq!(line, format!("queued {i}\n"));
        }
    }
    check(ThreadingTcpServer::bind("127.0.0.1:0", || EchoLines).unwrap());
    check(EventedTcpServer::bind("127.0.0.1:0", || EchoLines).unwrap());
}

/// Echoes lines (a message handler, for the evented half of the test above).
struct EchoLines;

impl MessageHandler for EchoLines {
    fn handle(&mut self, ch: &mut Channel, msg: &[u8]) -> io::Result<()> {
        ch.push(msg);
        Ok(())
    }
}

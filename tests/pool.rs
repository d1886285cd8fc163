//! The threading mode's worker pool: bounded, elastic, fair, with an overload policy.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crossbeam_channel::unbounded;
use socketserver::*;
use util::*;

#[test]
fn serves_256_concurrent_long_lived_connections_with_defaults() {
    let server = ThreadingTcpServer::bind("127.0.0.1:0", echo_lines).unwrap();
    let addr = server.server_address().unwrap();
    let run = Running::start(server);
    let mut clients: Vec<(TcpStream, BufReader<TcpStream>)> = (0..256)
        .map(|_| {
            let s = connect(addr);
            let r = BufReader::new(s.try_clone().unwrap());
            (s, r)
        })
        .collect();
    // Two rounds: every connection stays open and keeps being served (no starvation).
    for round in 0..2 {
        for (i, (s, _)) in clients.iter_mut().enumerate() {
            writeln!(s, "c{i} r{round}").unwrap();
        }
        for (i, (_, r)) in clients.iter_mut().enumerate() {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            assert_eq!(line, format!("c{i} r{round}\n"), "connection {i} starved");
        }
    }
    let st = run.server.stats();
    assert_eq!(st.accepted, 256);
    assert!(st.workers <= 256);
}

/// A server whose handler reports its start and waits for a go-ahead, one per request.
fn gated(
    builder: socketserver::Builder<Tcp, Threading>,
) -> (
    ThreadingTcpServer,
    crossbeam_channel::Receiver<()>,
    crossbeam_channel::Sender<()>,
) {
    let (started_tx, started_rx) = unbounded();
    let (go_tx, go_rx) = unbounded::<()>();
    let server = builder
        .bind("127.0.0.1:0", move |req: &mut StreamRequest| {
            let _ = started_tx.send(());
            let _ = go_rx.recv_timeout(LONG);
            req.wfile.write_all(b"ok")
        })
        .unwrap();
    (server, started_rx, go_tx)
}

#[test]
fn reject_policy_closes_and_counts_connections_beyond_the_queue() {
    let (server, started, go) = gated(
        ThreadingTcpServer::builder()
            .workers(1, 1)
            // The queue's own behaviour: connections allowed beyond the workers.
            .max_connections(None)
            .queue_capacity(1)
            .overload(Overload::Reject),
    );
    let addr = server.server_address().unwrap();
    let run = Running::start(server);
    let mut running = connect(addr);
    started.recv_timeout(LONG).unwrap();
    let mut queued = connect(addr);
    wait_until("queued", || run.server.stats().queued == 1);
    let mut rejected = connect(addr);
    wait_until("rejected", || run.server.stats().rejected == 1);
    let mut buf = Vec::new();
    let _ = rejected.read_to_end(&mut buf);
    assert!(buf.is_empty(), "a rejected connection is closed unanswered");
    go.send(()).unwrap();
    go.send(()).unwrap();
    for s in [&mut running, &mut queued] {
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"ok");
    }
    assert_eq!(run.server.stats().dropped, 0);
}

#[test]
fn block_policy_leaves_excess_in_the_backlog_and_serves_everyone() {
    let (server, started, go) = gated(
        ThreadingTcpServer::builder()
            .workers(1, 1)
            .max_connections(None)
            .queue_capacity(1),
    );
    let addr = server.server_address().unwrap();
    let run = Running::start(server);
    let mut clients: Vec<TcpStream> = (0..6).map(|_| connect(addr)).collect();
    started.recv_timeout(LONG).unwrap();
    // One running, one queued: the rest wait in the kernel backlog, not accepted.
    wait_until("queue full", || run.server.stats().queued == 1);
    assert_eq!(run.server.stats().accepted, 2);
    for _ in 0..6 {
        go.send(()).unwrap();
    }
    for s in clients.iter_mut() {
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"ok");
    }
    let st = run.server.stats();
    assert_eq!((st.accepted, st.rejected), (6, 0));
}

#[test]
fn pool_grows_when_all_workers_are_busy_and_shrinks_after_keep_alive() {
    let (server, started, go) = gated(
        ThreadingTcpServer::builder()
            .workers(1, 8)
            .keep_alive(Duration::from_millis(50)),
    );
    let addr = server.server_address().unwrap();
    let run = Running::start(server);
    let mut clients: Vec<TcpStream> = (0..8).map(|_| connect(addr)).collect();
    for _ in 0..8 {
        started.recv_timeout(LONG).unwrap();
    }
    assert_eq!(
        run.server.stats().workers,
        8,
        "8 concurrent requests need 8 workers"
    );
    for _ in 0..8 {
        go.send(()).unwrap();
    }
    for s in clients.iter_mut() {
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
    }
    wait_until("idle workers retired to the minimum", || {
        run.server.stats().workers == 1
    });
}

#[test]
fn after_a_burst_the_pool_shrinks_back_even_under_a_steady_trickle_of_work() {
    // Keep-alive far beyond the test: only the spare-worker limit can shrink the pool.
    let (server, started, go) = gated(
        ThreadingTcpServer::builder()
            .workers(1, 16)
            .keep_alive(Duration::from_secs(3600))
            .max_spare_workers(2),
    );
    let addr = server.server_address().unwrap();
    let run = Running::start(server);
    let mut burst: Vec<TcpStream> = (0..16).map(|_| connect(addr)).collect();
    for _ in 0..16 {
        started.recv_timeout(LONG).unwrap();
    }
    assert_eq!(
        run.server.stats().workers,
        16,
        "a burst of 16 needs 16 workers"
    );
    for _ in 0..16 {
        go.send(()).unwrap();
    }
    for s in burst.iter_mut() {
        s.read_to_end(&mut Vec::new()).unwrap();
    }
    // A trickle of one request at a time, which touches the workers now and then.
    for _ in 0..20 {
        go.send(()).unwrap();
        assert_eq!(round_trip(addr, b""), b"ok");
    }
    wait_until("the pool back to 1 busy + 2 spare at most", || {
        run.server.stats().workers <= 3
    });
}

#[test]
fn requests_waiting_on_a_pool_busy_at_its_maximum_are_counted() {
    let (server, started, go) = gated(
        ThreadingTcpServer::builder()
            .workers(1, 2)
            // Not the default (which never lets a connection wait for a worker).
            .max_connections(None),
    );
    let addr = server.server_address().unwrap();
    let run = Running::start(server);
    let mut busy: Vec<TcpStream> = (0..2).map(|_| connect(addr)).collect();
    for _ in 0..2 {
        started.recv_timeout(LONG).unwrap();
    }
    assert_eq!(
        run.server.stats().saturated,
        0,
        "not saturated below the maximum"
    );
    busy.push(connect(addr)); // both workers busy: this one waits in the queue
    wait_until("the third request queued", || {
        run.server.stats().queued == 1
    });
    assert_eq!(run.server.stats().saturated, 1);
    for _ in 0..3 {
        go.send(()).unwrap();
    }
    for s in busy.iter_mut() {
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        assert_eq!(
            out, b"ok",
            "the waiting request is served once a worker frees"
        );
    }
}

#[test]
fn a_panic_on_every_other_request_leaves_the_others_answered() {
    let server = ThreadingTcpServer::builder()
        .workers(2, 2)
        .handle_error(|_, _| {})
        .bind("127.0.0.1:0", |req: &mut StreamRequest| {
            let mut line = String::new();
            req.rfile.read_line(&mut line)?;
            if line.trim().parse::<u32>().unwrap_or(0) % 2 == 1 {
                panic!("odd request");
            }
            req.wfile.write_all(line.as_bytes())
        })
        .unwrap();
    let addr = server.server_address().unwrap();
    let run = Running::start(server);
    for i in 0..40u32 {
        let out = round_trip(addr, format!("{i}\n").as_bytes());
        if i % 2 == 0 {
            assert_eq!(out, format!("{i}\n").as_bytes());
        }
    }
    wait_until("all counted", || run.server.stats().served == 40);
    let st = run.server.stats();
    assert_eq!(st.panics, 20);
    // Twenty panics on a pool of at most two workers: had a panic killed its worker, the
    // even requests above would have gone unanswered. The pool is also still whole.
    assert!(
        (1..=2).contains(&st.workers),
        "workers survive panics: {} worker(s)",
        st.workers
    );
    assert_eq!(round_trip(addr, b"2\n"), b"2\n");
}

//! Fault injection: hostile, broken and overwhelming clients against a threading TCP
//! server. Each test states the fault and what the server must do, checks that other
//! clients were served meanwhile, and counts requests on both sides so that nothing
//! accepted goes missing. (Descriptor exhaustion: `tests/emfile.rs`; hostile bytes on each
//! example protocol: `tests/example_*.rs`; the mixed soak: `tests/soak.rs`.)

mod util;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use socketserver::*;
use util::*;

/// One request, one reply on a connection of its own, within `wait`.
fn ask_once(addr: SocketAddr, msg: &[u8], wait: Duration) -> io::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&addr, wait)?;
    s.set_read_timeout(Some(wait))?;
    s.set_write_timeout(Some(wait))?;
    s.write_all(msg)?;
    let mut line = Vec::new();
    BufReader::new(&s).read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(line)
}

/// Fault: 200 connections trickle one byte a second and never finish a request (slowloris).
/// The server must keep answering normal clients promptly meanwhile, and the connection
/// deadline must end every trickler.
#[test]
fn slowloris_200_tricklers_do_not_starve_normal_clients_and_are_cut_off() {
    const TRICKLERS: usize = 200;
    let deadline = Duration::from_secs(3);
    let server = ThreadingTcpServer::builder()
        .connection_deadline(Some(deadline))
        .bind("127.0.0.1:0", echo_lines)
        .unwrap();
    let addr = server.server_address().unwrap();
    let run = Running::start(server);

    let mut slow: Vec<TcpStream> = (0..TRICKLERS).map(|_| connect(addr)).collect();
    wait_until("all tricklers accepted", || {
        run.server.stats().open >= TRICKLERS
    });
    let started = Instant::now();
    let mut normal_served = 0;
    let mut worst = Duration::ZERO;
    let mut cut_off = [false; TRICKLERS];
    // One byte a second from each trickler, for at most 10 s; normal clients in between.
    for _second in 0..10 {
        for (s, cut) in slow.iter_mut().zip(cut_off.iter_mut()) {
            if !*cut && s.write_all(b"x").is_err() {
                *cut = true;
            }
        }
        let tick = Instant::now();
        while tick.elapsed() < Duration::from_secs(1) {
            let t = Instant::now();
            let reply = ask_once(addr, b"normal\n", Duration::from_secs(10));
            assert_eq!(reply.unwrap(), b"normal\n", "a normal client was refused");
            worst = worst.max(t.elapsed());
            normal_served += 1;
            thread::sleep(Duration::from_millis(50));
        }
        if run.server.stats().deadline_expired >= TRICKLERS as u64 {
            break;
        }
    }
    let st = run.server.stats();
    assert_eq!(st.deadline_expired, TRICKLERS as u64, "{st:?}");
    assert!(started.elapsed() >= deadline);
    // Every trickler sees its connection end (EOF or reset), not a hang.
    for s in &mut slow {
        s.set_read_timeout(Some(LONG)).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        assert!(rest.is_empty(), "a trickler got a reply to half a line");
    }
    assert!(normal_served >= 10, "only {normal_served} normal requests");
    assert!(
        worst < Duration::from_secs(5),
        "a normal client waited {worst:?}"
    );
    eprintln!(
        "slowloris: {TRICKLERS} held and cut off after {deadline:?}; {normal_served} normal \
         requests served meanwhile, worst {worst:?}"
    );
}

/// Fault: a flood of connections far beyond `max_connections` (4) and the backlog (8).
/// Under `Block`, excess clients wait in the kernel (SYNs beyond the backlog are retried by
/// the client's TCP): every client is eventually served, and the server never holds more
/// than the limit.
#[test]
fn a_flood_beyond_max_connections_and_the_backlog_is_served_without_loss() {
    const CLIENTS: usize = 64;
    let server = ThreadingTcpServer::builder()
        .max_connections(Some(4))
        .backlog(8)
        .bind("127.0.0.1:0", echo_line)
        .unwrap();
    let addr = server.server_address().unwrap();
    let run = Running::start(server);
    let peak = Arc::new(AtomicU64::new(0));
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (server, peak, watching) = (run.server.clone(), peak.clone(), watching.clone());
        thread::spawn(move || {
            while watching.load(Ordering::SeqCst) {
                peak.fetch_max(server.stats().open as u64, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            thread::spawn(move || {
                let msg = format!("flood {i}\n");
                ask_once(addr, msg.as_bytes(), Duration::from_secs(30)).map(|r| r == msg.as_bytes())
            })
        })
        .collect();
    let ok = clients
        .into_iter()
        .map(|c| c.join())
        .filter(|r| matches!(r, Ok(Ok(true))))
        .count();
    watching.store(false, Ordering::SeqCst);
    watcher.join().unwrap();
    let st = run.server.stats();
    assert_eq!(ok, CLIENTS, "clients without a reply: {st:?}");
    assert_eq!(st.accepted, CLIENTS as u64);
    assert_eq!(st.rejected, 0);
    assert!(
        peak.load(Ordering::SeqCst) <= 4,
        "held {} at once",
        peak.load(Ordering::SeqCst)
    );
}

/// Fault: under `Reject`, the same flood is answered or refused at once — refused clients
/// see their connection closed, never a hang — and both sides agree on the counts.
#[test]
fn a_flood_under_reject_is_answered_or_refused_and_the_counts_agree() {
    const CLIENTS: usize = 64;
    let gate = Arc::new(parking_lot::Mutex::new(()));
    let hold = gate.lock();
    let g = gate.clone();
    let server = ThreadingTcpServer::builder()
        .max_connections(Some(4))
        .overload(Overload::Reject)
        .bind("127.0.0.1:0", move |req: &mut StreamRequest| {
            drop(g.lock()); // the first four wait here until the flood is over
            echo_line(req)
        })
        .unwrap();
    let addr = server.server_address().unwrap();
    let run = Running::start(server);
    let mut held: Vec<TcpStream> = (0..4).map(|_| connect(addr)).collect();
    wait_until("four held", || run.server.stats().open == 4);
    let mut refused = 0;
    for _ in 0..CLIENTS {
        match ask_once(addr, b"x\n", Duration::from_secs(10)) {
            Err(e) => {
                assert!(
                    e.kind() != io::ErrorKind::WouldBlock,
                    "a refused client hung"
                );
                refused += 1;
            }
            Ok(r) => panic!("served beyond the limit: {r:?}"),
        }
    }
    drop(hold);
    for s in &mut held {
        s.write_all(b"held\n").unwrap();
        let mut line = String::new();
        BufReader::new(&*s).read_line(&mut line).unwrap();
        assert_eq!(line, "held\n");
    }
    wait_until("counts settle", || run.server.stats().served == 4);
    let st = run.server.stats();
    assert_eq!(refused, CLIENTS);
    assert_eq!(st.rejected, CLIENTS as u64, "{st:?}");
    assert_eq!(st.accepted, CLIENTS as u64 + 4);
}

/// Fault: clients that reset their connection mid-request (`SO_LINGER` 0), half-close
/// before sending anything, or vanish after half a line. The server logs, closes its side,
/// and keeps serving everyone else; no connection stays open.
#[test]
fn resets_half_closes_and_vanishing_clients_do_not_disturb_others() {
    let server = ThreadingTcpServer::builder()
        .workers(1, 2)
        .handle_error(|_, _| {})
        .bind("127.0.0.1:0", echo_lines)
        .unwrap();
    let addr = server.server_address().unwrap();
    let run = Running::start(server);
    for i in 0..30 {
        let s = connect(addr);
        match i % 3 {
            0 => {
                // Reset mid-request: half a line, then RST.
                (&s).write_all(b"half a li").unwrap();
                let sock = socket2::SockRef::from(&s);
                sock.set_linger(Some(Duration::ZERO)).unwrap();
                drop(s);
            }
            1 => {
                // Half-close before sending anything: a clean, empty request.
                s.shutdown(Shutdown::Write).unwrap();
                let mut out = Vec::new();
                (&s).read_to_end(&mut out).unwrap();
                assert!(out.is_empty());
            }
            _ => {
                // Half a line, then gone (FIN).
                (&s).write_all(b"no newline").unwrap();
                drop(s);
            }
        }
        assert_eq!(round_trip(addr, b"still here\n"), b"still here\n");
    }
    wait_until("every connection closed", || {
        let st = run.server.stats();
        st.open == 0 && st.served == 60
    });
}

/// Fault: a client that sends requests but never reads the replies, until both socket
/// buffers are full. The write timeout must release the worker (the only one), which then
/// serves the next client.
#[test]
fn a_client_that_never_reads_is_released_by_the_write_timeout() {
    let errors = Arc::new(AtomicU64::new(0));
    let e = errors.clone();
    let server = ThreadingTcpServer::builder()
        .workers(1, 1)
        .write_timeout(Some(Duration::from_millis(500)))
        .send_buffer_size(64 * 1024)
        .handle_error(move |_, _| {
            e.fetch_add(1, Ordering::SeqCst);
        })
        .bind("127.0.0.1:0", |req: &mut StreamRequest| {
            // Each request line is answered with 1 MiB: a non-reader fills the buffers fast.
            let big = vec![b'z'; 1 << 20];
            let mut line = Vec::new();
            while req.rfile.read_until(b'\n', &mut line)? > 0 {
                if line == b"small\n" {
                    req.wfile.write_all(b"ok\n")?;
                } else {
                    req.wfile.write_all(&big)?;
                }
                line.clear();
            }
            Ok(())
        })
        .unwrap();
    let addr = server.server_address().unwrap();
    let run = Running::start(server);
    let hog = connect(addr);
    socket2::SockRef::from(&hog)
        .set_recv_buffer_size(4096)
        .unwrap();
    (&hog).write_all(b"big\nbig\nbig\n").unwrap();
    // The worker blocks writing to the hog, then its write times out; the next client,
    // queued behind it, is served.
    let t = Instant::now();
    assert_eq!(
        ask_once(addr, b"small\n", LONG).unwrap(),
        b"ok\n",
        "the queued client was never served"
    );
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    wait_until("the hog's handler failed", || {
        errors.load(Ordering::SeqCst) == 1
    });
    drop(hog);
    let st = run.server.stats();
    assert_eq!(
        (st.errors, st.timeouts),
        (0, 1),
        "a write timeout is counted as such"
    );
}

/// Fault: a handler that panics on every 10th request while 8 clients keep it busy. Every
/// other request is answered; the panics are counted; the pool is intact.
#[test]
fn a_handler_panicking_on_every_10th_request_under_load_loses_nothing_else() {
    const CLIENTS: u64 = 8;
    const EACH: u64 = 50;
    let server = ThreadingTcpServer::builder()
        .handle_error(|_, _| {})
        .bind("127.0.0.1:0", |req: &mut StreamRequest| {
            let mut line = String::new();
            req.rfile.read_line(&mut line)?;
            let n: u64 = line.trim().parse().unwrap_or(0);
            if n.is_multiple_of(10) {
                panic!("request {n}: every 10th panics");
            }
            req.wfile.write_all(line.as_bytes())
        })
        .unwrap();
    let addr = server.server_address().unwrap();
    let run = Running::start(server);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            thread::spawn(move || {
                let mut answered = 0u64;
                for i in 0..EACH {
                    let n = c * EACH + i + 1;
                    let msg = format!("{n}\n");
                    let out = round_trip(addr, msg.as_bytes());
                    if n.is_multiple_of(10) {
                        assert!(out.is_empty(), "a panicking request got {out:?}");
                    } else {
                        assert_eq!(out, msg.as_bytes());
                        answered += 1;
                    }
                }
                answered
            })
        })
        .collect();
    let answered: u64 = clients.into_iter().map(|c| c.join().unwrap()).sum();
    let total = CLIENTS * EACH;
    assert_eq!(answered, total - total / 10);
    wait_until("all counted", || run.server.stats().served == total);
    let st = run.server.stats();
    assert_eq!(st.panics, total / 10, "{st:?}");
    assert!(st.workers >= 1);
}

/// Fault: shutdown while 8 clients hammer the server with one-request connections. Every
/// connection the server accepted is answered within the grace period; clients that lost
/// the race see a refused or reset connection — and the two sides' counts agree exactly.
#[test]
fn shutdown_under_load_answers_every_accepted_request() {
    const CLIENTS: usize = 8;
    let replied = Arc::new(AtomicU64::new(0));
    let r = replied.clone();
    let server = ThreadingTcpServer::builder()
        .shutdown_grace(Duration::from_secs(20))
        .bind("127.0.0.1:0", move |req: &mut StreamRequest| {
            let mut line = Vec::new();
            req.rfile.read_until(b'\n', &mut line)?;
            thread::sleep(Duration::from_millis(2)); // some work in flight
            req.wfile.write_all(&line)?;
            r.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .unwrap();
    let addr = server.server_address().unwrap();
    let server = Arc::new(server);
    let serving = {
        let s = server.clone();
        thread::spawn(move || s.serve_forever())
    };
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let stop = stop.clone();
            thread::spawn(move || {
                let (mut ok, mut failed) = (0u64, 0u64);
                // Bounded: at most 100 000 attempts or until a few attempts after stop.
                let mut after_stop = 0;
                for i in 0..100_000u64 {
                    if stop.load(Ordering::SeqCst) {
                        after_stop += 1;
                        if after_stop > 20 {
                            break;
                        }
                    }
                    let msg = format!("{c}-{i}\n");
                    match ask_once(addr, msg.as_bytes(), LONG) {
                        Ok(r) => {
                            assert_eq!(r, msg.as_bytes());
                            ok += 1;
                        }
                        Err(_) => failed += 1,
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    wait_until("load running", || server.stats().served >= 200);
    server.shutdown();
    serving.join().unwrap().unwrap();
    assert!(server.server_close(), "the drain hit the grace period");
    stop.store(true, Ordering::SeqCst);
    let (ok, failed) = clients
        .into_iter()
        .map(|c| c.join().unwrap())
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    let st = server.stats();
    assert_eq!(
        ok,
        replied.load(Ordering::SeqCst),
        "a written reply never arrived"
    );
    assert_eq!(st.accepted, st.served, "accepted but never served: {st:?}");
    assert_eq!(st.accepted, ok, "accepted but unanswered: {st:?}");
    assert_eq!(st.dropped, 0);
    assert!(failed > 0, "no client ever saw the shutdown");
    eprintln!("shutdown under load: {ok} answered, {failed} refused after the listener closed");
}

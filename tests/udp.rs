//! Datagram servers: replies to the sender, truncation detected, no empty replies unless
//! asked, many clients on the pool.

mod util;

use std::io::{self, Write};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use parking_lot::Mutex;
use socketserver::*;
use util::*;

#[test]
fn an_oversized_datagram_is_reported_and_dropped_not_passed_on_cut() {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let e = errors.clone();
    let server = UdpServer::builder()
        .max_packet_size(100)
        .handle_error(move |_, err| e.lock().push(err.to_string()))
        .bind("127.0.0.1:0", echo_datagram)
        .unwrap();
    let addr = server.server_address().unwrap();
    let run = Running::start(server);
    let c = udp_client();
    c.send_to(&[7u8; 200], addr).unwrap();
    c.send_to(&[1u8; 100], addr).unwrap();
    let mut buf = [0u8; 300];
    let (n, _) = c.recv_from(&mut buf).unwrap();
    assert_eq!(n, 100, "only the datagram that fits is handled");
    let st = run.server.stats();
    assert_eq!(st.truncated, 1);
    let errs = errors.lock();
    assert_eq!(errs.len(), 1);
    assert!(errs[0].contains("max_packet_size"), "{errs:?}");
}

#[test]
fn the_default_max_packet_size_receives_a_maximal_ipv4_datagram_whole() {
    let server = UdpServer::bind("127.0.0.1:0", |req: &mut DatagramRequest| {
        let n = req.packet().len();
        req.wfile.write_all(n.to_string().as_bytes())
    })
    .unwrap();
    let addr = server.server_address().unwrap();
    let _run = Running::start(server);
    let c = udp_client();
    c.send_to(&vec![9u8; 65_507], addr).unwrap();
    let mut buf = [0u8; 16];
    let (n, _) = c.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"65507");
}

fn silent_then_marker(req: &mut DatagramRequest) -> io::Result<()> {
    if req.packet() == b"marker" {
        req.wfile.write_all(b"marker")?;
    }
    Ok(())
}

#[test]
fn no_empty_reply_datagram_is_sent_when_the_handler_wrote_nothing() {
    let server = UdpServer::bind("127.0.0.1:0", silent_then_marker).unwrap();
    let addr = server.server_address().unwrap();
    let _run = Running::start(server);
    let c = udp_client();
    c.send_to(b"quiet", addr).unwrap();
    c.send_to(b"marker", addr).unwrap();
    let mut buf = [0u8; 16];
    let (n, _) = c.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"marker", "an empty datagram arrived first");
}

#[test]
fn empty_datagram_reply_restores_pythons_behaviour() {
    let server = UdpServer::builder()
        .empty_datagram_reply(true)
        .bind("127.0.0.1:0", silent_then_marker)
        .unwrap();
    let addr = server.server_address().unwrap();
    let _run = Running::start(server);
    let c = udp_client();
    c.send_to(b"quiet", addr).unwrap();
    let mut buf = [0u8; 16];
    let (n, _) = c.recv_from(&mut buf).unwrap();
    assert_eq!(n, 0);
}

#[test]
fn threading_udp_answers_every_request_of_8_concurrent_clients() {
    let server = ThreadingUdpServer::bind("127.0.0.1:0", echo_datagram).unwrap();
    let addr = server.server_address().unwrap();
    let run = Running::start(server);
    let clients: Vec<_> = (0..8)
        .map(|c| {
            thread::spawn(move || {
                let s = udp_client();
                for i in 0..200 {
                    let msg = format!("{c}:{i}");
                    s.send_to(msg.as_bytes(), addr).unwrap();
                    let mut buf = [0u8; 64];
                    let (n, from) = s.recv_from(&mut buf).unwrap();
                    assert_eq!((&buf[..n], from), (msg.as_bytes(), addr));
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    wait_until("all served", || run.server.stats().served == 1600);
}

#[test]
fn handlers_can_reply_with_several_datagrams() {
    let server = UdpServer::bind("127.0.0.1:0", |req: &mut DatagramRequest| {
        req.reply(b"one")?;
        req.reply(b"two")?;
        req.wfile.write_all(b"three")
    })
    .unwrap();
    let addr = server.server_address().unwrap();
    let _run = Running::start(server);
    let c = udp_client();
    c.send_to(b"go", addr).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 16];
    for _ in 0..3 {
        let (n, _) = c.recv_from(&mut buf).unwrap();
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert_eq!(got, ["one", "two", "three"]);
}

#[test]
fn a_reply_beyond_max_packet_size_fails_the_handler_instead_of_growing() {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let e = errors.clone();
    let server = UdpServer::builder()
        .max_packet_size(1000)
        .handle_error(move |_, err| e.lock().push(err.to_string()))
        .bind("127.0.0.1:0", |req: &mut DatagramRequest| {
            if req.packet() == b"endless" {
                // A runaway handler: it is stopped at the limit, not by memory exhaustion.
                for _ in 0..1_000_000 {
                    req.wfile.write_all(&[b'x'; 100])?;
                }
                unreachable!("the reply buffer never filled up");
            }
            req.wfile.write_all(&[b'y'; 1000]) // exactly the limit is fine
        })
        .unwrap();
    assert_eq!(server.stats().errors, 0);
    let addr = server.server_address().unwrap();
    let run = Running::start(server);
    let c = udp_client();
    c.send_to(b"endless", addr).unwrap();
    c.send_to(b"fits", addr).unwrap();
    let mut buf = [0u8; 2000];
    // As in Python, `finish` sends what the failed handler wrote: the part that fitted.
    let (n, _) = c.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], &[b'x'; 1000][..]);
    let (n, _) = c.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], &[b'y'; 1000][..], "the next request is served");
    wait_until("the error is reported", || run.server.stats().errors == 1);
    let errs = errors.lock();
    assert!(errs[0].contains("max_packet_size (1000 bytes)"), "{errs:?}");
}

#[test]
fn threading_udp_runs_cheap_handlers_on_its_receivers_without_a_pool_hand_off() {
    // Sequential datagrams: a receiver is always free, so requests run on the receivers
    // themselves, not on pool workers (the hand-off cost twice the CPU of a recv loop).
    // At most a couple may reach the pool when receivers are preempted on a busy machine.
    let on_workers = Arc::new(Mutex::new(0u32));
    let w = on_workers.clone();
    let server = ThreadingUdpServer::bind("127.0.0.1:0", move |req: &mut DatagramRequest| {
        if thread::current().name() == Some("socketserver-worker") {
            *w.lock() += 1;
        }
        echo_datagram(req)
    })
    .unwrap();
    let addr = server.server_address().unwrap();
    let run = Running::start(server);
    let c = udp_client();
    let mut buf = [0u8; 64];
    for i in 0..200u32 {
        c.send_to(&i.to_le_bytes(), addr).unwrap();
        let (n, _) = c.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &i.to_le_bytes());
    }
    // `served` is counted just after the reply leaves.
    wait_until("all 200 counted", || run.server.stats().served == 200);
    let handed_off = *on_workers.lock();
    assert!(
        handed_off <= 2,
        "{handed_off} of 200 datagrams went through the pool"
    );
}

#[test]
fn threading_udp_keeps_receiving_while_every_receiver_is_blocked_in_a_handler() {
    // 4 receivers (the pool's minimum); 8 handlers block. The receivers hand what they
    // cannot run themselves to the pool, so a ninth datagram is still answered at once.
    let (gate_tx, gate_rx) = crossbeam_channel::unbounded::<()>();
    let (started_tx, started_rx) = crossbeam_channel::unbounded::<()>();
    let server = ThreadingUdpServer::builder()
        .workers(4, 16)
        .bind("127.0.0.1:0", move |req: &mut DatagramRequest| {
            if req.packet() == b"block" {
                let _ = started_tx.send(());
                let _ = gate_rx.recv_timeout(LONG);
            }
            let packet = req.packet().to_vec();
            req.wfile.write_all(&packet)
        })
        .unwrap();
    let addr = server.server_address().unwrap();
    let _run = Running::start(server);
    let blocked = udp_client();
    for _ in 0..8 {
        blocked.send_to(b"block", addr).unwrap();
    }
    for _ in 0..8 {
        started_rx
            .recv_timeout(LONG)
            .expect("8 handlers running at once");
    }
    let c = udp_client();
    c.send_to(b"fast", addr).unwrap();
    let mut buf = [0u8; 16];
    let (n, _) = c.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"fast", "answered while 8 handlers block");
    for _ in 0..8 {
        gate_tx.send(()).unwrap();
    }
    for _ in 0..8 {
        let (n, _) = blocked.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"block");
    }
}

#[test]
fn threading_udp_shutdown_and_close_are_prompt_while_a_handler_blocks_and_nothing_later_is_served()
{
    // Review findings: the serving thread must not run handlers (shutdown would wait for
    // them, and the grace period would not bound server_close), and receivers must take
    // nothing once shutdown() is asked.
    let (gate_tx, gate_rx) = crossbeam_channel::unbounded::<()>();
    let (started_tx, started_rx) = crossbeam_channel::unbounded::<()>();
    let served_after = Arc::new(Mutex::new(0u32));
    let s = served_after.clone();
    let server = Arc::new(
        ThreadingUdpServer::builder()
            .workers(2, 4)
            .bind("127.0.0.1:0", move |req: &mut DatagramRequest| {
                match req.packet() {
                    b"block" => {
                        let _ = started_tx.send(());
                        let _ = gate_rx.recv_timeout(LONG);
                    }
                    b"after" => *s.lock() += 1,
                    _ => {}
                }
                Ok(())
            })
            .unwrap(),
    );
    let addr = server.server_address().unwrap();
    let serving = {
        let s = server.clone();
        thread::spawn(move || s.serve_forever())
    };
    let c = udp_client();
    for _ in 0..4 {
        c.send_to(b"block", addr).unwrap();
    }
    for _ in 0..4 {
        started_rx
            .recv_timeout(LONG)
            .expect("four handlers blocked");
    }
    let t = std::time::Instant::now();
    server.shutdown(); // waits for serve_forever: not for the blocked handlers
    serving.join().unwrap().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        t.elapsed()
    );
    c.send_to(b"after", addr).unwrap();
    let t = std::time::Instant::now();
    assert!(
        !server.server_close_timeout(Duration::from_millis(100)),
        "handlers were still blocked"
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "server_close took {:?}",
        t.elapsed()
    );
    for _ in 0..4 {
        let _ = gate_tx.send(());
    }
    assert_eq!(
        *served_after.lock(),
        0,
        "a datagram sent after shutdown() was served"
    );
}

/// A handler whose drop panics: outside the pipeline's handler stages.
struct PanicsOnDrop;

impl DatagramRequestHandler for PanicsOnDrop {
    fn handle(&mut self, req: &mut DatagramRequest) -> io::Result<()> {
        let packet = req.packet().to_vec();
        req.wfile.write_all(&packet)
    }
}

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("drop panics");
    }
}

#[test]
fn threading_udp_receivers_survive_a_panic_outside_the_handler() {
    let server = ThreadingUdpServer::bind("127.0.0.1:0", || PanicsOnDrop).unwrap();
    let addr = server.server_address().unwrap();
    let run = Running::start(server);
    let c = udp_client();
    let mut buf = [0u8; 16];
    for i in 0..20u8 {
        c.send_to(&[i], addr).unwrap();
        let (n, _) = c.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &[i]);
    }
    wait_until("every request counted out", || {
        run.server.stats().active == 0
    });
    run.stop().unwrap();
}

/// Issue 16: a burst queued before the server runs is taken in `recvmmsg` batches: every
/// datagram is answered, to its own sender, in order per sender, and oversized ones among
/// them are each reported and dropped.
#[test]
fn a_queued_burst_with_oversized_datagrams_is_served_datagram_by_datagram() {
    let server = UdpServer::builder()
        .max_packet_size(100)
        .bind("127.0.0.1:0", echo_datagram)
        .unwrap();
    let addr = server.server_address().unwrap();
    let clients: Vec<_> = (0..4).map(|_| udp_client()).collect();
    // Queued while nobody receives: the first receive finds them all.
    for i in 0..60u32 {
        let c = &clients[i as usize % 4];
        if i % 7 == 3 {
            c.send_to(&[9u8; 150], addr).unwrap();
        } else {
            c.send_to(&i.to_le_bytes(), addr).unwrap();
        }
    }
    let run = Running::start(server);
    let mut buf = [0u8; 200];
    for (k, c) in clients.iter().enumerate() {
        for i in (0..60u32).filter(|i| *i as usize % 4 == k && i % 7 != 3) {
            let (n, from) = c.recv_from(&mut buf).unwrap();
            assert_eq!(from, addr);
            assert_eq!(&buf[..n], &i.to_le_bytes(), "client {k}");
        }
    }
    let oversized = (0..60u32).filter(|i| i % 7 == 3).count() as u64;
    wait_until("every datagram counted", || {
        let st = run.server.stats();
        st.truncated == oversized && st.served == 60 - oversized
    });
}

/// Issue 16: the receiver that leads takes datagrams in `recvmmsg` batches and runs their
/// handlers itself. When one handler blocks, the leadership — and the datagrams of the
/// batch not yet handled — go to another receiver (started on demand: the pool's minimum is
/// one here), so a datagram received in the same batch as the blocking one is answered
/// while it blocks, and so is one sent afterwards.
#[test]
fn threading_udp_answers_the_rest_of_a_batch_while_its_first_handler_blocks() {
    let (server, gate_tx, started_rx) = gated_echo_server((1, 4), LONG);
    let addr = server.server_address().unwrap();
    let blocked = udp_client();
    let c = udp_client();
    // Queued before the server runs: its first receive takes both.
    blocked.send_to(b"block", addr).unwrap();
    c.send_to(b"same batch", addr).unwrap();
    let run = Running::start(server);
    started_rx.recv_timeout(LONG).expect("the handler blocks");
    let mut buf = [0u8; 16];
    let (n, _) = c.recv_from(&mut buf).unwrap();
    assert_eq!(
        &buf[..n],
        b"same batch",
        "answered while the first handler blocks"
    );
    c.send_to(b"later", addr).unwrap();
    let (n, _) = c.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"later");
    gate_tx.send(()).unwrap();
    let (n, _) = blocked.recv_from(&mut buf).unwrap();
    assert_eq!(
        &buf[..n],
        b"block",
        "the blocked handler's reply is sent when it returns"
    );
    wait_until("all three served", || run.server.stats().served == 3);
    run.stop().unwrap();
}

/// Issue 16: when every receiver up to the pool's maximum is in a handler, datagrams wait
/// in the socket's buffer (none is lost), the saturation is counted, and they are served
/// as soon as a handler returns.
#[test]
fn threading_udp_at_its_maximum_keeps_datagrams_in_the_socket_until_a_handler_returns() {
    let (server, gate_tx, started_rx) = gated_echo_server((1, 2), LONG);
    let addr = server.server_address().unwrap();
    let run = Running::start(server);
    let blocked = udp_client();
    for _ in 0..2 {
        blocked.send_to(b"block", addr).unwrap();
    }
    for _ in 0..2 {
        started_rx.recv_timeout(LONG).expect("two handlers block");
    }
    let c = udp_client();
    c.send_to(b"waits", addr).unwrap();
    wait_until("the saturation is counted", || {
        run.server.stats().saturated >= 1
    });
    let mut buf = [0u8; 16];
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert!(
        c.recv_from(&mut buf).is_err(),
        "answered although both receivers were blocked"
    );
    c.set_read_timeout(Some(LONG)).unwrap();
    gate_tx.send(()).unwrap();
    let (n, _) = c.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"waits");
    gate_tx.send(()).unwrap();
    for _ in 0..2 {
        let (n, _) = blocked.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"block");
    }
    run.stop().unwrap();
}

/// Issue 16: `shutdown()` while the only receiver (the pool's maximum is one) blocks in a
/// handler, after the watchdog took its leadership: the datagrams received with it in the
/// same batch are still served once it returns, and a datagram sent after `shutdown()` is
/// not taken.
#[test]
fn threading_udp_serves_the_rest_of_its_batch_after_shutdown_but_nothing_sent_later() {
    let (gate_tx, gate_rx) = crossbeam_channel::unbounded::<()>();
    let (started_tx, started_rx) = crossbeam_channel::unbounded::<()>();
    let after = Arc::new(Mutex::new(0u32));
    let a = after.clone();
    let server = Arc::new(
        ThreadingUdpServer::builder()
            .workers(1, 1)
            .bind("127.0.0.1:0", move |req: &mut DatagramRequest| {
                match req.packet() {
                    b"block" => {
                        let _ = started_tx.send(());
                        let _ = gate_rx.recv_timeout(LONG);
                    }
                    b"after" => *a.lock() += 1,
                    _ => {}
                }
                let packet = req.packet().to_vec();
                req.wfile.write_all(&packet)
            })
            .unwrap(),
    );
    let addr = server.server_address().unwrap();
    let c = udp_client();
    // Queued before the server runs: one receive takes all four.
    for msg in [&b"block"[..], b"one", b"two", b"three"] {
        c.send_to(msg, addr).unwrap();
    }
    let serving = {
        let s = server.clone();
        thread::spawn(move || s.serve_forever())
    };
    started_rx.recv_timeout(LONG).expect("the handler blocks");
    // The watchdog has seen it blocked: the receiver lost its leadership (and, at the
    // maximum, no other could take it).
    wait_until("the saturation is counted", || {
        server.stats().saturated >= 1
    });
    server.shutdown();
    serving.join().unwrap().unwrap();
    c.send_to(b"after", addr).unwrap();
    gate_tx.send(()).unwrap();
    let mut buf = [0u8; 16];
    let mut got = Vec::new();
    for _ in 0..4 {
        let (n, _) = c.recv_from(&mut buf).unwrap();
        got.push(buf[..n].to_vec());
    }
    assert_eq!(got, [&b"block"[..], b"one", b"two", b"three"]);
    assert!(server.server_close_timeout(LONG), "the receiver was joined");
    assert_eq!(
        *after.lock(),
        0,
        "a datagram sent after shutdown() was served"
    );
}

/// Issue 16: the watchdog (the serving thread of a threading datagram server) ticks only
/// while datagrams flow: once they stop, it sleeps until the next one. Counted from the
/// serving thread's voluntary context switches (Linux `/proc`): at a 2 ms tick, 300 ms
/// would take about 150.
#[cfg(target_os = "linux")]
#[test]
fn threading_udp_watchdog_sleeps_while_no_datagram_arrives() {
    let server = Arc::new(ThreadingUdpServer::bind("127.0.0.1:0", echo_datagram).unwrap());
    let addr = server.server_address().unwrap();
    let (tid_tx, tid_rx) = crossbeam_channel::bounded(1);
    let serving = {
        let s = server.clone();
        thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            let _ = tid_tx.send(unsafe { libc::gettid() });
            s.serve_forever()
        })
    };
    let tid = tid_rx.recv_timeout(LONG).unwrap();
    let switches = || {
        let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap()
    };
    let c = udp_client();
    let mut buf = [0u8; 16];
    for i in 0..20u8 {
        c.send_to(&[i], addr).unwrap();
        let (n, _) = c.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &[i]);
    }
    // A few ticks after the last datagram, the watchdog goes to sleep.
    thread::sleep(Duration::from_millis(50));
    let before = switches();
    thread::sleep(Duration::from_millis(300));
    let woke = switches() - before;
    assert!(woke <= 5, "the idle watchdog woke {woke} times in 300 ms");
    // And it still wakes for the next datagram, and for shutdown.
    c.send_to(b"again", addr).unwrap();
    let (n, _) = c.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"again");
    server.shutdown();
    serving.join().unwrap().unwrap();
}

/// What a handler saw of its request on entry.
#[derive(Debug, PartialEq)]
struct Fresh {
    packet: Vec<u8>,
    position: u64,
    reply_len: usize,
    reply_limit: usize,
}

/// Issue 16: the servers that run datagrams on their receiving thread reuse one request
/// object from datagram to datagram. Each handler must still see a fresh request: its own
/// packet whole (not the longer one before it), `rfile` at the start, an empty `wfile`
/// bounded by `max_packet_size` — even when the previous handler replaced `rfile` and
/// `wfile` (they are public fields). Queued before the server runs, so that they share a
/// receive batch.
fn each_datagram_gets_a_fresh_request<M: Mode>() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let server = Server::<Udp, M>::builder()
        .max_packet_size(2048)
        .bind("127.0.0.1:0", move |req: &mut DatagramRequest| {
            s.lock().push(Fresh {
                packet: req.packet().to_vec(),
                position: req.rfile.position(),
                reply_len: req.wfile.len(),
                reply_limit: req.wfile.limit(),
            });
            if req.packet() == b"spoil" {
                req.rfile = io::Cursor::new(vec![b'x'; 100_000]);
                req.rfile.set_position(7);
                req.wfile = ReplyBuffer::new(3);
                return req.wfile.write_all(b"abc");
            }
            echo_datagram(req)
        })
        .unwrap();
    let addr = server.server_address().unwrap();
    let c = udp_client();
    let long = vec![b'L'; 1500];
    let sent: [&[u8]; 4] = [b"spoil", &long, b"s", b"next"];
    for p in sent {
        c.send_to(p, addr).unwrap();
    }
    let run = Running::start(server);
    let mut buf = [0u8; 4096];
    let replies: Vec<Vec<u8>> = (0..4)
        .map(|_| {
            let (n, _) = c.recv_from(&mut buf).unwrap();
            buf[..n].to_vec()
        })
        .collect();
    assert_eq!(
        replies,
        vec![
            b"abc".to_vec(),
            long.clone(),
            b"s".to_vec(),
            b"next".to_vec()
        ]
    );
    let seen = seen.lock();
    let expected: Vec<Fresh> = sent
        .iter()
        .map(|p| Fresh {
            packet: p.to_vec(),
            position: 0,
            reply_len: 0,
            reply_limit: 2048,
        })
        .collect();
    assert_eq!(*seen, expected);
    drop(seen);
    run.stop().unwrap();
}

#[test]
fn each_datagram_gets_a_fresh_request_on_a_synchronous_server() {
    each_datagram_gets_a_fresh_request::<Synchronous>();
}

#[test]
fn each_datagram_gets_a_fresh_request_on_a_threading_server() {
    each_datagram_gets_a_fresh_request::<Threading>();
}

/// Issue 16: replies of a batch leave together once the batch is done. When a handler in
/// the middle of it blocks, the replies queued before it go with the batch to the new
/// leader and leave at once — they do not wait for the blocked handler.
#[test]
fn threading_udp_sends_the_replies_queued_before_a_blocking_handler_while_it_blocks() {
    // The handler blocks longer than the client waits below: a reply held back until it
    // returns fails the test instead of arriving late.
    let (server, gate_tx, started_rx) = gated_echo_server((1, 4), 2 * LONG);
    let addr = server.server_address().unwrap();
    let (first, blocked) = (udp_client(), udp_client());
    // Queued before the server runs: its first receive takes both.
    first.send_to(b"first", addr).unwrap();
    blocked.send_to(b"block", addr).unwrap();
    let run = Running::start(server);
    started_rx.recv_timeout(LONG).expect("the handler blocks");
    let mut buf = [0u8; 16];
    let (n, _) = first
        .recv_from(&mut buf)
        .expect("the reply queued before the blocking handler is sent while it blocks");
    assert_eq!(&buf[..n], b"first");
    gate_tx.send(()).unwrap();
    let (n, _) = blocked.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"block");
    wait_until("both served", || run.server.stats().served == 2);
    run.stop().unwrap();
}

/// Issue 16 (review finding): a leader demoted with replies of its batch queued — here
/// with no receiver left to take over (`workers(1, 1)`) — and the server shut down before
/// its handler returns. Nobody leads any more: the queued replies must still leave (the
/// demoted leader sends them with its own, and a receiver leaving a finished run leads
/// once more while replies wait); none is dropped with the batch.
#[test]
fn threading_udp_sends_every_queued_reply_when_a_demoted_leader_returns_after_shutdown() {
    let (server, gate_tx, started_rx) = gated_echo_server((1, 1), LONG);
    let addr = server.server_address().unwrap();
    let (first, blocked) = (udp_client(), udp_client());
    first.send_to(b"first", addr).unwrap();
    blocked.send_to(b"block", addr).unwrap();
    let run = Running::start(server);
    started_rx.recv_timeout(LONG).expect("the handler blocks");
    // The watchdog demotes the leader and, at the maximum, counts the saturation.
    wait_until("the leader is demoted", || {
        run.server.stats().saturated >= 1
    });
    let server = run.server.clone();
    run.stop().unwrap();
    gate_tx.send(()).unwrap();
    let mut buf = [0u8; 16];
    let (n, _) = first
        .recv_from(&mut buf)
        .expect("the reply queued before the blocking handler is sent");
    assert_eq!(&buf[..n], b"first");
    let (n, _) = blocked.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"block");
    assert!(server.server_close_timeout(LONG), "the receiver finished");
}

/// A `ThreadingUdpServer` with `workers(min, max)` that echoes every datagram, except that a
/// handler given `block` first says so on the returned receiver, then waits until the
/// returned sender sends (or `wait` passes).
fn gated_echo_server(
    (min, max): (usize, usize),
    wait: Duration,
) -> (
    ThreadingUdpServer,
    crossbeam_channel::Sender<()>,
    crossbeam_channel::Receiver<()>,
) {
    let (gate_tx, gate_rx) = crossbeam_channel::unbounded::<()>();
    let (started_tx, started_rx) = crossbeam_channel::unbounded::<()>();
    let server = ThreadingUdpServer::builder()
        .workers(min, max)
        .bind("127.0.0.1:0", move |req: &mut DatagramRequest| {
            if req.packet() == b"block" {
                let _ = started_tx.send(());
                let _ = gate_rx.recv_timeout(wait);
            }
            echo_datagram(req)
        })
        .unwrap();
    (server, gate_tx, started_rx)
}

/// Issue 16: while it serves, a datagram server's receives wait in the kernel (the socket
/// blocking, with a receive timeout of about 2 ms) rather than in `poll(2)` and a receive; when
/// `serve_forever` returns, the socket is non-blocking again with the receive timeout it
/// had. Both modes (the threading one's leader receives the same way).
#[cfg(target_os = "linux")]
fn serving_leaves_the_socket_as_it_found_it<M: Mode>() {
    let server = Arc::new(
        Server::<Udp, M>::builder()
            .bind("127.0.0.1:0", echo_datagram)
            .unwrap(),
    );
    let sock = server.socket().unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(7))).unwrap();
    assert!(sock.nonblocking().unwrap(), "activated: non-blocking");
    let addr = server.server_address().unwrap();
    let serving = {
        let s = server.clone();
        thread::spawn(move || s.serve_forever())
    };
    let c = udp_client();
    let mut buf = [0u8; 16];
    c.send_to(b"ping", addr).unwrap();
    let (n, _) = c.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping");
    assert!(!sock.nonblocking().unwrap(), "serving: receives wait");
    // 2 ms, as the kernel keeps it (rounded up to its tick: 4 ms at HZ=250, 10 at 100).
    let wait = sock.read_timeout().unwrap().expect("a receive timeout");
    assert!(
        wait >= Duration::from_millis(2) && wait <= Duration::from_millis(10),
        "{wait:?}"
    );
    server.shutdown();
    serving.join().unwrap().unwrap();
    assert!(sock.nonblocking().unwrap(), "non-blocking again");
    assert_eq!(sock.read_timeout().unwrap(), Some(Duration::from_secs(7)));
    // A datagram sent after shutdown() returned was left in the socket: the next loop
    // serves it.
    c.send_to(b"later", addr).unwrap();
    assert_eq!(server.handle_request().unwrap(), Handled::Request);
    let (n, _) = c.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"later");
    server.server_close();
}

#[cfg(target_os = "linux")]
#[test]
fn a_sync_datagram_server_leaves_its_socket_as_it_found_it() {
    serving_leaves_the_socket_as_it_found_it::<Synchronous>();
}

#[cfg(target_os = "linux")]
#[test]
fn a_threading_datagram_server_leaves_its_socket_as_it_found_it() {
    serving_leaves_the_socket_as_it_found_it::<Threading>();
}

/// Issue 16: the watchdog's ticks carry 2 ms of timer slack (so that the kernel runs them
/// with an interrupt it takes anyway); the serving thread is the caller's, so its own
/// slack comes back when `serve_forever` returns.
#[cfg(target_os = "linux")]
#[test]
fn the_threading_udp_watchdog_sets_timer_slack_only_while_it_serves() {
    let server = Arc::new(ThreadingUdpServer::bind("127.0.0.1:0", echo_datagram).unwrap());
    let addr = server.server_address().unwrap();
    let (tid_tx, tid_rx) = crossbeam_channel::bounded(1);
    let serving = {
        let s = server.clone();
        thread::spawn(move || {
            // SAFETY: gettid and PR_GET_TIMERSLACK have no preconditions.
            let before = unsafe { libc::prctl(libc::PR_GET_TIMERSLACK) };
            let _ = tid_tx.send(unsafe { libc::gettid() });
            s.serve_forever().unwrap();
            (before, unsafe { libc::prctl(libc::PR_GET_TIMERSLACK) })
        })
    };
    let tid = tid_rx.recv_timeout(LONG).unwrap();
    let c = udp_client();
    let mut buf = [0u8; 16];
    c.send_to(b"ping", addr).unwrap();
    let (n, _) = c.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping");
    // Set when the watchdog starts (the receivers may serve a datagram before).
    let slack = || std::fs::read_to_string(format!("/proc/{tid}/timerslack_ns")).unwrap();
    wait_until("the watchdog's slack is 2 ms while serving", || {
        slack().trim() == "2000000"
    });
    server.shutdown();
    let (before, after) = serving.join().unwrap();
    assert_eq!(after, before, "the caller's slack is restored");
}

/// Issue 16: the threading server's leader may be waiting in a receive (a few ms) when
/// `shutdown()` is asked; `serve_forever` returns only once it no longer can take
/// anything, so a datagram sent after `shutdown()` returned is left in the socket.
#[cfg(target_os = "linux")]
#[test]
fn threading_udp_takes_nothing_sent_after_shutdown_returned_even_right_after_traffic() {
    let served_after = Arc::new(Mutex::new(0u32));
    let s = served_after.clone();
    let server = Arc::new(
        ThreadingUdpServer::builder()
            .timeout(Some(Duration::from_secs(5))) // handle_request's wait
            .bind("127.0.0.1:0", move |req: &mut DatagramRequest| {
                if req.packet() == b"after" {
                    *s.lock() += 1;
                }
                let packet = req.packet().to_vec();
                req.wfile.write_all(&packet)
            })
            .unwrap(),
    );
    let addr = server.server_address().unwrap();
    let c = udp_client();
    let mut buf = [0u8; 16];
    for round in 0..20 {
        let serving = {
            let s = server.clone();
            thread::spawn(move || s.serve_forever())
        };
        c.send_to(b"ping", addr).unwrap();
        let (n, _) = c.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");
        // Right after a datagram: the leader waits in its receive.
        server.shutdown();
        serving.join().unwrap().unwrap();
        c.send_to(b"after", addr).unwrap();
        // Left in the socket: this round's `handle_request` takes it (and no receiver did).
        assert_eq!(server.handle_request().unwrap(), Handled::Request);
        let (n, _) = c.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"after", "round {round}");
        wait_until("the pool ran the handler", || {
            *served_after.lock() == round + 1
        });
    }
    assert!(server.server_close_timeout(LONG));
    assert_eq!(*served_after.lock(), 20);
}

/// A `UdpServer` whose `max_packet_size` leaves room for 13 receive slots (4 MiB / 300 000
/// bytes): 65 datagrams queued before it runs.
fn queued_burst_server() -> (UdpServer, std::net::UdpSocket) {
    let server = UdpServer::builder()
        .max_packet_size(300_000)
        .bind("127.0.0.1:0", echo_datagram)
        .unwrap();
    let addr = server.server_address().unwrap();
    let c = udp_client();
    for i in 0..65u32 {
        c.send_to(&i.to_be_bytes(), addr).unwrap();
    }
    (server, c)
}

#[test]
fn a_synchronous_server_serves_the_rest_of_a_receive_batch_without_waiting_for_more() {
    // 64 datagrams per round of the serving loop, 13 per receive: the round ends inside a
    // batch, and the rest of it is served next (the socket, now empty, will not say so).
    let (server, c) = queued_burst_server();
    let run = Running::start(server);
    let mut buf = [0u8; 16];
    for got in 0..65 {
        assert!(
            c.recv(&mut buf).is_ok(),
            "{got} replies of 65 (served {})",
            run.server.stats().served
        );
    }
}

#[test]
fn shutdown_serves_the_datagrams_already_received_and_leaves_the_rest_in_the_socket() {
    let (server, _client) = queued_burst_server();
    let sock = server.socket().unwrap();
    let run = Running::start(server);
    // One round of the serving loop (64 datagrams) ends inside a receive batch: the stop
    // comes after it, with the rest of that batch received and not yet served.
    wait_until("64 served", || run.server.stats().served >= 64);
    let server = run.server.clone();
    run.stop().unwrap();
    let served = server.stats().served;
    let mut left = 0;
    let mut b = [std::mem::MaybeUninit::<u8>::uninit(); 16];
    while left < 65
        && sock
            .recv_from_with_flags(&mut b, libc::MSG_DONTWAIT)
            .is_ok()
    {
        left += 1;
    }
    assert_eq!(
        served + left,
        65,
        "served {served}, {left} left in the socket: the rest were lost"
    );
}

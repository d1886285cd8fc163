//! Datagram servers: replies to the sender, truncation detected, no empty replies unless
//! asked, many clients on the pool.

mod util;

use std::io::{self, Write};
use std::sync::Arc;
use std::thread;

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
    // Sequential datagrams: a receiver is always free, so no request reaches the pool and
    // the pool never starts a worker (the hand-off cost twice the CPU of a recv loop).
    let server = ThreadingUdpServer::bind("127.0.0.1:0", echo_datagram).unwrap();
    let addr = server.server_address().unwrap();
    let run = Running::start(server);
    let c = udp_client();
    let mut buf = [0u8; 64];
    for i in 0..200u32 {
        c.send_to(&i.to_le_bytes(), addr).unwrap();
        let (n, _) = c.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &i.to_le_bytes());
    }
    let st = run.server.stats();
    assert_eq!(st.served, 200);
    assert_eq!(st.workers, 0, "a datagram went through the pool: {st:?}");
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

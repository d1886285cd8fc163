//! Descriptor-leak tests (from CPython's `test_tcpserver_bind_leak` and
//! `test_context_manager`). They count `/proc/self/fd`, so they run alone in this test
//! binary, one at a time.

mod util;

use std::net::TcpStream;

use parking_lot::Mutex;
use socketserver::*;
use util::*;

static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn test_tcpserver_bind_leak() {
    // Issue #22435: a failing bind must not leak the socket. 192.0.2.1 (TEST-NET-1) is not
    // a local address, so bind fails with EADDRNOTAVAIL; no packet is sent.
    let _serial = SERIAL.lock();
    let before = open_fds();
    for _ in 0..1024 {
        assert!(TcpServer::bind("192.0.2.1:0", echo_line).is_err());
    }
    assert!(
        open_fds() <= before + 2,
        "fds leaked: {before} -> {}",
        open_fds()
    );
}

#[test]
fn test_drop_closes_socket() {
    // Python's test_context_manager: leaving the scope closes the listener.
    let _serial = SERIAL.lock();
    let before = open_fds();
    let addr = {
        let server = TcpServer::bind("127.0.0.1:0", echo_line).unwrap();
        server.server_address().unwrap()
    };
    assert!(
        TcpStream::connect(addr).is_err(),
        "listener still open after drop"
    );
    assert!(open_fds() <= before + 1);
}

#[test]
fn test_server_close_releases_every_descriptor_after_serving() {
    let _serial = SERIAL.lock();
    let before = open_fds();
    {
        let server = ThreadingTcpServer::bind("127.0.0.1:0", echo_line).unwrap();
        let addr = server.server_address().unwrap();
        let run = Running::start(server);
        for _ in 0..20 {
            assert_eq!(round_trip(addr, b"hi\n"), b"hi\n");
        }
        run.stop().unwrap();
    }
    assert_eq!(open_fds(), before, "descriptors leaked");
}

#[test]
fn threading_udp_server_close_joins_its_receivers_and_releases_every_descriptor() {
    let _serial = SERIAL.lock();
    let before = open_fds();
    {
        let server = ThreadingUdpServer::bind("127.0.0.1:0", echo_datagram).unwrap();
        let addr = server.server_address().unwrap();
        let run = Running::start(server);
        let c = udp_client();
        let mut buf = [0u8; 16];
        for i in 0..20u8 {
            c.send_to(&[i], addr).unwrap();
            assert_eq!(c.recv_from(&mut buf).unwrap().0, 1);
        }
        drop(c);
        // The receiver threads hold the socket: serve_forever's return tells them to go,
        // server_close (on drop) joins them.
        let server = run.server.clone();
        run.stop().unwrap();
        assert!(
            server.server_close(),
            "receivers not joined within the grace period"
        );
    }
    assert_eq!(open_fds(), before, "descriptors leaked");
}

//! `handle_request()` on a datagram server, Python's one-request call: it receives one
//! datagram and its reply has left when it returns. Alone in its binary: the threading UDP
//! tests in `udp.rs` count which thread ran each handler and are sensitive to CPU taken by
//! tests running beside them.

mod util;

use socketserver::*;
use util::*;

#[test]
fn handle_request_replies_before_it_returns_and_loses_no_queued_datagram() {
    // Python's `handle_request()`: one datagram, its reply sent. Two datagrams already
    // queued are two calls, two replies (a `recvmmsg` batch must not swallow the second).
    let server = UdpServer::bind("127.0.0.1:0", echo_datagram).unwrap();
    let addr = server.server_address().unwrap();
    let c = udp_client();
    c.send_to(b"first", addr).unwrap();
    c.send_to(b"second", addr).unwrap();
    let mut buf = [0u8; 64];
    for want in [&b"first"[..], b"second"] {
        assert_eq!(server.handle_request().unwrap(), Handled::Request);
        let (n, _) = c.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], want);
    }
}

//! `Stats` as users print and export it (issue 13.11): `Display` on one line, and
//! `serde::Serialize`.

mod util;

use socketserver::*;
use util::*;

#[test]
fn stats_display_on_one_line_and_serialize_every_field() {
    let server = ThreadingTcpServer::bind("127.0.0.1:0", echo_line).unwrap();
    let addr = server.server_address().unwrap();
    let run = Running::start(server);
    assert_eq!(round_trip(addr, b"hi\n"), b"hi\n");
    wait_until("served", || run.server.stats().served == 1);
    let st = run.server.stats();
    let line = st.to_string();
    assert!(!line.contains('\n'), "{line}");
    assert!(
        line.starts_with("1 accepted, 1 served, 0 errors, 0 timeouts, 0 disconnects, 0 panics"),
        "{line}"
    );
    assert!(
        line.contains("; open 0, active 0, queued 0, workers "),
        "{line}"
    );
    let json = serde_json::to_value(st).unwrap();
    assert_eq!(json["served"], 1);
    assert_eq!(json["timeouts"], 0);
    assert_eq!(json["workers"], st.workers);
}

#[test]
fn a_datagram_echo_the_python_way_compiles() {
    // Python: self.wfile.write(self.rfile.read()). Disjoint fields, so this compiles;
    // `req.wfile.write_all(req.packet())` does not (both borrow `req`): see the docs.
    let server = UdpServer::bind("127.0.0.1:0", |req: &mut DatagramRequest| {
        std::io::copy(&mut req.rfile, &mut req.wfile).map(drop)
    })
    .unwrap();
    let addr = server.server_address().unwrap();
    let _run = Running::start(server);
    let c = udp_client();
    c.send_to(b"ping", addr).unwrap();
    let mut buf = [0u8; 16];
    let n = c.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping");
}

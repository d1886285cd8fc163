//! Builder options reach the sockets they name (socket2 round trips), and the remaining
//! hooks run.

mod util;

use std::io::{self, Write};
use std::time::Duration;

use crossbeam_channel::unbounded;
use socketserver::*;
use util::*;

/// Runs one request and returns what the handler reported about its accepted socket.
fn accepted_socket_report(builder: Builder<Tcp, Synchronous>) -> String {
    let server = builder
        .bind("127.0.0.1:0", |req: &mut StreamRequest| {
            let s = req.connection().socket();
            let report = format!(
                "rcv={:?} snd={:?} nodelay={} keepalive={}",
                s.read_timeout()?,
                s.write_timeout()?,
                s.tcp_nodelay()?,
                s.keepalive()?
            );
            req.wfile.write_all(report.as_bytes())
        })
        .unwrap();
    let addr = server.server_address().unwrap();
    let _run = Running::start(server);
    String::from_utf8(round_trip(addr, b"")).unwrap()
}

#[test]
fn accepted_sockets_get_the_default_timeouts_and_nodelay() {
    assert_eq!(
        accepted_socket_report(TcpServer::builder()),
        "rcv=Some(300s) snd=Some(30s) nodelay=true keepalive=false"
    );
}

#[test]
fn accepted_socket_options_follow_the_builder() {
    let b = TcpServer::builder()
        .read_timeout(Some(Duration::from_secs(7)))
        .write_timeout(None)
        .nodelay(false)
        .keepalive(Some(Duration::from_secs(60)));
    assert_eq!(
        accepted_socket_report(b),
        "rcv=Some(7s) snd=None nodelay=false keepalive=true"
    );
}

#[test]
fn reuse_address_is_on_by_default_and_can_be_turned_off() {
    let on = TcpServer::bind("127.0.0.1:0", echo_line).unwrap();
    assert!(on.socket().unwrap().reuse_address().unwrap());
    let off = TcpServer::builder()
        .reuse_address(false)
        .bind("127.0.0.1:0", echo_line)
        .unwrap();
    assert!(!off.socket().unwrap().reuse_address().unwrap());
}

#[test]
fn reuse_port_lets_two_servers_share_a_port_only_when_asked() {
    let first = TcpServer::builder()
        .reuse_port(true)
        .bind("127.0.0.1:0", echo_line)
        .unwrap();
    let addr = first.server_address().unwrap();
    assert!(first.socket().unwrap().reuse_port().unwrap());
    let second = TcpServer::builder()
        .reuse_port(true)
        .bind(addr, echo_line)
        .expect("SO_REUSEPORT on both: the port is shared");
    drop(second);
    let err = TcpServer::bind(addr, echo_line).unwrap_err();
    assert_eq!(
        err.kind(),
        io::ErrorKind::AddrInUse,
        "the default must not share"
    );
}

#[test]
fn a_bind_error_names_the_address_and_keeps_its_kind() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = ThreadingTcpServer::bind(addr, echo_line).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("bind {addr}: ")) && msg.contains("os error"),
        "{msg}"
    );
}

#[test]
fn receive_buffer_size_is_applied() {
    let server = UdpServer::builder()
        .recv_buffer_size(256 * 1024)
        .bind("127.0.0.1:0", echo_datagram)
        .unwrap();
    // Linux doubles the value for bookkeeping; it is at least what was asked.
    assert!(server.socket().unwrap().recv_buffer_size().unwrap() >= 256 * 1024);
}

#[test]
fn ipv6_sockets_are_v6_only_unless_dual_stack() {
    let Ok(v6only) = TcpServer::bind("[::]:0", echo_line) else {
        eprintln!("no IPv6 here; skipped");
        return;
    };
    assert!(v6only.socket().unwrap().only_v6().unwrap());
    let port = v6only.server_address().unwrap().port();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "an IPv4 client reached a v6-only socket"
    );

    let dual = ThreadingTcpServer::builder()
        .dual_stack(true)
        .bind("[::]:0", echo_line)
        .unwrap();
    assert!(!dual.socket().unwrap().only_v6().unwrap());
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], dual.server_address().unwrap().port()));
    let _run = Running::start(dual);
    assert_eq!(round_trip(addr, b"v4 via v6\n"), b"v4 via v6\n");
}

#[test]
fn service_actions_run_on_the_configured_interval() {
    let (tx, rx) = unbounded();
    let server = TcpServer::builder()
        .service_interval(Duration::from_millis(10))
        .service_actions(move |h| {
            let _ = tx.send(h.is_serving());
        })
        .bind("127.0.0.1:0", echo_line)
        .unwrap();
    let _run = Running::start(server);
    // Idle server: the hook still runs, repeatedly, while serving.
    for _ in 0..3 {
        assert_eq!(rx.recv_timeout(LONG), Ok(true));
    }
}

#[test]
fn shared_state_reaches_handlers() {
    struct Greeting(&'static str);
    let server = ThreadingTcpServer::builder()
        .state(Greeting("hello from state"))
        .bind("127.0.0.1:0", |req: &mut StreamRequest| {
            let g = req.server().state::<Greeting>().map_or("none", |g| g.0);
            req.wfile.write_all(g.as_bytes())
        })
        .unwrap();
    let addr = server.server_address().unwrap();
    let _run = Running::start(server);
    assert_eq!(round_trip(addr, b""), b"hello from state");
}

#[test]
fn public_types_are_send_and_sync() {
    assert_send_sync::<ThreadingTcpServer>();
    assert_send_sync::<ForkingUdpServer>();
    assert_send_sync::<ServerHandle>();
    assert_send_sync::<Stats>();
    assert_send_sync::<prefork::PreforkHandle>();
    fn send<T: Send>() {}
    send::<StreamRequest>();
    send::<DatagramRequest>();
}

#[test]
fn rbufsize_sets_the_rfile_buffer_capacity() {
    for (builder, want) in [
        (TcpServer::builder(), 8 * 1024),
        (TcpServer::builder().rbufsize(64 * 1024), 64 * 1024),
    ] {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let server = builder
            .bind("127.0.0.1:0", move |req: &mut StreamRequest| {
                let _ = tx.send(req.rfile.capacity());
                Ok(())
            })
            .unwrap();
        let addr = server.server_address().unwrap();
        let _run = Running::start(server);
        round_trip(addr, b"");
        assert_eq!(rx.recv_timeout(LONG).unwrap(), want);
    }
}

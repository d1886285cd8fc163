//! The PROXY protocol (`Builder::proxy_protocol`): v1 and v2 headers in every stream mode,
//! the client's address as the handler and `verify_request` see it, and every way a header
//! can be wrong — none, garbage, cut short, too long, too slow, from an untrusted peer —
//! closing that connection only. Headers are built with the `ppp` crate, the one the server
//! parses with; HAProxy itself is driven in `tests/haproxy.rs`.

mod util;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ppp::v2;
use socketserver::{
    Channel, EventedTcpServer, ForkingTcpServer, MessageHandler, Mode, ProxyProtocol, Server, Tcp,
    TcpServer, ThreadingTcpServer,
};
use util::{LONG, Running, connect, wait_until};

/// Replies to each line with what the server knows of the connection:
/// `client=<addr> proxy=<addr|-> dst=<addr|-> v=<version> local=<bool> <line>`.
#[derive(Default)]
struct Who;

impl MessageHandler for Who {
    fn handle(&mut self, ch: &mut Channel, msg: &[u8]) -> io::Result<()> {
        let line = String::from_utf8_lossy(msg);
        let h = ch.proxy_header();
        let (proxy, dst, v, local) = match h {
            Some(h) => (
                h.proxy_address().to_string(),
                h.destination().map_or("-".into(), |d| d.to_string()),
                h.version(),
                h.is_local(),
            ),
            None => ("-".into(), "-".into(), 0, false),
        };
        let client = ch.client_address().to_string();
        write!(
            ch,
            "client={client} proxy={proxy} dst={dst} v={v} local={local} {line}"
        )
    }
}

fn v1(src: &str, dst: &str) -> Vec<u8> {
    let (s, d): (SocketAddr, SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
    let family = if s.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        s.ip(),
        d.ip(),
        s.port(),
        d.port()
    )
    .into_bytes()
}

fn v2_header(src: &str, dst: &str, tlvs: &[(v2::Type, &[u8])]) -> Vec<u8> {
    let (s, d): (SocketAddr, SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
    let mut b = v2::Builder::with_addresses(
        v2::Version::Two | v2::Command::Proxy,
        v2::Protocol::Stream,
        (s, d),
    );
    for (kind, value) in tlvs {
        b = b.write_tlv(*kind, value).unwrap();
    }
    b.build().unwrap()
}

/// Sends `header` and `body` in one write (as a proxy does, the client's first bytes right
/// behind the header), then reads one reply line.
fn ask(addr: SocketAddr, header: &[u8], body: &[u8]) -> String {
    let mut c = connect(addr);
    c.write_all(&[header, body].concat()).unwrap();
    let mut line = String::new();
    BufReader::new(&c).read_line(&mut line).unwrap();
    // A FIN even if a forked child of this test process holds a copy of this descriptor.
    let _ = c.shutdown(Shutdown::Both);
    line
}

/// The connection is closed by the server without a reply: EOF (or a reset) within `LONG`.
fn assert_closed_unanswered(mut c: TcpStream) {
    c.set_read_timeout(Some(LONG)).unwrap();
    let mut buf = Vec::new();
    match c.read_to_end(&mut buf) {
        Ok(_) => assert!(
            buf.is_empty(),
            "got a reply: {:?}",
            String::from_utf8_lossy(&buf)
        ),
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
    }
}

fn required<M: Mode>() -> Server<Tcp, M> {
    Server::<Tcp, M>::builder()
        .proxy_protocol(ProxyProtocol::Required)
        .bind("127.0.0.1:0", Who::default)
        .unwrap()
}

fn v1_and_v2_name_the_original_client<M: Mode>(server: Server<Tcp, M>) {
    let addr = server.server_address().unwrap();
    let running = Running::start(server);
    let reply = ask(addr, &v1("192.0.2.7:40001", "198.51.100.1:443"), b"one\n");
    assert!(
        reply.starts_with("client=192.0.2.7:40001 proxy=127.0.0.1:")
            && reply.ends_with("dst=198.51.100.1:443 v=1 local=false one\n"),
        "{reply}"
    );
    let header = v2_header("[2001:db8::7]:40002", "[2001:db8::1]:443", &[]);
    let reply = ask(addr, &header, b"two\n");
    assert!(
        reply.starts_with("client=[2001:db8::7]:40002 proxy=127.0.0.1:")
            && reply.ends_with("dst=[2001:db8::1]:443 v=2 local=false two\n"),
        "{reply}"
    );
    assert_eq!(running.server.stats().proxy_refused, 0);
    running.stop().unwrap();
}

#[test]
fn v1_and_v2_headers_name_the_original_client_in_synchronous_mode() {
    v1_and_v2_name_the_original_client(required::<socketserver::Synchronous>());
}

#[test]
fn v1_and_v2_headers_name_the_original_client_in_threading_mode() {
    v1_and_v2_name_the_original_client(required::<socketserver::Threading>());
}

#[test]
fn v1_and_v2_headers_name_the_original_client_in_forking_mode() {
    v1_and_v2_name_the_original_client(required::<socketserver::Forking>());
}

#[test]
fn v1_and_v2_headers_name_the_original_client_in_evented_mode() {
    v1_and_v2_name_the_original_client(required::<socketserver::Evented>());
}

#[test]
fn bytes_behind_the_header_reach_the_handler_whole_however_they_are_split() {
    // The header and the first lines split at every byte, in one mode of each kind.
    fn check<M: Mode>(server: Server<Tcp, M>) {
        let addr = server.server_address().unwrap();
        let _running = Running::start(server);
        let mut wire = v2_header("192.0.2.9:1234", "192.0.2.1:80", &[(v2::Type::NoOp, b"")]);
        let header_len = wire.len();
        wire.extend_from_slice(b"alpha\nbeta\n");
        for split in [1, 5, 15, 16, header_len - 1, header_len, header_len + 3] {
            let mut c = connect(addr);
            c.write_all(&wire[..split]).unwrap();
            c.flush().unwrap();
            std::thread::sleep(Duration::from_millis(5)); // two segments, not a signal
            c.write_all(&wire[split..]).unwrap();
            let mut r = BufReader::new(c);
            for word in ["alpha", "beta"] {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                assert!(
                    line.starts_with("client=192.0.2.9:1234 ")
                        && line.ends_with(&format!(" {word}\n")),
                    "split at {split}: {line}"
                );
            }
        }
    }
    check(required::<socketserver::Threading>());
    check(required::<socketserver::Evented>());
}

#[test]
fn a_v2_local_header_and_v1_unknown_keep_the_proxy_as_the_client() {
    fn check<M: Mode>(server: Server<Tcp, M>) {
        let addr = server.server_address().unwrap();
        let _running = Running::start(server);
        let local = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Local,
            v2::Protocol::Unspecified,
            v2::Addresses::Unspecified,
        )
        .build()
        .unwrap();
        let reply = ask(addr, &local, b"health\n");
        assert!(
            reply.starts_with("client=127.0.0.1:") && reply.contains(" v=2 local=true "),
            "{reply}"
        );
        let reply = ask(addr, b"PROXY UNKNOWN\r\n", b"x\n");
        assert!(
            reply.starts_with("client=127.0.0.1:") && reply.contains(" v=1 local=false "),
            "{reply}"
        );
    }
    check(required::<socketserver::Threading>());
    check(required::<socketserver::Evented>());
}

/// Replies with the header's authority, unique id and TLV types.
struct Tlvs;

impl MessageHandler for Tlvs {
    fn handle(&mut self, ch: &mut Channel, _msg: &[u8]) -> io::Result<()> {
        let h = ch.proxy_header().ok_or(io::ErrorKind::InvalidData)?;
        let kinds: Vec<String> = h
            .tlvs()
            .iter()
            .map(|t| format!("{:#04x}", t.kind))
            .collect();
        let (authority, id) = (
            h.authority().map(String::from),
            h.unique_id().map(<[u8]>::to_vec),
        );
        writeln!(ch, "{authority:?} {id:?} {}", kinds.join(","))
    }
}

#[test]
fn tlvs_reach_the_handler() {
    let server = EventedTcpServer::builder()
        .proxy_protocol(ProxyProtocol::Required)
        .bind("127.0.0.1:0", || Tlvs)
        .unwrap();
    let addr = server.server_address().unwrap();
    let _running = Running::start(server);
    let tlvs: [(v2::Type, &[u8]); 3] = [
        (v2::Type::Authority, b"example.com"),
        (v2::Type::UniqueId, b"u-1"),
        (v2::Type::NoOp, b"pad"),
    ];
    let header = v2_header("192.0.2.1:1", "192.0.2.2:2", &tlvs);
    assert_eq!(
        ask(addr, &header, b"?\n"),
        "Some(\"example.com\") Some([117, 45, 49]) 0x02,0x05\n"
    );
}

/// A server, and a well-behaved client served while each bad one is being refused.
fn refusals<M: Mode>(server: Server<Tcp, M>) {
    let addr = server.server_address().unwrap();
    let running = Running::start(server);
    let good = |tag: &str| {
        let reply = ask(
            addr,
            &v1("192.0.2.50:5000", "192.0.2.1:80"),
            format!("{tag}\n").as_bytes(),
        );
        assert!(
            reply.starts_with("client=192.0.2.50:5000 ") && reply.ends_with(&format!(" {tag}\n")),
            "{reply}"
        );
    };
    let mut expected = 0;
    let mut refused = |what: &str, bytes: &[u8], then_close: bool| {
        let mut c = connect(addr);
        c.write_all(bytes).unwrap();
        if then_close {
            c.shutdown(Shutdown::Write).unwrap();
        }
        good(what);
        assert_closed_unanswered(c);
        expected += 1;
        wait_until(&format!("{what} counted"), || {
            running.server.stats().proxy_refused == expected
        });
    };
    // No header at all: a client that talked to the server directly.
    refused("missing", b"hello there\n", false);
    // Garbage, binary.
    refused("garbage", &[0xff, 0x00, 0x13, 0x37, b'\n'], false);
    // A v1 header that is not one.
    refused(
        "malformed v1",
        b"PROXY TCP4 300.1.1.1 10.0.0.1 1 2\r\nhi\n",
        false,
    );
    // A v1 line that never ends within the spec's 107 bytes.
    refused(
        "overlong v1",
        &[b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat(),
        false,
    );
    // A v2 header declaring more than proxy_header_max (4 KiB).
    let mut big = v2_header("192.0.2.1:1", "192.0.2.2:2", &[]);
    big[14..16].copy_from_slice(&60_000u16.to_be_bytes());
    refused("oversized v2", &big, false);
    // Cut short: the client goes away inside its header.
    let cut = v2_header("192.0.2.1:1", "192.0.2.2:2", &[]);
    refused("truncated v2", &cut[..20], true);
    refused("truncated v1", b"PROXY TCP4 192.0.2.1 ", true);
    running.stop().unwrap();
}

#[test]
fn bad_headers_close_only_their_connection_in_synchronous_mode() {
    refusals(required::<socketserver::Synchronous>());
}

#[test]
fn bad_headers_close_only_their_connection_in_threading_mode() {
    refusals(required::<socketserver::Threading>());
}

#[test]
fn bad_headers_close_only_their_connection_in_evented_mode() {
    refusals(required::<socketserver::Evented>());
}

/// A slow loris: half a header, then nothing.
fn slow_loris(addr: SocketAddr) -> TcpStream {
    let mut slow = connect(addr);
    slow.write_all(b"PROXY TCP4 192.0.2.").unwrap();
    slow
}

/// Has the server closed `c` (EOF or reset now, without waiting)?
fn closed_now(c: &TcpStream) -> bool {
    c.set_nonblocking(true).unwrap();
    let r = c.peek(&mut [0u8; 1]);
    c.set_nonblocking(false).unwrap();
    !matches!(r, Err(ref e) if e.kind() == io::ErrorKind::WouldBlock)
}

#[test]
fn a_header_slower_than_its_deadline_is_closed_at_the_deadline() {
    fn check<M: Mode>(builder: socketserver::Builder<Tcp, M>) {
        let server = builder
            .proxy_protocol(ProxyProtocol::Required)
            .proxy_header_timeout(Duration::from_millis(300))
            .bind("127.0.0.1:0", Who::default)
            .unwrap();
        let addr = server.server_address().unwrap();
        let running = Running::start(server);
        let slow = slow_loris(addr);
        let started = Instant::now();
        // Threading: the slow one holds one of the two workers until its deadline; the
        // other worker serves meanwhile.
        let reply = ask(addr, &v1("192.0.2.51:1", "192.0.2.1:80"), b"fast\n");
        assert!(reply.ends_with(" fast\n"), "{reply}");
        assert_closed_unanswered(slow);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(250),
            "closed after {took:?}, before its deadline"
        );
        assert!(took < Duration::from_secs(5), "closed only after {took:?}");
        wait_until("the late header counted", || {
            running.server.stats().proxy_refused == 1
        });
    }
    check(ThreadingTcpServer::builder().workers(2, 2));
    check(EventedTcpServer::builder().workers(2, 2));
}

#[test]
fn in_evented_mode_slow_headers_hold_no_thread() {
    // More slow lorises than the reactor has threads (2): were a header's wait to hold a
    // thread, the fast client would be answered only once they are closed, at the deadline.
    let server = EventedTcpServer::builder()
        .workers(2, 2)
        .proxy_protocol(ProxyProtocol::Required)
        .proxy_header_timeout(Duration::from_secs(10))
        .bind("127.0.0.1:0", Who::default)
        .unwrap();
    let addr = server.server_address().unwrap();
    let _running = Running::start(server);
    let slow: Vec<TcpStream> = (0..8).map(|_| slow_loris(addr)).collect();
    let reply = ask(addr, &v1("192.0.2.52:1", "192.0.2.1:80"), b"fast\n");
    assert!(reply.ends_with(" fast\n"), "{reply}");
    assert!(
        slow.iter().all(|c| !closed_now(c)),
        "answered only after the slow ones went"
    );
}

#[test]
fn peers_outside_the_trusted_networks_are_refused_before_a_byte_is_read() {
    let server = ThreadingTcpServer::builder()
        .proxy_protocol(ProxyProtocol::trusted(["10.0.0.0/8", "192.168.0.1"]).unwrap())
        .bind("127.0.0.1:0", Who::default)
        .unwrap();
    let addr = server.server_address().unwrap();
    let running = Running::start(server);
    let mut c = connect(addr);
    // Refused at the accept: the connection may be closed (reset) before these writes.
    let _ = c.write_all(&v1("192.0.2.60:1", "192.0.2.1:80"));
    let _ = c.write_all(b"spoofed\n");
    assert_closed_unanswered(c);
    wait_until("the untrusted peer counted", || {
        running.server.stats().proxy_refused == 1
    });
    running.stop().unwrap();

    // Loopback trusted: served.
    let server = EventedTcpServer::builder()
        .proxy_protocol(ProxyProtocol::trusted(["127.0.0.0/8"]).unwrap())
        .bind("127.0.0.1:0", Who::default)
        .unwrap();
    let addr = server.server_address().unwrap();
    let _running = Running::start(server);
    assert!(
        ask(addr, &v1("192.0.2.61:1", "192.0.2.1:80"), b"ok\n").starts_with("client=192.0.2.61:1 ")
    );
}

#[test]
fn trusted_networks_parse_addresses_and_networks_and_refuse_garbage() {
    assert!(ProxyProtocol::trusted(["10.0.0.0/8", "::1", "fd00::/8"]).is_ok());
    assert!(ProxyProtocol::trusted(["10.0.0.0/33"]).is_err());
    assert!(ProxyProtocol::trusted(["proxy.example"]).is_err());
}

#[test]
fn verify_request_judges_the_proxied_client_not_the_proxy() {
    fn check<M: Mode>(builder: socketserver::Builder<Tcp, M>) {
        let server = builder
            .proxy_protocol(ProxyProtocol::Required)
            // The proxy is 127.0.0.1: judging it would let everyone in.
            .verify_request(|addr| addr.as_inet().is_some_and(|a| a.ip().is_loopback()))
            .bind("127.0.0.1:0", Who::default)
            .unwrap();
        let addr = server.server_address().unwrap();
        let running = Running::start(server);
        let mut c = connect(addr);
        c.write_all(&v1("203.0.113.9:999", "192.0.2.1:80")).unwrap();
        c.write_all(b"let me in\n").unwrap();
        assert_closed_unanswered(c);
        // A forked child's counters stay in the child.
        if std::any::type_name::<M>() != std::any::type_name::<socketserver::Forking>() {
            wait_until("the refusal counted", || {
                running.server.stats().refused == 1
            });
        }
        let reply = ask(addr, &v1("127.0.0.5:999", "192.0.2.1:80"), b"local\n");
        assert!(reply.starts_with("client=127.0.0.5:999 "), "{reply}");
        assert_eq!(running.server.stats().proxy_refused, 0);
    }
    check(TcpServer::builder());
    check(ThreadingTcpServer::builder());
    check(ForkingTcpServer::builder());
    check(EventedTcpServer::builder());
}

#[test]
fn a_unix_stream_server_takes_headers_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pp.sock");
    let server = socketserver::EventedUnixStreamServer::builder()
        .proxy_protocol(ProxyProtocol::Required)
        .bind(&path, Who::default)
        .unwrap();
    let _running = Running::start(server);
    let mut c = std::os::unix::net::UnixStream::connect(&path).unwrap();
    c.set_read_timeout(Some(LONG)).unwrap();
    c.write_all(&[v1("192.0.2.70:7", "192.0.2.1:80"), b"unix\n".to_vec()].concat())
        .unwrap();
    let mut line = String::new();
    BufReader::new(c).read_line(&mut line).unwrap();
    assert!(
        line.starts_with("client=192.0.2.70:7 proxy=(unnamed) "),
        "{line}"
    );
}

#[test]
fn without_the_option_a_header_is_just_bytes() {
    let server = ThreadingTcpServer::bind("127.0.0.1:0", Who::default).unwrap();
    let addr = server.server_address().unwrap();
    let _running = Running::start(server);
    let reply = ask(addr, b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n", b"");
    assert!(
        reply.starts_with("client=127.0.0.1:") && reply.contains("proxy=- "),
        "{reply}"
    );
}

#[cfg(feature = "ctrlc")]
#[test]
fn prefork_proxy_child() {
    if !util::is_child() {
        return;
    }
    util::init_stderr_log();
    let port = util::free_tcp_addr().port();
    let prefork = socketserver::prefork::Prefork::new(2);
    socketserver::shutdown_on_ctrl_c([prefork.handle()]).unwrap();
    println!("PORT {port}");
    prefork
        .run(("127.0.0.1", port), |listener| {
            EventedTcpServer::builder()
                .proxy_protocol(ProxyProtocol::Required)
                .from_socket(listener, Who::default)
        })
        .unwrap();
}

#[cfg(feature = "ctrlc")]
#[test]
fn prefork_workers_read_the_header_too() {
    let mut parent = util::spawn_self("prefork_proxy_child");
    let addr = SocketAddr::from(([127, 0, 0, 1], parent.port()));
    // Each of a few connections lands on one of the workers; every one reads the header.
    let deadline = Instant::now() + LONG;
    let mut answered = 0;
    while answered < 4 {
        assert!(Instant::now() < deadline, "the workers never answered");
        let Ok(mut c) = TcpStream::connect(addr) else {
            std::thread::sleep(Duration::from_millis(10)); // not listening yet
            continue;
        };
        c.set_read_timeout(Some(LONG)).unwrap();
        c.write_all(&[v1("192.0.2.80:8080", "192.0.2.1:80"), b"pre\n".to_vec()].concat())
            .unwrap();
        let mut line = String::new();
        BufReader::new(c).read_line(&mut line).unwrap();
        assert!(line.starts_with("client=192.0.2.80:8080 "), "{line}");
        answered += 1;
    }
    parent.signal(libc::SIGINT);
    assert_eq!(parent.wait_exit(), Some(0));
}

#[test]
fn without_a_read_timeout_the_header_deadline_does_not_stay_on_the_socket() {
    let server = ThreadingTcpServer::builder()
        .proxy_protocol(ProxyProtocol::Required)
        .proxy_header_timeout(Duration::from_millis(200))
        .read_timeout(None)
        .bind("127.0.0.1:0", Who::default)
        .unwrap();
    let addr = server.server_address().unwrap();
    let _running = Running::start(server);
    let mut c = BufReader::new(connect(addr));
    c.get_mut()
        .write_all(&v1("192.0.2.90:1", "192.0.2.1:80"))
        .unwrap();
    c.get_mut().write_all(b"first\n").unwrap();
    let mut line = String::new();
    c.read_line(&mut line).unwrap();
    assert!(line.ends_with(" first\n"), "{line}");
    // Longer than the header's deadline between two requests: still served.
    std::thread::sleep(Duration::from_millis(500));
    c.get_mut().write_all(b"second\n").unwrap();
    line.clear();
    c.read_line(&mut line).unwrap();
    assert!(line.ends_with(" second\n"), "{line}");
}

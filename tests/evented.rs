//! The evented mode: message handlers served from a readiness loop. Each test names the
//! behaviour it proves; all traffic on loopback, every wait bounded.

mod util;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use socketserver::framing::{Framing, MessageFraming};
use socketserver::{
    Channel, ChannelHandle, EventedTcpServer, MessageHandler, Server, StreamRequest, Tcp,
    ThreadingTcpServer,
};
use util::{LONG, Running, connect, round_trip};

/// Echoes every message back.
#[derive(Default)]
struct Echo;

impl MessageHandler for Echo {
    fn handle(&mut self, ch: &mut Channel, msg: &[u8]) -> io::Result<()> {
        ch.push(msg);
        Ok(())
    }
}

/// Numbers the lines of its connection: state lives as long as the connection.
#[derive(Default)]
struct Numbered(u64);

impl MessageHandler for Numbered {
    fn handle(&mut self, ch: &mut Channel, msg: &[u8]) -> io::Result<()> {
        self.0 += 1;
        write!(ch, "{} ", self.0)?;
        ch.push(msg);
        Ok(())
    }
}

fn evented<H: MessageHandler>(
    make: impl Fn() -> H + Send + Sync + 'static,
) -> Running<Tcp, socketserver::Evented> {
    let server = EventedTcpServer::builder()
        .bind("127.0.0.1:0", make)
        .expect("bind");
    Running::start(server)
}

fn read_line(r: &mut BufReader<TcpStream>) -> String {
    let mut s = String::new();
    r.read_line(&mut s).expect("read_line");
    s
}

#[test]
fn evented_echo_serves_lines_and_keeps_handler_state_per_connection() {
    let srv = evented(Numbered::default);
    let addr = srv.server.server_address().unwrap();
    let a = connect(addr);
    let b = connect(addr);
    let (mut ra, mut rb) = (
        BufReader::new(a.try_clone().unwrap()),
        BufReader::new(b.try_clone().unwrap()),
    );
    (&a).write_all(b"x\n").unwrap();
    (&b).write_all(b"y\n").unwrap();
    (&a).write_all(b"z\n").unwrap();
    assert_eq!(read_line(&mut ra), "1 x\n");
    assert_eq!(read_line(&mut ra), "2 z\n");
    assert_eq!(read_line(&mut rb), "1 y\n");
    // A last line without a newline is delivered at the peer's end of stream.
    assert_eq!(round_trip(addr, b"a\nb"), b"1 a\n2 b");
}

#[test]
fn a_message_handler_runs_unchanged_in_threading_mode() {
    let server = ThreadingTcpServer::bind("127.0.0.1:0", Numbered::default).unwrap();
    let srv = Running::start(server);
    let addr = srv.server.server_address().unwrap();
    assert_eq!(round_trip(addr, b"a\nb\nc"), b"1 a\n2 b\n3 c");
}

#[test]
fn a_stream_request_handler_is_refused_by_the_evented_mode_with_a_clear_error() {
    let err = EventedTcpServer::bind("127.0.0.1:0", |_req: &mut StreamRequest| Ok(())).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("MessageHandler"), "{err}");
}

#[test]
fn python_frames_are_cut_at_every_byte_boundary_and_coalesced() {
    struct Upper;
    impl MessageHandler for Upper {
        fn handle(&mut self, ch: &mut Channel, msg: &[u8]) -> io::Result<()> {
            Framing::python().write_frame(ch, &msg.to_ascii_uppercase())
        }
    }
    let server = EventedTcpServer::builder()
        .framing(MessageFraming::Frames(Framing::python()))
        .bind("127.0.0.1:0", || Upper)
        .unwrap();
    let srv = Running::start(server);
    let addr = srv.server.server_address().unwrap();
    let mut wire = Vec::new();
    for m in [&b"hello"[..], b"", b"sticky packets"] {
        Framing::python().write_frame(&mut wire, m).unwrap();
    }
    let mut expected = Vec::new();
    for m in [&b"HELLO"[..], b"", b"STICKY PACKETS"] {
        Framing::python().write_frame(&mut expected, m).unwrap();
    }
    for cut in 0..=wire.len() {
        let mut s = connect(addr);
        s.set_nodelay(true).unwrap();
        s.write_all(&wire[..cut]).unwrap();
        s.flush().unwrap();
        // Give the first part a chance to arrive alone (correctness does not depend on it).
        thread::sleep(Duration::from_millis(1));
        s.write_all(&wire[cut..]).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        assert_eq!(got, expected, "split at byte {cut}");
    }
}

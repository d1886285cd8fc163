//! Taking a message connection over in blocking mode (`Channel::take_over` +
//! `MessageHandler::handle_blocking`), then handing it back to framing: in evented mode and,
//! through the blocking adapter, in a classic mode. All traffic on loopback, every wait
//! bounded.

mod util;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use socketserver::{
    BlockingStream, Channel, EventedTcpServer, MessageHandler, Mode, Server, Tcp,
    ThreadingTcpServer,
};
use util::{LONG, Running, connect, round_trip};

/// `BODY n\n` is followed by n raw bytes (summed as they stream in, never held whole);
/// `LINE\n` is followed by one line read in blocking mode; anything else is echoed.
#[derive(Default)]
struct Sink {
    want: u64,
    line: bool,
}

impl MessageHandler for Sink {
    fn handle(&mut self, ch: &mut Channel, msg: &[u8]) -> io::Result<()> {
        let text = std::str::from_utf8(msg).unwrap_or("");
        if let Some(n) = text.trim().strip_prefix("BODY ") {
            self.want = n.parse().map_err(|_| io::ErrorKind::InvalidData)?;
            self.line = false;
            // Queued before the take-over: must reach the peer before what it writes.
            writeln!(ch, "ready {}", self.want)?;
            ch.take_over();
        } else if text == "LINE\n" {
            self.line = true;
            ch.take_over();
        } else {
            ch.push(msg);
        }
        Ok(())
    }

    fn handle_blocking(
        &mut self,
        _ch: &mut Channel,
        stream: &mut BlockingStream<'_>,
    ) -> io::Result<()> {
        if self.line {
            let mut line = String::new();
            stream.read_line(&mut line)?;
            return write!(stream, "line {line}");
        }
        let (mut sum, mut got) = (0u64, 0u64);
        let mut buf = [0u8; 8192];
        while got < self.want {
            let room = buf.len().min((self.want - got) as usize);
            let n = stream.read(&mut buf[..room])?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            sum = buf[..n]
                .iter()
                .fold(sum, |s, &b| s.wrapping_add(u64::from(b)));
            got += n as u64;
        }
        writeln!(stream, "got {got} {sum}")
    }
}

fn read_line(r: &mut BufReader<TcpStream>) -> String {
    let mut s = String::new();
    r.read_line(&mut s).expect("read_line");
    s
}

fn body(len: usize) -> (Vec<u8>, u64) {
    let v: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    let sum = v.iter().map(|&b| u64::from(b)).sum();
    (v, sum)
}

/// A small body in the same segment as its header and the next message, a large one in
/// pieces, a line read in blocking mode: each answered in order, and framing resumes.
fn streams_bodies_and_returns_to_framing<M: Mode>(server: Server<Tcp, M>) {
    let srv = Running::start(server);
    let addr = srv.server.server_address().unwrap();
    let s = connect(addr);
    s.set_read_timeout(Some(LONG)).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    (&s).write_all(b"BODY 5\nhelloPING\n").unwrap();
    assert_eq!(read_line(&mut r), "ready 5\n");
    assert_eq!(read_line(&mut r), format!("got 5 {}\n", body_sum(b"hello")));
    assert_eq!(read_line(&mut r), "PING\n");

    let (big, sum) = body(4 << 20);
    (&s).write_all(b"BODY 4194304\n").unwrap();
    let writer = {
        let s = s.try_clone().unwrap();
        std::thread::spawn(move || {
            for piece in big.chunks(100_003) {
                (&s).write_all(piece).unwrap();
            }
            (&s).write_all(b"PING2\nLINE\nhello there\nPING3\n")
                .unwrap();
        })
    };
    assert_eq!(read_line(&mut r), "ready 4194304\n");
    assert_eq!(read_line(&mut r), format!("got 4194304 {sum}\n"));
    assert_eq!(read_line(&mut r), "PING2\n");
    assert_eq!(read_line(&mut r), "line hello there\n");
    assert_eq!(read_line(&mut r), "PING3\n");
    writer.join().unwrap();
    drop((s, r));
    srv.stop().unwrap();
}

fn body_sum(b: &[u8]) -> u64 {
    b.iter().map(|&x| u64::from(x)).sum()
}

#[test]
fn evented_take_over_streams_a_body_then_hands_the_connection_back_to_framing() {
    streams_bodies_and_returns_to_framing(
        EventedTcpServer::builder()
            .bind("127.0.0.1:0", Sink::default)
            .unwrap(),
    );
}

#[test]
fn threading_take_over_streams_a_body_then_hands_the_connection_back_to_framing() {
    streams_bodies_and_returns_to_framing(
        ThreadingTcpServer::builder()
            .bind("127.0.0.1:0", Sink::default)
            .unwrap(),
    );
}

#[test]
fn a_connection_taken_over_and_waiting_for_its_body_does_not_stop_the_others() {
    let server = EventedTcpServer::builder()
        .workers(2, 8)
        .bind("127.0.0.1:0", Sink::default)
        .unwrap();
    let srv = Running::start(server);
    let addr = srv.server.server_address().unwrap();
    // Several bodies cut short: more blocked threads than the reactor started with.
    let waiting: Vec<(TcpStream, BufReader<TcpStream>)> = (0..3)
        .map(|_| {
            let s = connect(addr);
            let mut r = BufReader::new(s.try_clone().unwrap());
            (&s).write_all(b"BODY 10\nabc").unwrap();
            assert_eq!(read_line(&mut r), "ready 10\n");
            (s, r)
        })
        .collect();
    for i in 0..20 {
        let line = format!("ping {i}\n");
        assert_eq!(round_trip(addr, line.as_bytes()), line.as_bytes());
    }
    for (s, mut r) in waiting {
        (&s).write_all(b"defghij").unwrap();
        assert_eq!(
            read_line(&mut r),
            format!("got 10 {}\n", body_sum(b"abcdefghij"))
        );
    }
    srv.stop().unwrap();
}

#[test]
fn the_forced_close_interrupts_a_handler_blocked_in_a_take_over_at_once() {
    let server = EventedTcpServer::builder()
        .read_timeout(Some(Duration::from_secs(120)))
        .shutdown_grace(Duration::from_millis(200))
        .bind("127.0.0.1:0", Sink::default)
        .unwrap();
    let srv = Running::start(server);
    let addr = srv.server.server_address().unwrap();
    let s = connect(addr);
    let mut r = BufReader::new(s.try_clone().unwrap());
    s.set_read_timeout(Some(LONG)).unwrap();
    (&s).write_all(b"BODY 100\n").unwrap();
    assert_eq!(read_line(&mut r), "ready 100\n");
    let t = Instant::now();
    srv.server.shutdown();
    let clean = srv.server.server_close();
    let took = t.elapsed();
    assert!(!clean, "the blocked body outlived the grace period");
    // The grace period, then at once: not the reactor's 2 s wait for stuck handlers.
    assert!(took < Duration::from_millis(1500), "{took:?}");
    // The handler's read failed: reported, and the connection closed.
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");
    assert!(srv.server.stats().errors >= 1, "{:?}", srv.server.stats());
}

#[test]
fn a_take_over_without_handle_blocking_closes_the_connection_with_a_clear_error() {
    struct Forgetful;
    impl MessageHandler for Forgetful {
        fn handle(&mut self, ch: &mut Channel, _msg: &[u8]) -> io::Result<()> {
            ch.take_over();
            Ok(())
        }
    }
    let server = EventedTcpServer::builder()
        .bind("127.0.0.1:0", || Forgetful)
        .unwrap();
    let srv = Running::start(server);
    let addr = srv.server.server_address().unwrap();
    assert_eq!(round_trip(addr, b"x\n"), b"");
    util::wait_until("the error is counted", || srv.server.stats().errors == 1);
    srv.stop().unwrap();
}

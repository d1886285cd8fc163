//! The evented mode: message handlers served from a readiness loop. Each test names the
//! behaviour it proves; all traffic on loopback, every wait bounded.

mod util;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};

use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use socketserver::framing::{Framing, MessageFraming};
use socketserver::{
    Channel, ChannelHandle, EventedTcpServer, MessageHandler, ProxyProtocol, StreamRequest, Tcp,
    ThreadingTcpServer,
};
use util::{LONG, Running, connect, round_trip, wait_until};

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

/// A gate a blocking handler waits on until the test opens it.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    cv: std::sync::Condvar,
}

impl Gate {
    fn wait(&self) {
        let mut g = self.open.lock().unwrap();
        let until = Instant::now() + LONG;
        while !*g && Instant::now() < until {
            g = self
                .cv
                .wait_timeout(g, Duration::from_millis(50))
                .unwrap()
                .0;
        }
    }
    fn release(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

/// `block` waits on the gate; `panic` panics; anything else is echoed.
struct Mixed {
    gate: Arc<Gate>,
    entered: mpsc::Sender<()>,
}

impl MessageHandler for Mixed {
    fn handle(&mut self, ch: &mut Channel, msg: &[u8]) -> io::Result<()> {
        match msg {
            b"block\n" => {
                let _ = self.entered.send(());
                self.gate.wait();
                ch.push(b"unblocked\n");
            }
            b"panic\n" => panic!("asked to"),
            _ => ch.push(msg),
        }
        Ok(())
    }
}

fn mixed(
    workers: (usize, usize),
) -> (
    Running<Tcp, socketserver::Evented>,
    Arc<Gate>,
    mpsc::Receiver<()>,
) {
    let gate = Arc::new(Gate::default());
    let (tx, rx) = mpsc::channel();
    let g = gate.clone();
    let tx = Mutex::new(tx);
    let server = EventedTcpServer::builder()
        .workers(workers.0, workers.1)
        .bind("127.0.0.1:0", move || Mixed {
            gate: g.clone(),
            entered: tx.lock().unwrap().clone(),
        })
        .unwrap();
    (Running::start(server), gate, rx)
}

#[test]
fn handlers_that_block_do_not_stop_other_connections_while_the_pool_has_threads() {
    let (srv, gate, entered) = mixed((2, 16));
    let addr = srv.server.server_address().unwrap();
    // More blocked handlers than the starting threads.
    let blocked: Vec<TcpStream> = (0..4)
        .map(|_| {
            let s = connect(addr);
            (&s).write_all(b"block\n").unwrap();
            entered.recv_timeout(LONG).expect("handler entered");
            s
        })
        .collect();
    for i in 0..20 {
        let line = format!("ping {i}\n");
        assert_eq!(round_trip(addr, line.as_bytes()), line.as_bytes());
    }
    gate.release();
    for s in blocked {
        let mut r = BufReader::new(s);
        assert_eq!(read_line(&mut r), "unblocked\n");
    }
    assert!(srv.server.stats().workers <= 16);
}

#[test]
fn a_panicking_handler_is_reported_and_counted_and_the_others_keep_being_served() {
    let (srv, _gate, _entered) = mixed((2, 4));
    let addr = srv.server.server_address().unwrap();
    let keep = connect(addr);
    let mut kr = BufReader::new(keep.try_clone().unwrap());
    (&keep).write_all(b"before\n").unwrap();
    assert_eq!(read_line(&mut kr), "before\n");
    assert_eq!(round_trip(addr, b"panic\n"), b"");
    (&keep).write_all(b"after\n").unwrap();
    assert_eq!(read_line(&mut kr), "after\n");
    let stats = srv.server.stats();
    assert_eq!(stats.panics, 1, "{stats:?}");
}

/// Replies to every line with 64 KiB.
struct Flood;
impl MessageHandler for Flood {
    fn handle(&mut self, ch: &mut Channel, msg: &[u8]) -> io::Result<()> {
        if msg == b"big\n" {
            ch.push(&[b'x'; 64 * 1024]);
        } else {
            ch.push(msg);
        }
        Ok(())
    }
}

#[test]
fn a_peer_that_never_reads_is_held_back_then_closed_at_the_write_timeout() {
    let server = EventedTcpServer::builder()
        .write_timeout(Some(Duration::from_millis(500)))
        .bind("127.0.0.1:0", || Flood)
        .unwrap();
    let srv = Running::start(server);
    let addr = srv.server.server_address().unwrap();
    let hog = connect(addr);
    hog.set_nonblocking(true).unwrap();
    // Ask for far more than any buffer holds, never reading: the server must stop reading
    // this connection (high-water mark), so our writes end up blocking.
    let mut asked = 0usize;
    let until = Instant::now() + LONG;
    let mut blocked = false;
    let chunk = b"big\n".repeat(4096);
    // Up to 16 Mi requests (64 MiB, beyond every socket buffer) of 64 KiB replies each.
    while Instant::now() < until && asked < 16 << 20 {
        match (&hog).write(&chunk) {
            Ok(n) => asked += n / 4,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                blocked = true;
                break;
            }
            Err(_) => break, // closed already
        }
    }
    assert!(
        blocked,
        "the server kept reading from a peer that never reads ({asked} asked)"
    );
    // Everyone else is served meanwhile.
    assert_eq!(round_trip(addr, b"hello\n"), b"hello\n");
    // The hog is closed at the write timeout.
    let until = Instant::now() + LONG;
    while srv.server.stats().deadline_expired == 0 && Instant::now() < until {
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(srv.server.stats().deadline_expired, 1);
}

#[test]
fn a_client_trickling_half_a_message_is_closed_at_the_message_deadline() {
    let server = EventedTcpServer::builder()
        .workers(2, 2)
        .message_deadline(Some(Duration::from_millis(300)))
        .bind("127.0.0.1:0", || Echo)
        .unwrap();
    let srv = Running::start(server);
    let addr = srv.server.server_address().unwrap();
    let mut slow: Vec<TcpStream> = (0..50).map(|_| connect(addr)).collect();
    for s in &mut slow {
        s.write_all(b"half a li").unwrap();
    }
    // They hold no thread: others are served at once.
    assert_eq!(round_trip(addr, b"quick\n"), b"quick\n");
    for mut s in slow {
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "closed without a reply");
    }
    assert!(srv.server.stats().deadline_expired >= 50);
    assert_eq!(srv.server.stats().workers, 2, "no thread growth");
}

#[test]
fn the_drain_closes_idle_connections_at_once_and_lets_a_busy_one_finish_its_message() {
    let (srv, gate, entered) = mixed((2, 8));
    let addr = srv.server.server_address().unwrap();
    let idle: Vec<TcpStream> = (0..20).map(|_| connect(addr)).collect();
    let busy = connect(addr);
    (&busy).write_all(b"block\n").unwrap();
    entered.recv_timeout(LONG).unwrap();
    let server = srv.server.clone();
    let closer = thread::spawn(move || {
        let t = Instant::now();
        server.shutdown();
        let clean = server.server_close();
        (clean, t.elapsed())
    });
    // Idle connections see EOF promptly, while the busy one is still in its handler.
    for mut s in idle {
        let mut buf = [0u8; 8];
        assert_eq!(s.read(&mut buf).unwrap_or(0), 0);
    }
    gate.release();
    let mut r = BufReader::new(busy);
    assert_eq!(read_line(&mut r), "unblocked\n");
    let (clean, took) = closer.join().unwrap();
    assert!(clean, "drain within the grace period");
    assert!(took < Duration::from_secs(5), "{took:?}");
    drop(srv);
}

/// An evented echo behind a proxy: every connection starts with a PROXY v1 header.
fn evented_behind_a_proxy() -> Running<Tcp, socketserver::Evented> {
    let server = EventedTcpServer::builder()
        .proxy_protocol(ProxyProtocol::Required)
        .bind("127.0.0.1:0", || Echo)
        .expect("bind");
    Running::start(server)
}

/// Connects and sends only the PROXY header: the request behind it is still on its way.
fn header_only(addr: std::net::SocketAddr, i: u16) -> TcpStream {
    let s = connect(addr);
    let header = format!("PROXY TCP4 192.0.2.1 127.0.0.1 {} 80\r\n", 40000 + i);
    (&s).write_all(header.as_bytes()).unwrap();
    s
}

#[test]
fn the_drain_serves_a_request_still_on_its_way_behind_its_proxy_header() {
    let srv = evented_behind_a_proxy();
    let addr = srv.server.server_address().unwrap();
    // Idle: a reply each, then nothing. The drain closes them at once.
    let idle: Vec<BufReader<TcpStream>> = (0..20)
        .map(|i| {
            let mut r = BufReader::new(header_only(addr, i));
            let line = format!("idle {i}\n");
            r.get_mut().write_all(line.as_bytes()).unwrap();
            assert_eq!(read_line(&mut r), line);
            r
        })
        .collect();
    // HAProxy sends the header, then the client's bytes as they come: here, later.
    let waiting: Vec<TcpStream> = (20..40).map(|i| header_only(addr, i)).collect();
    wait_until("every connection accepted", || {
        srv.server.stats().open >= 40
    });
    let server = srv.server.clone();
    let closer = thread::spawn(move || {
        server.shutdown();
        server.server_close()
    });
    // The drain has started: every idle connection is closed.
    for mut r in idle {
        let mut buf = [0u8; 8];
        assert_eq!(
            r.read(&mut buf).unwrap_or(0),
            0,
            "an idle connection stayed open"
        );
    }
    // The requests behind the headers arrive now: served, then the connections close.
    for (i, s) in waiting.into_iter().enumerate() {
        let line = format!("late {i}\n");
        let mut r = BufReader::new(s);
        let _ = r.get_mut().write_all(line.as_bytes());
        let mut got = String::new();
        let _ = r.read_line(&mut got);
        assert_eq!(got, line, "connection {i}: its request was lost");
        let mut rest = String::new();
        assert_eq!(r.read_line(&mut rest).unwrap_or(0), 0, "closed after it");
    }
    assert!(closer.join().unwrap(), "drain within the grace period");
}

#[test]
fn the_drain_closes_a_connection_whose_request_never_comes_5_s_after_its_accept() {
    let srv = evented_behind_a_proxy();
    let addr = srv.server.server_address().unwrap();
    let mut waiting = header_only(addr, 1);
    wait_until("accepted", || srv.server.stats().open >= 1);
    let t = Instant::now();
    srv.server.shutdown();
    let clean = srv.server.server_close(); // grace period: 10 s
    let took = t.elapsed();
    assert!(clean, "closed as idle, not at the grace period's end");
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(8),
        "{took:?}: 5 s after the accept (Go's rule), looked at every 0.5 s"
    );
    let mut buf = [0u8; 8];
    assert_eq!(waiting.read(&mut buf).unwrap_or(0), 0);
}

#[test]
fn the_drain_closes_at_once_a_connection_that_never_sent_its_proxy_header() {
    let srv = evented_behind_a_proxy();
    let addr = srv.server.server_address().unwrap();
    let mut silent = connect(addr);
    wait_until("accepted", || srv.server.stats().open >= 1);
    let t = Instant::now();
    srv.server.shutdown();
    let clean = srv.server.server_close();
    let took = t.elapsed();
    assert!(clean, "closed as idle, not at the grace period's end");
    assert!(
        took < Duration::from_secs(2),
        "{took:?}: idle, as a plain connection that never spoke (not at proxy_header_timeout, 5 s)"
    );
    let mut buf = [0u8; 8];
    assert_eq!(silent.read(&mut buf).unwrap_or(0), 0);
}

#[test]
fn the_drain_reads_a_burst_behind_a_proxy_header_to_its_end_across_turns() {
    let srv = evented_behind_a_proxy();
    let addr = srv.server.server_address().unwrap();
    // Idle after one reply: its end of file tells that the drain has started.
    let mut canary = BufReader::new(header_only(addr, 0));
    canary.get_mut().write_all(b"idle\n").unwrap();
    assert_eq!(read_line(&mut canary), "idle\n");
    let s = header_only(addr, 1);
    wait_until("both accepted", || srv.server.stats().open >= 2);
    let server = srv.server.clone();
    let closer = thread::spawn(move || {
        server.shutdown();
        server.server_close()
    });
    let mut buf = [0u8; 8];
    assert_eq!(
        canary.read(&mut buf).unwrap_or(0),
        0,
        "the drain has started"
    );
    // 8 lines of 16 KiB at once: more than a turn reads (4 reads of 16 KiB), each turn
    // ending on a line boundary with the rest still in the socket.
    let mut line = vec![b'x'; 16 * 1024 - 1];
    line.push(b'\n');
    let burst = line.repeat(8);
    let mut w = s.try_clone().unwrap();
    let sent = burst.clone();
    let writer = thread::spawn(move || w.write_all(&sent));
    let mut got = Vec::new();
    let _ = (&s).read_to_end(&mut got);
    writer.join().unwrap().unwrap();
    assert_eq!(
        got.len(),
        burst.len(),
        "every line of the burst echoed before the close"
    );
    assert!(got == burst);
    assert!(closer.join().unwrap(), "drain within the grace period");
}

#[test]
fn ctrl_c_style_close_with_idle_clients_takes_well_under_the_grace_period() {
    let srv = evented(|| Echo);
    let addr = srv.server.server_address().unwrap();
    // Idle keep-alive clients: each has had its reply and waits for a new request.
    let idle: Vec<BufReader<TcpStream>> = (0..200)
        .map(|i| {
            let mut r = BufReader::new(connect(addr));
            let line = format!("x {i}\n");
            r.get_mut().write_all(line.as_bytes()).unwrap();
            assert_eq!(read_line(&mut r), line);
            r
        })
        .collect();
    let t = Instant::now();
    srv.server.shutdown();
    assert!(srv.server.server_close());
    let took = t.elapsed();
    assert!(took < Duration::from_secs(1), "{took:?}");
    drop(idle);
}

/// A chat room: every line goes to every member, through their handles.
struct Member {
    room: Arc<Mutex<Vec<ChannelHandle>>>,
}

impl MessageHandler for Member {
    fn setup(&mut self, ch: &mut Channel) -> io::Result<()> {
        self.room.lock().unwrap().push(ch.handle());
        Ok(())
    }
    fn handle(&mut self, _ch: &mut Channel, msg: &[u8]) -> io::Result<()> {
        let members = self.room.lock().unwrap().clone();
        for m in members {
            let _ = m.push(msg);
        }
        Ok(())
    }
    fn finish(&mut self, ch: &mut Channel) -> io::Result<()> {
        let me = ch.client_address().clone();
        self.room
            .lock()
            .unwrap()
            .retain(|m| m.client_address() != &me);
        Ok(())
    }
}

#[test]
fn a_handler_pushes_to_other_connections_through_their_handles() {
    let room = Arc::new(Mutex::new(Vec::new()));
    let r = room.clone();
    let server = EventedTcpServer::bind("127.0.0.1:0", move || Member { room: r.clone() }).unwrap();
    let srv = Running::start(server);
    let addr = srv.server.server_address().unwrap();
    let members: Vec<TcpStream> = (0..5).map(|_| connect(addr)).collect();
    let until = Instant::now() + LONG;
    while room.lock().unwrap().len() < 5 && Instant::now() < until {
        thread::sleep(Duration::from_millis(5));
    }
    (&members[0]).write_all(b"hi all\n").unwrap();
    for m in &members {
        let mut r = BufReader::new(m.try_clone().unwrap());
        assert_eq!(read_line(&mut r), "hi all\n");
    }
    drop(members);
    let until = Instant::now() + LONG;
    while !room.lock().unwrap().is_empty() && Instant::now() < until {
        thread::sleep(Duration::from_millis(5));
    }
    assert!(
        room.lock().unwrap().is_empty(),
        "finish ran for every member"
    );
}

#[cfg(target_os = "linux")]
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

#[cfg(target_os = "linux")]
#[test]
fn closing_an_evented_server_leaves_no_descriptor_behind() {
    let before = open_fds();
    {
        let srv = evented(|| Echo);
        let addr = srv.server.server_address().unwrap();
        let conns: Vec<TcpStream> = (0..50).map(|_| connect(addr)).collect();
        assert_eq!(round_trip(addr, b"x\n"), b"x\n");
        srv.server.shutdown();
        assert!(srv.server.server_close());
        drop(conns);
    }
    // The reactor's threads are joined and its poller closed by `server_close`.
    let after = open_fds();
    assert!(
        after <= before,
        "descriptors: {before} before, {after} after"
    );
}

/// The child half of the 10 000-connection test (`util::hold_idle_connections`).
#[test]
fn idle_client_child() {
    util::idle_connections_child();
}

#[cfg(target_os = "linux")]
fn threads_of_this_process() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

#[cfg(target_os = "linux")]
#[test]
fn ten_thousand_idle_connections_hold_no_thread_and_new_clients_are_served() {
    const N: usize = 10_000;
    let (_, limit) = socketserver::raise_fd_limit().expect("getrlimit");
    if limit < (N as u64) + 200 {
        println!(
            "skipped: RLIMIT_NOFILE hard limit {limit} is below {}",
            N + 200
        );
        return;
    }
    let threads_before = threads_of_this_process();
    let server = EventedTcpServer::builder()
        .backlog(4096)
        .bind("127.0.0.1:0", || Echo)
        .unwrap();
    let srv = Running::start(server);
    let addr = srv.server.server_address().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let ready = tmp.path().join("ready");
    let mut child = util::hold_idle_connections("idle_client_child", addr, N, &ready);
    let until = Instant::now() + Duration::from_secs(120);
    while !ready.exists() {
        assert!(
            Instant::now() < until,
            "the child never held its connections"
        );
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the client child exited early: {status}");
        }
        thread::sleep(Duration::from_millis(20));
    }
    // The child's last connection, its readiness probe, comes on top.
    assert_eq!(srv.server.stats().open, N + 1);
    // Fresh clients are served while 10 000 wait.
    for i in 0..20 {
        let msg = format!("probe {i}\n");
        assert_eq!(round_trip(addr, msg.as_bytes()), msg.as_bytes());
    }
    let stats = srv.server.stats();
    assert!(stats.workers <= 16, "{stats:?}");
    let grown = threads_of_this_process().saturating_sub(threads_before);
    assert!(grown <= 16, "{grown} threads for 10 000 idle connections");
    // Close with 10 000 connected: idle ones go at once.
    let t = Instant::now();
    srv.server.shutdown();
    assert!(srv.server.server_close());
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    drop(child.stdin.take());
    let _ = child.wait();
}

mod split_and_coalesced {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Random lines, written in random pieces (coalesced and split anywhere), come back
        /// numbered one by one, in order, over a real socket.
        #[test]
        fn lines_in_random_pieces_are_handled_one_by_one(
            lines in proptest::collection::vec("[a-z ]{0,40}", 1..30),
            cuts in proptest::collection::vec(1usize..64, 1..40),
        ) {
            let srv = evented(Numbered::default);
            let addr = srv.server.server_address().unwrap();
            let wire: Vec<u8> = lines.iter().flat_map(|l| format!("{l}\n").into_bytes()).collect();
            let expected: Vec<u8> = lines
                .iter()
                .enumerate()
                .flat_map(|(i, l)| format!("{} {l}\n", i + 1).into_bytes())
                .collect();
            let mut s = connect(addr);
            s.set_nodelay(true).unwrap();
            let mut at = 0;
            for c in cuts.iter().cycle() {
                if at >= wire.len() {
                    break;
                }
                let end = (at + c).min(wire.len());
                s.write_all(&wire[at..end]).unwrap();
                at = end;
            }
            s.shutdown(Shutdown::Write).unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            prop_assert_eq!(got, expected);
        }
    }
}

/// Edge-triggered readiness: a line and the peer's FIN both queued before the accept are
/// reported by the connection's very first event, which must not be lost (the FIN raises no
/// later edge).
#[test]
fn a_line_and_its_fin_sent_before_the_accept_are_answered_and_closed() {
    let server = EventedTcpServer::builder()
        .bind("127.0.0.1:0", Numbered::default)
        .unwrap();
    let addr = server.server_address().unwrap();
    // Not served yet: the kernel completes the handshakes and queues the bytes.
    let clients: Vec<TcpStream> = (0..50)
        .map(|i| {
            let mut s = connect(addr);
            writeln!(s, "early {i}").unwrap();
            s.shutdown(Shutdown::Write).unwrap();
            s
        })
        .collect();
    let srv = Running::start(server);
    for (i, mut s) in clients.into_iter().enumerate() {
        let mut got = String::new();
        s.read_to_string(&mut got)
            .expect("reply, then the server's close");
        assert_eq!(got, format!("1 early {i}\n"));
    }
    srv.stop().unwrap();
}

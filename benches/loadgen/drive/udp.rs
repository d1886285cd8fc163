//! The UDP echo load: `opts.conns` clients, each with its own connected socket, each a closed
//! loop of one datagram of `opts.size` bytes and its echo, or after `opts.udp_timeout` a loss.
//! Late replies are recognised by their sequence number and skipped.
//!
//! Two drivers, as for the TCP echo ([`Driver`]):
//! - [`Driver::Threads`]: one blocking thread per client (`recv` with `SO_RCVTIMEO`);
//! - [`Driver::Poll`]: [`poll_threads`] threads with `poll(2)` over non-blocking sockets. Each
//!   wake-up collects every reply that has arrived, so the generator spends less CPU per
//!   datagram and a server that batches sees its batches.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::thread;
use std::time::{Duration, Instant};

use super::{Driver, Mark, Opts, Outcome, Sync, Tally, fill, poll_share, poll_threads};

/// Receive buffer: larger than any datagram the generator sends, so a reply is never cut.
const BACK: usize = 65_536;

/// The UDP echo with `opts.conns` clients, driven as `opts.driver` says.
pub fn udp(addr: SocketAddr, opts: &Opts, mark: &mut dyn FnMut(Mark)) -> Outcome {
    let threads = match opts.driver {
        Driver::Threads => opts.conns,
        Driver::Poll => poll_threads().min(opts.conns).max(1),
    };
    let sync = Sync::new(threads);
    thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|i| {
                let sync = &sync;
                match opts.driver {
                    Driver::Threads => s.spawn(move || udp_blocking(addr, i as u32, opts, sync)),
                    Driver::Poll => {
                        let cids = poll_share(opts.conns, threads, i);
                        s.spawn(move || udp_poll_worker(addr, &cids, opts, sync))
                    }
                }
            })
            .collect();
        let elapsed = sync.coordinate(opts, mark);
        let tallies = workers.into_iter().map(|w| w.join().unwrap()).collect();
        Tally::merge(tallies, elapsed)
    })
}

/// A client socket on 127.0.0.1, connected to `addr`.
fn client(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = UdpSocket::bind("127.0.0.1:0")?;
    s.connect(addr)?;
    Ok(s)
}

/// The sequence number a reply carries (its first 8 bytes), if it is long enough.
fn seq_of(back: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(back.get(..8)?.try_into().ok()?))
}

/// How one request ended, for the tally.
enum End {
    Answered { sent_at: Instant, now: Instant },
    Lost { now: Instant },
}

/// One request's end counted the same way by both drivers: in the window only if it was sent
/// at or after the window's start and ended by its end; a request sent in the window that
/// ends after it is taken out of `sent` again.
fn count(t: &mut Tally, end: End, counted: bool, window_end: Instant, size: usize) -> bool {
    match end {
        End::Answered { sent_at, now } => {
            if counted && now <= window_end {
                t.requests += 1;
                t.bytes += size as u64;
                t.lat.push((now - sent_at).as_nanos() as u64);
                return true;
            }
        }
        End::Lost { now } => {
            if counted && now <= window_end {
                t.lost += 1;
                return false;
            }
        }
    }
    if counted {
        t.sent -= 1;
    }
    false
}

fn udp_blocking(addr: SocketAddr, cid: u32, opts: &Opts, sync: &Sync) -> Tally {
    let mut t = Tally {
        conns: 1,
        ..Tally::default()
    };
    let sock = client(addr).and_then(|s| {
        s.set_read_timeout(Some(opts.udp_timeout))?;
        Ok(s)
    });
    sync.connected.wait();
    sync.go.wait();
    let (start, end) = sync.window();
    let Ok(sock) = sock else {
        t.connect_failed += 1;
        sync.held.wait();
        sync.release.wait();
        return t;
    };
    let size = opts.size.max(12);
    let mut out = vec![0u8; size];
    let mut back = vec![0u8; BACK];
    let (mut total, mut in_window) = (0, 0);
    for seq in 0u64.. {
        if Instant::now() >= end {
            break;
        }
        fill(&mut out, cid, seq);
        let sent_at = Instant::now();
        let counted = sent_at >= start;
        if sock.send(&out).is_err() {
            t.errors += 1;
            continue;
        }
        if counted {
            t.sent += 1;
        }
        let answered = loop {
            match sock.recv(&mut back) {
                Ok(n) => match seq_of(&back[..n]) {
                    Some(got) if got < seq => {} // a late reply to a request counted as lost
                    Some(_) => {
                        if back[..n] != out[..] {
                            t.bad += 1;
                        }
                        break true;
                    }
                    None => t.bad += 1,
                },
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break false,
            }
        };
        let now = Instant::now();
        if answered {
            total += 1;
            if count(&mut t, End::Answered { sent_at, now }, counted, end, size) {
                in_window += 1;
            }
        } else {
            count(&mut t, End::Lost { now }, counted, end, size);
        }
    }
    t.conn_done(total, in_window);
    sync.held.wait();
    sync.release.wait();
    t
}

/// One client of the `poll(2)` driver.
struct Client {
    sock: UdpSocket,
    cid: u32,
    seq: u64,
    out: Vec<u8>,
    /// The request in flight: when it was sent and whether it counts; `None` when the last
    /// send failed and the next must be tried again.
    flight: Option<(Instant, bool)>,
    total: u64,
    in_window: u64,
}

impl Client {
    /// Sends the next request; counts it in `t.sent` if it was sent in the window.
    fn send_next(&mut self, t: &mut Tally, start: Instant) {
        self.seq += 1;
        fill(&mut self.out, self.cid, self.seq);
        let sent_at = Instant::now();
        self.flight = loop {
            match self.sock.send(&self.out) {
                Ok(_) => {
                    let counted = sent_at >= start;
                    if counted {
                        t.sent += 1;
                    }
                    break Some((sent_at, counted));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // A full send buffer or a refused port (ICMP): tried again next round.
                    t.errors += 1;
                    break None;
                }
            }
        };
    }
}

fn udp_poll_worker(addr: SocketAddr, cids: &[u32], opts: &Opts, sync: &Sync) -> Tally {
    let mut t = Tally::default();
    let size = opts.size.max(12);
    let mut clients = Vec::with_capacity(cids.len());
    for &cid in cids {
        t.conns += 1;
        match client(addr).and_then(|s| s.set_nonblocking(true).map(|()| s)) {
            Ok(sock) => clients.push(Client {
                sock,
                cid,
                seq: 0,
                out: vec![0; size],
                flight: None,
                total: 0,
                in_window: 0,
            }),
            Err(_) => t.connect_failed += 1,
        }
    }
    sync.connected.wait();
    sync.go.wait();
    let (start, end) = sync.window();
    let mut back = vec![0u8; BACK];
    for c in &mut clients {
        c.send_next(&mut t, start);
    }
    let mut fds: Vec<libc::pollfd> = clients
        .iter()
        .map(|c| libc::pollfd {
            fd: c.sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        // Wake for the first reply, the earliest timeout or a failed send's retry.
        let mut wait = (end - now).min(Duration::from_millis(20));
        for c in &clients {
            match c.flight {
                Some((sent_at, _)) => {
                    wait = wait.min((sent_at + opts.udp_timeout).saturating_duration_since(now))
                }
                None => wait = Duration::ZERO,
            }
        }
        for fd in &mut fds {
            fd.revents = 0;
        }
        let ms = wait.as_micros().div_ceil(1000) as libc::c_int;
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structures.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            continue; // EINTR: every other error would repeat; the window bounds the loop
        }
        for (fd, c) in fds.iter().zip(clients.iter_mut()) {
            if fd.revents != 0 {
                poll_receive(c, &mut t, &mut back, start, end, size);
            }
            let now = Instant::now();
            match c.flight {
                None if now < end => c.send_next(&mut t, start),
                Some((sent_at, counted)) if now - sent_at >= opts.udp_timeout => {
                    count(&mut t, End::Lost { now }, counted, end, size);
                    c.flight = None;
                    if now < end {
                        c.send_next(&mut t, start);
                    }
                }
                _ => {}
            }
        }
    }
    for c in &mut clients {
        if let Some((_, true)) = c.flight.take() {
            t.sent -= 1; // in flight when the window closed: not counted either way
        }
        t.conn_done(c.total, c.in_window);
    }
    sync.held.wait();
    sync.release.wait();
    drop(clients);
    t
}

/// Reads every datagram waiting on `c`; on the echo of the request in flight, counts it and
/// sends the next one (while the window is open).
fn poll_receive(
    c: &mut Client,
    t: &mut Tally,
    back: &mut [u8],
    start: Instant,
    end: Instant,
    size: usize,
) {
    loop {
        let n = match c.sock.recv(back) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(_) => {
                // ECONNREFUSED: an earlier datagram met a closed port. The request in
                // flight is left to its timeout.
                t.errors += 1;
                return;
            }
        };
        let Some((sent_at, counted)) = c.flight else {
            continue; // a late reply to a request already counted as lost
        };
        match seq_of(&back[..n]) {
            Some(got) if got < c.seq => continue, // late, as above
            Some(_) => {}
            None => {
                t.bad += 1;
                continue;
            }
        }
        if back[..n] != c.out[..] {
            t.bad += 1;
        }
        let now = Instant::now();
        c.flight = None;
        c.total += 1;
        if count(t, End::Answered { sent_at, now }, counted, end, size) {
            c.in_window += 1;
        }
        if now < end {
            c.send_next(t, start);
        }
    }
}

//! The load generator: loopback only, bounded in time (a warm-up, then a measurement window)
//! and in count (a fixed number of connections or bytes).
//!
//! - [`echo`]: C connections, each a closed loop of one S-byte message and its echo, verified
//!   byte for byte; driven either by one blocking thread per connection or by one thread
//!   with `poll(2)` over non-blocking sockets ([`Driver`]). On 2 shared cores the choice
//!   changes who wins, so the harness runs both.
//! - [`connrate`]: C threads, each looping connect, one line, its echo, close.
//! - [`udp`] (in `drive/udp.rs`): C clients, each with its own socket: one datagram out, its
//!   echo back (or a timeout, counted as lost); driven by a thread per client or by `poll(2)`,
//!   as the echo is.
//! - [`upload`]: one connection sends N bytes, half-closes, and waits for the server's 8-byte
//!   count: the time is the whole upload, as the server saw it.
//! - [`idle`]: N connections held open and silent; meanwhile a probe opens a fresh
//!   connection every 200 ms for one echo, and a few of the held connections ("talkers")
//!   send one message a second each.
//! - [`slowloris`]: L connections each trickling one byte a second (never a newline) while
//!   the [`echo`] load runs beside them (L = 0 is the comparison run).
//!
//! Every driver calls `mark` at the window's start and end (the harness samples the server's
//! CPU time there) and once more after the window while the connections are still open
//! ([`Mark::Held`]: the harness samples the server's memory).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Barrier, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

mod udp;

pub use udp::udp;

/// How the echo and UDP loads are generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// One blocking thread per connection (a client per thread, as most test clients are).
    /// Server and client threads pair up through the scheduler's synchronous wake-ups, which
    /// favours thread-per-connection servers.
    Threads,
    /// Non-blocking sockets driven by [`poll_threads`] threads with `poll(2)`: the leaner
    /// generator (one wake-up serves many replies); it favours servers that batch
    /// (event loops).
    Poll,
}

/// Generator threads for the `poll(2)` driver (env `LOADGEN_POLL_THREADS`, default 1).
pub fn poll_threads() -> usize {
    std::env::var("LOADGEN_POLL_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// The connection ids poll thread `i` of `threads` drives: every `threads`-th from `i`.
fn poll_share(conns: usize, threads: usize, i: usize) -> Vec<u32> {
    (0..conns as u32)
        .filter(|c| *c as usize % threads == i)
        .collect()
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Opts {
    /// Concurrent connections (or UDP clients).
    pub conns: usize,
    /// Message size in bytes.
    pub size: usize,
    /// Warm-up before the window (not counted).
    pub warmup: Duration,
    /// The measurement window.
    pub window: Duration,
    /// UDP: how long to wait for a reply before counting the request as lost.
    pub udp_timeout: Duration,
    /// Echo and UDP: how the connections (clients) are driven.
    pub driver: Driver,
}

/// When the driver calls back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// The measurement window starts.
    Start,
    /// The window ends.
    End,
    /// After the window; every connection is still open.
    Held,
    /// Idle and slow-loris loads: the background connections are open (before `Start`).
    Setup,
    /// Every [`SAMPLE_EVERY`] during the window (the harness samples the server's threads).
    Sample,
}

/// How often [`Mark::Sample`] is called during a window.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Latency percentiles of the requests completed in the window.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Requests (echoes, connections, datagrams, uploads) completed in the window.
    pub requests: u64,
    /// Payload bytes carried in the window (one direction).
    pub bytes: u64,
    /// The window's length.
    pub elapsed: Duration,
    pub latency: Latency,
    /// Connections (or clients) attempted.
    pub conns: usize,
    /// Connections that could not be made.
    pub connect_failed: usize,
    /// Connections made that got no reply at all, warm-up included.
    pub starved: usize,
    /// The fewest replies one connection got in the window.
    pub min_per_conn: u64,
    /// Replies that differed from what was sent.
    pub bad: u64,
    /// I/O errors: resets, EOF, failed connects (connection rate), failed sends.
    pub errors: u64,
    /// UDP: requests sent in the window, and those that got no reply in time.
    pub sent: u64,
    pub lost: u64,
    /// Idle: connections held; slow loris: slow connections (attempted).
    pub background: usize,
    /// Idle / slow-loris: how long opening the background connections took.
    pub setup: Duration,
    /// Idle: the talkers' messages (one a second each): completed, failed, latency.
    pub msgs: u64,
    pub msg_failed: u64,
    pub msg_latency: Latency,
    /// Idle / slow-loris: background connections the server closed (found closed at the
    /// end), and those that could not be opened.
    pub dropped: usize,
    pub bg_failed: usize,
    /// Idle: every probe's latency (ns), to pool percentiles over repetitions.
    pub samples: Vec<u64>,
}

impl Outcome {
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Per-thread tally, merged into an [`Outcome`].
#[derive(Debug, Default)]
struct Tally {
    lat: Vec<u64>,
    requests: u64,
    bytes: u64,
    conns: usize,
    connect_failed: usize,
    starved: usize,
    min_per_conn: Option<u64>,
    bad: u64,
    errors: u64,
    sent: u64,
    lost: u64,
}

impl Tally {
    fn conn_done(&mut self, replies_total: u64, replies_in_window: u64) {
        if replies_total == 0 {
            self.starved += 1;
        }
        self.min_per_conn = Some(
            self.min_per_conn
                .map_or(replies_in_window, |m| m.min(replies_in_window)),
        );
    }

    fn merge(tallies: Vec<Tally>, elapsed: Duration) -> Outcome {
        let mut lat = Vec::new();
        let mut o = Outcome {
            elapsed,
            ..Outcome::default()
        };
        let mut min = None::<u64>;
        for t in tallies {
            lat.extend_from_slice(&t.lat);
            o.requests += t.requests;
            o.bytes += t.bytes;
            o.conns += t.conns;
            o.connect_failed += t.connect_failed;
            o.starved += t.starved;
            o.bad += t.bad;
            o.errors += t.errors;
            o.sent += t.sent;
            o.lost += t.lost;
            if let Some(m) = t.min_per_conn {
                min = Some(min.map_or(m, |x| x.min(m)));
            }
        }
        o.min_per_conn = min.unwrap_or(0);
        lat.sort_unstable();
        o.latency = percentiles(&lat);
        o
    }
}

/// The window, shared by the coordinator and the workers.
struct Sync {
    connected: Barrier,
    go: Barrier,
    held: Barrier,
    release: Barrier,
    window: OnceLock<(Instant, Instant)>,
}

impl Sync {
    fn new(workers: usize) -> Sync {
        Sync {
            connected: Barrier::new(workers + 1),
            go: Barrier::new(workers + 1),
            held: Barrier::new(workers + 1),
            release: Barrier::new(workers + 1),
            window: OnceLock::new(),
        }
    }

    fn window(&self) -> (Instant, Instant) {
        *self.window.get().expect("window set before go")
    }

    /// The coordinator's side of a run: wait for the workers to connect, open the window,
    /// call `mark` at its start, end and after it.
    fn coordinate(&self, opts: &Opts, mark: &mut dyn FnMut(Mark)) -> Duration {
        self.connected.wait();
        let start = Instant::now() + opts.warmup;
        let end = start + opts.window;
        let _ = self.window.set((start, end));
        self.go.wait();
        sleep_until(start);
        mark(Mark::Start);
        sample_until(end, mark);
        mark(Mark::End);
        self.held.wait();
        mark(Mark::Held);
        self.release.wait();
        end - start
    }
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        thread::sleep(t - now);
    }
}

/// Sleeps until `end`, calling `mark(Mark::Sample)` every [`SAMPLE_EVERY`].
fn sample_until(end: Instant, mark: &mut dyn FnMut(Mark)) {
    loop {
        let now = Instant::now();
        if now >= end {
            return;
        }
        thread::sleep(SAMPLE_EVERY.min(end - now));
        if Instant::now() < end {
            mark(Mark::Sample);
        }
    }
}

/// Percentiles of a sorted sample (ns).
fn percentiles(lat: &[u64]) -> Latency {
    let pick = |p: f64| -> Duration {
        if lat.is_empty() {
            return Duration::ZERO;
        }
        let i = ((p * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1;
        Duration::from_nanos(lat[i])
    };
    Latency {
        p50: pick(0.50),
        p99: pick(0.99),
        max: pick(1.0),
    }
}

/// Percentiles of an unsorted sample (ns), pooled from several runs.
pub fn pooled(samples: impl IntoIterator<Item = u64>) -> Latency {
    let mut v: Vec<u64> = samples.into_iter().collect();
    v.sort_unstable();
    percentiles(&v)
}

/// The message for connection `cid`, request `seq`: a 12-byte header (seq, cid) then a
/// pattern, cut to `buf.len()`.
fn fill(buf: &mut [u8], cid: u32, seq: u64) {
    let mut head = [0u8; 12];
    head[..8].copy_from_slice(&seq.to_le_bytes());
    head[8..].copy_from_slice(&cid.to_le_bytes());
    for (i, b) in buf.iter_mut().enumerate() {
        *b = if i < 12 {
            head[i]
        } else {
            (i as u8).wrapping_mul(31) ^ (cid as u8)
        };
    }
    if let Some(last) = buf.last_mut() {
        *last = b'\n'; // one line, for line-based servers
    }
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_nodelay(true)?;
    Ok(s)
}

fn since(t: Instant) -> u64 {
    t.elapsed().as_nanos() as u64
}

// ----- TCP echo ------------------------------------------------------------------------

/// TCP echo with `opts.conns` connections and `opts.size`-byte messages.
pub fn echo(addr: SocketAddr, opts: &Opts, mark: &mut dyn FnMut(Mark)) -> Outcome {
    if opts.driver == Driver::Poll {
        return echo_poll(addr, opts, mark);
    }
    let sync = Sync::new(opts.conns);
    thread::scope(|s| {
        let workers: Vec<_> = (0..opts.conns)
            .map(|cid| {
                let sync = &sync;
                thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn_scoped(s, move || echo_blocking(addr, cid as u32, opts, sync))
                    .expect("spawn a load generator thread")
            })
            .collect();
        let elapsed = sync.coordinate(opts, mark);
        let tallies = workers.into_iter().map(|w| w.join().unwrap()).collect();
        Tally::merge(tallies, elapsed)
    })
}

fn echo_blocking(addr: SocketAddr, cid: u32, opts: &Opts, sync: &Sync) -> Tally {
    let mut t = Tally {
        conns: 1,
        ..Tally::default()
    };
    let conn = connect(addr).and_then(|c| {
        c.set_read_timeout(Some(Duration::from_millis(50)))?;
        c.set_write_timeout(Some(Duration::from_secs(2)))?;
        Ok(c)
    });
    sync.connected.wait();
    sync.go.wait();
    let (start, end) = sync.window();
    match conn {
        Err(_) => t.connect_failed += 1,
        Ok(mut c) => {
            let (mut total, mut in_window) = (0u64, 0u64);
            let mut out = vec![0u8; opts.size];
            let mut back = vec![0u8; opts.size];
            'run: for seq in 0u64.. {
                if Instant::now() >= end {
                    break;
                }
                fill(&mut out, cid, seq);
                let sent_at = Instant::now();
                if c.write_all(&out).is_err() {
                    t.errors += 1;
                    break;
                }
                let mut got = 0;
                while got < back.len() {
                    match c.read(&mut back[got..]) {
                        Ok(0) => {
                            t.errors += 1;
                            break 'run;
                        }
                        Ok(n) => got += n,
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                            ) =>
                        {
                            if Instant::now() >= end {
                                break 'run; // an outstanding request: abandoned
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => {
                            t.errors += 1;
                            break 'run;
                        }
                    }
                }
                let now = Instant::now();
                if back != out {
                    t.bad += 1;
                }
                total += 1;
                if sent_at >= start && now <= end {
                    in_window += 1;
                    t.requests += 1;
                    t.bytes += opts.size as u64;
                    t.lat.push(since(sent_at));
                }
            }
            t.conn_done(total, in_window);
            sync.held.wait();
            sync.release.wait();
            drop(c);
            return t;
        }
    }
    sync.held.wait();
    sync.release.wait();
    t
}

/// One connection of the `poll(2)` driver.
struct Slot {
    conn: TcpStream,
    cid: u32,
    seq: u64,
    out: Vec<u8>,
    back: Vec<u8>,
    sent: usize,
    got: usize,
    sent_at: Instant,
    total: u64,
    in_window: u64,
    dead: bool,
}

impl Slot {
    /// Starts the next request; `false` if the connection failed.
    fn send_next(&mut self) -> bool {
        self.seq += 1;
        fill(&mut self.out, self.cid, self.seq);
        self.sent = 0;
        self.got = 0;
        self.sent_at = Instant::now();
        self.write_more()
    }

    fn write_more(&mut self) -> bool {
        while self.sent < self.out.len() {
            match self.conn.write(&self.out[self.sent..]) {
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }
}

fn echo_poll(addr: SocketAddr, opts: &Opts, mark: &mut dyn FnMut(Mark)) -> Outcome {
    let threads = poll_threads().min(opts.conns).max(1);
    let sync = Sync::new(threads);
    thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|i| {
                let sync = &sync;
                let cids = poll_share(opts.conns, threads, i);
                s.spawn(move || echo_poll_worker(addr, &cids, opts, sync))
            })
            .collect();
        let elapsed = sync.coordinate(opts, mark);
        let tallies = workers.into_iter().map(|w| w.join().unwrap()).collect();
        Tally::merge(tallies, elapsed)
    })
}

fn echo_poll_worker(addr: SocketAddr, cids: &[u32], opts: &Opts, sync: &Sync) -> Tally {
    let mut t = Tally::default();
    let mut slots = Vec::with_capacity(cids.len());
    for &cid in cids {
        t.conns += 1;
        match connect(addr).and_then(|c| c.set_nonblocking(true).map(|()| c)) {
            Ok(conn) => slots.push(Slot {
                conn,
                cid,
                seq: 0,
                out: vec![0; opts.size],
                back: vec![0; opts.size],
                sent: 0,
                got: 0,
                sent_at: Instant::now(),
                total: 0,
                in_window: 0,
                dead: false,
            }),
            Err(_) => t.connect_failed += 1,
        }
    }
    sync.connected.wait();
    sync.go.wait();
    let (start, end) = sync.window();
    for slot in &mut slots {
        if !slot.send_next() {
            slot.dead = true;
            t.errors += 1;
        }
    }
    let mut fds: Vec<libc::pollfd> = slots
        .iter()
        .map(|s| libc::pollfd {
            fd: s.conn.as_raw_fd(),
            events: 0,
            revents: 0,
        })
        .collect();
    while Instant::now() < end {
        for (fd, slot) in fds.iter_mut().zip(&slots) {
            fd.revents = 0;
            fd.events = if slot.dead {
                0
            } else if slot.sent < slot.out.len() {
                libc::POLLOUT
            } else {
                libc::POLLIN
            };
            fd.fd = if slot.dead { -1 } else { slot.conn.as_raw_fd() };
        }
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structures.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 20) };
        if n <= 0 {
            continue;
        }
        for (fd, slot) in fds.iter().zip(slots.iter_mut()) {
            if fd.revents == 0 || slot.dead {
                continue;
            }
            if slot.sent < slot.out.len() {
                if !slot.write_more() {
                    slot.dead = true;
                    t.errors += 1;
                }
                continue;
            }
            loop {
                match slot.conn.read(&mut slot.back[slot.got..]) {
                    Ok(0) => {
                        slot.dead = true;
                        t.errors += 1;
                        break;
                    }
                    Ok(k) => {
                        slot.got += k;
                        if slot.got == slot.back.len() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        slot.dead = true;
                        t.errors += 1;
                        break;
                    }
                }
            }
            if slot.dead || slot.got < slot.back.len() {
                continue;
            }
            let now = Instant::now();
            if slot.back != slot.out {
                t.bad += 1;
            }
            slot.total += 1;
            if slot.sent_at >= start && now <= end {
                slot.in_window += 1;
                t.requests += 1;
                t.bytes += opts.size as u64;
                t.lat.push((now - slot.sent_at).as_nanos() as u64);
            }
            if now < end && !slot.send_next() {
                slot.dead = true;
                t.errors += 1;
            }
        }
    }
    for slot in &slots {
        t.conn_done(slot.total, slot.in_window);
    }
    sync.held.wait();
    sync.release.wait();
    drop(slots);
    t
}

// ----- connection rate -------------------------------------------------------------------

/// `opts.conns` threads, each looping: connect, send one `opts.size`-byte line, read its echo,
/// close. Latency is connect to last reply byte.
pub fn connrate(addr: SocketAddr, opts: &Opts, mark: &mut dyn FnMut(Mark)) -> Outcome {
    let sync = Sync::new(opts.conns);
    thread::scope(|s| {
        let workers: Vec<_> = (0..opts.conns)
            .map(|cid| {
                let sync = &sync;
                s.spawn(move || connrate_worker(addr, cid as u32, opts, sync))
            })
            .collect();
        let elapsed = sync.coordinate(opts, mark);
        let tallies = workers.into_iter().map(|w| w.join().unwrap()).collect();
        Tally::merge(tallies, elapsed)
    })
}

/// A client socket from source address 127.0.0.`2 + n % 250`, its port chosen at `connect`
/// (`IP_BIND_ADDRESS_NO_PORT`): tens of thousands of connections a second leave their ports
/// in TIME_WAIT (60 s), and one source address has only ~28 000 ephemeral ports. Spreading
/// them keeps `connect` from searching a nearly exhausted port range, which would slow the
/// generator and make each server's figure depend on the servers measured before it.
fn connect_from(addr: SocketAddr, n: u64) -> io::Result<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    #[cfg(target_os = "linux")]
    if let SocketAddr::V4(a) = addr
        && a.ip().is_loopback()
    {
        use std::os::fd::AsRawFd as _;
        let on: libc::c_int = 1;
        // SAFETY: setsockopt with a valid fd and a pointer to a c_int of the given size.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        let src = SocketAddr::from(([127, 0, 0, 2 + (n % 250) as u8], 0));
        s.bind(&src.into())?;
    }
    s.connect_timeout(&addr.into(), Duration::from_secs(2))?;
    Ok(s.into())
}

fn one_connection(addr: SocketAddr, n: u64, out: &[u8], back: &mut [u8]) -> io::Result<bool> {
    let mut c = connect_from(addr, n)?;
    c.set_nodelay(true)?;
    c.set_read_timeout(Some(Duration::from_secs(2)))?;
    c.write_all(out)?;
    c.read_exact(back)?;
    Ok(back == out)
}

fn connrate_worker(addr: SocketAddr, cid: u32, opts: &Opts, sync: &Sync) -> Tally {
    let mut t = Tally {
        conns: 1,
        ..Tally::default()
    };
    sync.connected.wait();
    sync.go.wait();
    let (start, end) = sync.window();
    let mut out = vec![0u8; opts.size];
    let mut back = vec![0u8; opts.size];
    let (mut total, mut in_window) = (0, 0);
    for seq in 0u64.. {
        if Instant::now() >= end {
            break;
        }
        fill(&mut out, cid, seq);
        let t0 = Instant::now();
        match one_connection(addr, u64::from(cid) * 7919 + seq, &out, &mut back) {
            Ok(ok) => {
                let now = Instant::now();
                if !ok {
                    t.bad += 1;
                }
                total += 1;
                if t0 >= start && now <= end {
                    in_window += 1;
                    t.requests += 1;
                    t.bytes += opts.size as u64;
                    t.lat.push((now - t0).as_nanos() as u64);
                }
            }
            Err(_) => {
                t.errors += 1;
                thread::sleep(Duration::from_millis(1));
            }
        }
    }
    t.conn_done(total, in_window);
    sync.held.wait();
    sync.release.wait();
    t
}

// ----- upload ------------------------------------------------------------------------------

/// One connection sends `bytes` bytes (from a 256 KiB buffer), half-closes, and reads the
/// server's 8-byte little-endian count. The window is the whole upload.
pub fn upload(addr: SocketAddr, bytes: u64, mark: &mut dyn FnMut(Mark)) -> Outcome {
    let mut o = Outcome {
        conns: 1,
        ..Outcome::default()
    };
    let buf: Vec<u8> = (0..256 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let run = || -> io::Result<(u64, Duration)> {
        let mut c = connect(addr)?;
        c.set_read_timeout(Some(Duration::from_secs(120)))?;
        let t0 = Instant::now();
        let mut left = bytes;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            c.write_all(&buf[..n])?;
            left -= n as u64;
        }
        c.shutdown(Shutdown::Write)?;
        let mut count = [0u8; 8];
        c.read_exact(&mut count)?;
        Ok((u64::from_le_bytes(count), t0.elapsed()))
    };
    mark(Mark::Start);
    let r = run();
    mark(Mark::End);
    mark(Mark::Held);
    match r {
        Ok((n, took)) => {
            if n != bytes {
                o.bad += 1;
            }
            o.requests = 1;
            o.bytes = bytes;
            o.elapsed = took;
            o.latency = Latency {
                p50: took,
                p99: took,
                max: took,
            };
            o.min_per_conn = 1;
        }
        Err(_) => {
            o.errors += 1;
            o.starved = 1;
            o.elapsed = Duration::from_secs(1);
        }
    }
    o
}

// ----- idle connections ------------------------------------------------------------------

/// What the [`idle`] load does.
#[derive(Debug, Clone)]
pub struct IdleOpts {
    /// Connections held open.
    pub held: usize,
    /// Of those, how many send one message a second each (staggered).
    pub talkers: usize,
    /// A probe (fresh connection, one echo, close) this often.
    pub probe_every: Duration,
    /// Message size (probes and talkers), one line.
    pub size: usize,
    /// Pause between opening the connections and the window.
    pub settle: Duration,
    /// The measurement window.
    pub window: Duration,
}

/// Connect attempts that may fail before the rest are given up (each may take its timeout).
const MAX_CONNECT_FAILURES: usize = 50;

/// Opens up to `n` connections from spread source addresses (`seed` picks the first);
/// stops early after [`MAX_CONNECT_FAILURES`] failures. Returns them and the failures.
fn open_many(addr: SocketAddr, n: usize, seed: u64) -> (Vec<TcpStream>, usize) {
    let mut conns = Vec::with_capacity(n);
    let mut failed = 0;
    for i in 0..n {
        match connect_from(addr, seed + i as u64).and_then(|c| c.set_nodelay(true).map(|()| c)) {
            Ok(c) => conns.push(c),
            Err(_) => {
                failed += 1;
                if failed >= MAX_CONNECT_FAILURES {
                    failed += n - i - 1; // the rest: not attempted, counted as failed
                    break;
                }
            }
        }
    }
    (conns, failed)
}

/// Connections the peer has closed (or reset): `POLLRDHUP`, `POLLHUP` or `POLLERR` now.
fn count_closed(conns: &[TcpStream]) -> usize {
    let mut fds: Vec<libc::pollfd> = conns
        .iter()
        .map(|c| libc::pollfd {
            fd: c.as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        })
        .collect();
    // SAFETY: `fds` is a valid array of `fds.len()` pollfd structures; timeout 0.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 0) };
    if n <= 0 {
        return 0;
    }
    fds.iter()
        .filter(|f| f.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0)
        .count()
}

/// One echo of `out` on `c` (blocking, with the socket's timeouts).
fn echo_once(mut c: &TcpStream, out: &[u8], back: &mut [u8]) -> io::Result<bool> {
    c.write_all(out)?;
    c.read_exact(back)?;
    Ok(back == out)
}

/// Holds `o.held` idle connections; during the window a probe connects every
/// `o.probe_every` for one echo and `o.talkers` of the held connections send one message a
/// second each. Probe latency is connect to the last byte of the echo. Outcome: `requests`
/// and `latency` are the probes that succeeded, `errors` those that failed (`sent` = all);
/// `msgs`/`msg_failed`/`msg_latency` the talkers'; `conns`/`bg_failed` the held connections,
/// `dropped` those the server closed.
pub fn idle(addr: SocketAddr, o: &IdleOpts, mark: &mut dyn FnMut(Mark)) -> Outcome {
    let mut out = Outcome {
        conns: o.held,
        background: o.held,
        ..Outcome::default()
    };
    let t0 = Instant::now();
    let (held, failed) = open_many(addr, o.held, 0);
    out.setup = t0.elapsed();
    out.bg_failed = failed;
    out.connect_failed = failed;
    let talkers = o.talkers.min(held.len());
    for c in &held[..talkers] {
        let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
        let _ = c.set_write_timeout(Some(Duration::from_secs(1)));
    }
    thread::sleep(o.settle);
    mark(Mark::Setup);
    let start = Instant::now();
    let end = start + o.window;
    mark(Mark::Start);
    let (probes, msgs) = thread::scope(|s| {
        let probe = s.spawn(|| probe_loop(addr, o, start, end));
        let talk = s.spawn(|| talk_loop(&held[..talkers], o, start, end));
        sample_until(end, mark);
        (
            probe.join().expect("probe thread"),
            talk.join().expect("talker thread"),
        )
    });
    mark(Mark::End);
    out.dropped = count_closed(&held);
    mark(Mark::Held);
    drop(held);
    out.elapsed = o.window;
    out.sent = (probes.0.len() + probes.1) as u64;
    out.requests = probes.0.len() as u64;
    out.errors = probes.1 as u64;
    out.bytes = out.requests * o.size as u64;
    out.bad = probes.2 + msgs.2;
    out.samples = probes.0.clone();
    out.latency = pooled(probes.0);
    out.msgs = msgs.0.len() as u64;
    out.msg_failed = msgs.1 as u64;
    out.msg_latency = pooled(msgs.0);
    out.min_per_conn = u64::from(out.requests > 0);
    out
}

/// The probe: (latencies ns, failures, bad echoes).
fn probe_loop(
    addr: SocketAddr,
    o: &IdleOpts,
    start: Instant,
    end: Instant,
) -> (Vec<u64>, usize, u64) {
    let (mut lat, mut failed, mut bad) = (Vec::new(), 0, 0);
    let mut outb = vec![0u8; o.size.max(13)];
    let mut back = vec![0u8; outb.len()];
    for k in 0u32.. {
        let due = start + o.probe_every * k;
        if due >= end {
            break;
        }
        sleep_until(due);
        fill(&mut outb, 1_000_000 + k, u64::from(k));
        let t0 = Instant::now();
        // Source addresses far from the held connections' (the seed is only a spread).
        let r = connect_from(addr, 7 + u64::from(k)).and_then(|c| {
            c.set_nodelay(true)?;
            c.set_read_timeout(Some(Duration::from_secs(2)))?;
            c.set_write_timeout(Some(Duration::from_secs(2)))?;
            echo_once(&c, &outb, &mut back)
        });
        match r {
            Ok(ok) => {
                lat.push(since(t0));
                bad += u64::from(!ok);
            }
            Err(_) => failed += 1,
        }
    }
    (lat, failed, bad)
}

/// The talkers: talker `i` sends at `start + k s + i/n s`. A talker whose echo fails is
/// not used again (its later messages count as failed). (latencies, failures, bad).
fn talk_loop(
    talkers: &[TcpStream],
    o: &IdleOpts,
    start: Instant,
    end: Instant,
) -> (Vec<u64>, usize, u64) {
    let (mut lat, mut failed, mut bad) = (Vec::new(), 0, 0);
    if talkers.is_empty() {
        return (lat, failed, bad);
    }
    let mut dead = vec![false; talkers.len()];
    let mut outb = vec![0u8; o.size.max(13)];
    let mut back = vec![0u8; outb.len()];
    let step = Duration::from_secs(1) / talkers.len() as u32;
    'run: for k in 0u32.. {
        for (i, c) in talkers.iter().enumerate() {
            let due = start + Duration::from_secs(u64::from(k)) + step * i as u32;
            if due >= end {
                break 'run;
            }
            sleep_until(due);
            if dead[i] {
                failed += 1;
                continue;
            }
            fill(&mut outb, i as u32, u64::from(k));
            let t0 = Instant::now();
            match echo_once(c, &outb, &mut back) {
                Ok(ok) => {
                    lat.push(since(t0));
                    bad += u64::from(!ok);
                }
                Err(_) => {
                    failed += 1;
                    dead[i] = true;
                }
            }
        }
    }
    (lat, failed, bad)
}

// ----- slow loris --------------------------------------------------------------------------

/// What the [`slowloris`] load does beside the echo.
#[derive(Debug, Clone)]
pub struct LorisOpts {
    /// Slow connections (0: the comparison run, echo alone with the same timing).
    pub loris: usize,
    /// The trickle's time slots per `every` (at least `loris`): the comparison run keeps
    /// the same generator wake-ups without sockets, so that the two runs differ only in
    /// the slow connections (on 2 vCPUs a thread waking every millisecond changes the
    /// echo's latency by itself).
    pub pace: usize,
    /// Each sends one byte this often (staggered over the connections).
    pub every: Duration,
    /// Pause between opening them and the echo load (at least `every`, so that each has
    /// sent a byte).
    pub settle: Duration,
}

/// `l.loris` connections each send one byte (`x`, never a newline) every `l.every`, while
/// [`echo`] runs with `opts`. Outcome: the echo's, plus `bg_failed` (slow connections not
/// opened), `dropped` (those the server closed), `setup` and `sent`/`lost`: bytes trickled
/// and sends that failed.
pub fn slowloris(
    addr: SocketAddr,
    opts: &Opts,
    l: &LorisOpts,
    mark: &mut dyn FnMut(Mark),
) -> Outcome {
    let t0 = Instant::now();
    let (conns, failed) = open_many(addr, l.loris, 100_000);
    let setup = t0.elapsed();
    for c in &conns {
        let _ = c.set_nonblocking(true);
    }
    let stop = AtomicBool::new(false);
    // A hard bound on the trickle, whatever happens to the echo.
    let limit = Instant::now() + l.settle + opts.warmup + opts.window + Duration::from_secs(30);
    let (mut o, trickled, send_failed, dropped) = thread::scope(|s| {
        let slots = l.pace.max(conns.len());
        let (conns, stop) = (&conns, &stop);
        let trickle = s.spawn(move || trickle_loop(conns, slots, l.every, stop, limit));
        sleep_until(Instant::now() + l.settle);
        mark(Mark::Setup);
        let o = echo(addr, opts, mark);
        stop.store(true, Ordering::SeqCst);
        let (sent, failed) = trickle.join().expect("trickle thread");
        let dropped = count_closed(conns);
        (o, sent, failed, dropped)
    });
    drop(conns);
    o.setup = setup;
    o.background = l.loris;
    o.bg_failed = failed;
    o.dropped = dropped;
    o.sent = trickled;
    o.lost = send_failed;
    o
}

/// One byte per connection per `every`, in `slots` (≥ connections) evenly spread time
/// slots, slot `i` for connection `i` (slots without a connection only sleep); until `stop`
/// or `limit`. (bytes sent, sends that failed other than `WouldBlock`.)
fn trickle_loop(
    conns: &[TcpStream],
    slots: usize,
    every: Duration,
    stop: &AtomicBool,
    limit: Instant,
) -> (u64, u64) {
    let (mut sent, mut failed) = (0u64, 0u64);
    if slots == 0 {
        return (0, 0);
    }
    let mut dead = vec![false; conns.len()];
    let step = every / slots as u32;
    let start = Instant::now();
    'run: for k in 0u32.. {
        for i in 0..slots {
            let due = start + every * k + step * i as u32;
            if stop.load(Ordering::Relaxed) || due >= limit {
                break 'run;
            }
            sleep_until(due);
            let (Some(mut c), Some(dead)) = (conns.get(i), dead.get_mut(i)) else {
                continue;
            };
            if *dead {
                continue;
            }
            match c.write(b"x") {
                Ok(_) => sent += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    failed += 1;
                    *dead = true;
                }
            }
        }
    }
    (sent, failed)
}

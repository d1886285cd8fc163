//! Shared helpers for the integration tests: loopback clients, bounded waits, servers on
//! background threads that are always stopped.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socketserver::{Mode, Server, Transport};

/// Generous timeout for anything a test waits on: tests assert behaviour, not speed.
pub const LONG: Duration = Duration::from_secs(20);

/// A server serving on a background thread; stops and closes it on drop.
pub struct Running<T: Transport, M: Mode> {
    pub server: Arc<Server<T, M>>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl<T: Transport, M: Mode> Running<T, M> {
    pub fn start(server: Server<T, M>) -> Self {
        let server = Arc::new(server);
        let s = server.clone();
        let thread = thread::spawn(move || s.serve_forever());
        Running {
            server,
            thread: Some(thread),
        }
    }

    /// Stops the loop and returns what `serve_forever` returned.
    #[track_caller]
    pub fn stop(mut self) -> io::Result<()> {
        self.server.shutdown();
        self.thread
            .take()
            .unwrap()
            .join()
            .expect("serve_forever panicked")
    }
}

impl<T: Transport, M: Mode> Drop for Running<T, M> {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.server.shutdown();
            let _ = t.join();
        }
    }
}

/// Connects to `addr` with read/write timeouts set.
#[track_caller]
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, LONG).expect("connect");
    s.set_read_timeout(Some(LONG)).unwrap();
    s.set_write_timeout(Some(LONG)).unwrap();
    s
}

/// Sends `msg`, half-closes, reads the reply to EOF. A server that closes early (refusal,
/// failing handler) may reset the connection: what arrived before that is returned.
#[track_caller]
pub fn round_trip(addr: SocketAddr, msg: &[u8]) -> Vec<u8> {
    let mut s = connect(addr);
    let _ = s.write_all(msg);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("round_trip read: {e}"),
        }
    }
}

/// A UDP client socket on loopback with a timeout.
#[track_caller]
pub fn udp_client() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(LONG)).unwrap();
    s
}

/// Polls `cond` every millisecond until it holds or `LONG` passes. For conditions that have
/// no signal (counters updated by another thread); panics with `what` on time-out.
#[track_caller]
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + LONG;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

/// Open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Compile-time check that `T` is `Send + Sync`.
pub fn assert_send_sync<T: Send + Sync>() {}

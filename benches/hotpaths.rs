//! Criterion micro-benchmarks of the hot paths, in-process over loopback (framing has its own
//! bench, `benches/framing.rs`).
//!
//! How to run (about 40 s on 2 cores):
//!
//! ```text
//! cargo bench --bench hotpaths
//! cargo bench --bench hotpaths -- dispatch      # one group
//! ```
//!
//! - `dispatch/udp_64B/*`: one datagram round trip through `UdpServer` (handled on the serving
//!   thread), `ThreadingUdpServer` (handed to the pool: a boxed job, a crossbeam channel hop,
//!   a worker wake-up) and a bare std `recv_from` loop; one at a time (latency, dominated by
//!   the loopback wake-ups) and in bursts of 32 (per-datagram cost: threading − sync is the
//!   cost of pool dispatch per request).
//! - `roundtrip/tcp_echo_64B/*`: one 64-byte echo on an established connection, crate
//!   `ThreadingTcpServer` handler vs a std thread: the per-message cost inside a handler.
//! - `connect/tcp_line_close/*`: connect, one 64-byte line, its echo, close: accept, pool
//!   dispatch, handler construction, `setup`/`handle`/`finish`, `shutdown_request`.

use std::hint::black_box;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::thread;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use socketserver::{
    DatagramRequest, StreamRequest, ThreadingTcpServer, ThreadingUdpServer, UdpServer,
};

fn echo_stream(req: &mut StreamRequest) -> io::Result<()> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = req.rfile.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        req.wfile.write_all(&buf[..n])?;
    }
}

fn echo_datagram(req: &mut DatagramRequest) -> io::Result<()> {
    req.reply(req.packet())
}

/// A std thread-per-connection echo server on a detached thread (it ends with the process).
fn std_tcp_echo() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for c in l.incoming().flatten() {
            thread::spawn(move || {
                c.set_nodelay(true)?;
                let mut r = c.try_clone()?;
                let mut w = c;
                let mut buf = [0u8; 16 * 1024];
                loop {
                    let n = r.read(&mut buf)?;
                    if n == 0 {
                        return Ok::<(), io::Error>(());
                    }
                    w.write_all(&buf[..n])?;
                }
            });
        }
    });
    addr
}

/// A std single-thread `recv_from` loop on a detached thread.
fn std_udp_echo() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = s.local_addr().unwrap();
    thread::spawn(move || {
        let mut buf = vec![0u8; 65_535];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    });
    addr
}

fn udp_client(addr: SocketAddr) -> UdpSocket {
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c
}

fn udp_roundtrip(c: &UdpSocket, msg: &[u8], back: &mut [u8]) {
    c.send(msg).unwrap();
    let n = c.recv(back).unwrap();
    assert_eq!(n, msg.len());
}

/// `BURST` datagrams out, then their `BURST` echoes back: the server's per-datagram cost
/// (dispatch included), not the loopback wake-up latency that dominates a single round trip.
const BURST: usize = 32;

fn udp_burst(c: &UdpSocket, msg: &[u8], back: &mut [u8]) {
    for _ in 0..BURST {
        c.send(msg).unwrap();
    }
    for _ in 0..BURST {
        let n = c.recv(back).unwrap();
        assert_eq!(n, msg.len());
    }
}

fn dispatch(c: &mut Criterion) {
    let msg = [0x5au8; 64];
    let mut back = [0u8; 128];
    let mut g = c.benchmark_group("dispatch/udp_64B");
    g.throughput(Throughput::Elements(1));

    let sync = UdpServer::bind("127.0.0.1:0", echo_datagram).unwrap();
    let pooled = ThreadingUdpServer::bind("127.0.0.1:0", echo_datagram).unwrap();
    thread::scope(|s| {
        s.spawn(|| sync.serve_forever());
        s.spawn(|| pooled.serve_forever());
        let cs = udp_client(sync.server_address().unwrap());
        g.bench_function("sync", |b| {
            b.iter(|| udp_roundtrip(&cs, black_box(&msg), &mut back))
        });
        let cp = udp_client(pooled.server_address().unwrap());
        g.bench_function("threading", |b| {
            b.iter(|| udp_roundtrip(&cp, black_box(&msg), &mut back))
        });
        let cstd = udp_client(std_udp_echo());
        g.bench_function("std_recv_from_loop", |b| {
            b.iter(|| udp_roundtrip(&cstd, black_box(&msg), &mut back))
        });
        g.throughput(Throughput::Elements(BURST as u64));
        for (name, client) in [
            ("burst32/sync", &cs),
            ("burst32/threading", &cp),
            ("burst32/std_recv_from_loop", &cstd),
        ] {
            g.bench_function(name, |b| {
                b.iter(|| udp_burst(client, black_box(&msg), &mut back))
            });
        }
        sync.shutdown();
        pooled.shutdown();
    });
    sync.server_close();
    pooled.server_close();
    g.finish();
}

fn tcp_roundtrip(c: &mut TcpStream, msg: &[u8], back: &mut [u8]) {
    c.write_all(msg).unwrap();
    c.read_exact(back).unwrap();
}

fn roundtrip(c: &mut Criterion) {
    let msg = [0x5au8; 64];
    let mut back = [0u8; 64];
    let mut g = c.benchmark_group("roundtrip/tcp_echo_64B");
    g.throughput(Throughput::Elements(1));
    let server = ThreadingTcpServer::bind("127.0.0.1:0", echo_stream).unwrap();
    thread::scope(|s| {
        s.spawn(|| server.serve_forever());
        let mut conn = TcpStream::connect(server.server_address().unwrap()).unwrap();
        conn.set_nodelay(true).unwrap();
        g.bench_function("crate", |b| {
            b.iter(|| tcp_roundtrip(&mut conn, black_box(&msg), &mut back))
        });
        drop(conn);
        let mut conn = TcpStream::connect(std_tcp_echo()).unwrap();
        conn.set_nodelay(true).unwrap();
        g.bench_function("std_thread", |b| {
            b.iter(|| tcp_roundtrip(&mut conn, black_box(&msg), &mut back))
        });
        server.shutdown();
    });
    server.server_close();
    g.finish();
}

fn one_connection(addr: SocketAddr, msg: &[u8], back: &mut [u8]) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_nodelay(true).unwrap();
    tcp_roundtrip(&mut c, msg, back);
}

fn connect(c: &mut Criterion) {
    let mut msg = [0x5au8; 64];
    msg[63] = b'\n';
    let mut back = [0u8; 64];
    let mut g = c.benchmark_group("connect/tcp_line_close");
    g.throughput(Throughput::Elements(1));
    let server = ThreadingTcpServer::bind("127.0.0.1:0", echo_stream).unwrap();
    thread::scope(|s| {
        s.spawn(|| server.serve_forever());
        let addr = server.server_address().unwrap();
        g.bench_function("crate", |b| {
            b.iter(|| one_connection(addr, black_box(&msg), &mut back))
        });
        let addr = std_tcp_echo();
        g.bench_function("std_thread", |b| {
            b.iter(|| one_connection(addr, black_box(&msg), &mut back))
        });
        server.shutdown();
    });
    server.server_close();
    g.finish();
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    dispatch(&mut c);
    roundtrip(&mut c);
    connect(&mut c);
    c.final_summary();
}

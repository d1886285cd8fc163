//! The Rust peer servers, each run as its own process (`loadgen serve ...`) so that its CPU
//! time and peak RSS can be read from `/proc/PID/stat` and `/proc/PID/status`.
//!
//! Every server binds `127.0.0.1:0` with a backlog of 1024 and `SO_REUSEADDR`, sets
//! `TCP_NODELAY` on accepted sockets (the crate's default), prints `READY ip:port` on stdout
//! and serves until it is killed. Services:
//!
//! - `tcp-echo`: every read is written back, until EOF;
//! - `tcp-sink`: reads until EOF and discards, then sends the byte count (8 bytes, LE);
//! - `udp-echo`: each datagram is sent back to its sender.
//!
//! `crate-evented` is `EventedTcpServer` (`tcp-echo` only) with `MessageFraming::Raw`, which makes
//! everything buffered one message, so that its handler echoes whatever one read brought,
//! as the byte-stream echoes of the other peers do; `crate-evented-lines` is the same server
//! with the default framing (`MessageFraming::Lines`), echoing line by line (the slow-loris
//! scenario: a line that never ends is half a message the reactor holds without a thread).
//!
//! `std-mmsg` (`udp-echo` only, Linux) is not a library: a plain-libc `recvmmsg`/`sendmmsg`
//! loop that echoes in place, the ceiling of what batching alone can buy.
//!
//! Every server first raises its `RLIMIT_NOFILE` to the hard limit (the idle scenario holds
//! 10 000 connections); the harness reads the result from `/proc/PID/limits`.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::thread;

use socket2::{Domain, Socket, Type};
use socketserver::framing::MessageFraming;
use socketserver::{
    Channel, DatagramRequest, EventedTcpServer, MessageHandler, StreamRequest, ThreadingTcpServer,
    ThreadingUdpServer, UdpServer,
};

fn ready(addr: SocketAddr) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "READY {addr}");
    let _ = out.flush();
}

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A std listener with the same bind-time options as the crate's default.
fn std_listener() -> io::Result<TcpListener> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.bind(&any_port().into())?;
    s.listen(1024)?;
    Ok(s.into())
}

/// The echo servers' read buffer (crate, std and tokio alike): 4 KiB, as the tutorials'
/// `recv(1024)`…`recv(4096)`. It is on the heap, as tokio's is: a zeroed stack array would
/// touch its pages of every thread's stack and show in the RSS.
const ECHO_BUF: usize = 4 * 1024;

/// The echo of the crate and std peers.
fn echo_loop(mut r: impl Read, mut w: impl Write) -> io::Result<u64> {
    let mut buf = vec![0u8; ECHO_BUF];
    let mut total = 0;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        w.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit; returns (soft before,
/// soft after, hard).
pub fn raise_nofile() -> io::Result<(libc::rlim_t, libc::rlim_t, libc::rlim_t)> {
    let (before, after) = socketserver::raise_fd_limit()?;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a valid rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((before as libc::rlim_t, after as libc::rlim_t, lim.rlim_max))
}

/// The evented echo's handler: the message back.
struct EventedEcho;

impl MessageHandler for EventedEcho {
    fn handle(&mut self, ch: &mut Channel, msg: &[u8]) -> io::Result<()> {
        ch.push(msg);
        Ok(())
    }
}

/// Runs one server until the process is killed.
pub fn serve(server: &str, service: &str, max_workers: Option<usize>) -> io::Result<()> {
    // Best effort: a server that cannot raise it still serves (the harness reports the
    // limit it has).
    let _ = raise_nofile();
    match (server, service) {
        ("crate-evented" | "crate-evented-lines", "tcp-echo") => {
            let mut b = EventedTcpServer::builder();
            if let Some(max) = max_workers {
                b = b.workers(4, max);
            }
            if server == "crate-evented" {
                // Every byte buffered is one message: a byte-stream echo.
                b = b.framing(MessageFraming::Raw);
            }
            let s = b.bind(any_port(), || EventedEcho)?;
            ready(s.server_address()?);
            s.serve_forever()
        }
        ("crate", "tcp-echo" | "tcp-sink") => {
            let mut b = ThreadingTcpServer::builder();
            if let Some(max) = max_workers {
                b = b.workers(4, max);
            }
            let s = if service == "tcp-echo" {
                b.bind(any_port(), |req: &mut StreamRequest| {
                    echo_loop(&mut req.rfile, &mut req.wfile).map(drop)
                })?
            } else {
                b.bind(any_port(), |req: &mut StreamRequest| {
                    let n = io::copy(&mut req.rfile, &mut io::sink())?;
                    req.wfile.write_all(&n.to_le_bytes())
                })?
            };
            ready(s.server_address()?);
            s.serve_forever()
        }
        ("crate", "udp-echo") => {
            // The Python way (`self.wfile.write(self.rfile.read())`): the reply leaves after
            // the handler, with the others of its receive batch (`sendmmsg`).
            let s = ThreadingUdpServer::bind(any_port(), |req: &mut DatagramRequest| {
                io::copy(&mut req.rfile, &mut req.wfile).map(drop)
            })?;
            ready(s.server_address()?);
            s.serve_forever()
        }
        ("crate-sync", "udp-echo") => {
            let s = UdpServer::bind(any_port(), |req: &mut DatagramRequest| {
                io::copy(&mut req.rfile, &mut req.wfile).map(drop)
            })?;
            ready(s.server_address()?);
            s.serve_forever()
        }
        ("crate-sync-reply", "udp-echo") => {
            // `reply()`: sent at once, one `sendto` per datagram, as the std loop does.
            let s = UdpServer::bind(any_port(), |req: &mut DatagramRequest| {
                req.reply(req.packet())
            })?;
            ready(s.server_address()?);
            s.serve_forever()
        }
        ("std", "tcp-echo" | "tcp-sink") => {
            let l = std_listener()?;
            ready(l.local_addr()?);
            let sink = service == "tcp-sink";
            for conn in l.incoming() {
                let Ok(conn) = conn else { continue };
                thread::spawn(move || std_conn(conn, sink));
            }
            Ok(())
        }
        ("std", "udp-echo") => {
            // The single-thread `recv_from` loop.
            let sock = UdpSocket::bind(any_port())?;
            ready(sock.local_addr()?);
            let mut buf = vec![0u8; 65_535];
            loop {
                let (n, from) = sock.recv_from(&mut buf)?;
                sock.send_to(&buf[..n], from)?;
            }
        }
        ("std-mmsg", "udp-echo") => mmsg_echo(),
        ("tokio", _) => tokio_serve(service),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("no server {server:?} for service {service:?}"),
        )),
    }
}

/// The ceiling of batching, with no crate: one thread on `recvmmsg(MSG_WAITFORONE)` (up to 16
/// datagrams, blocking for the first) and `sendmmsg` of the same buffers back to the same
/// addresses, in place: no copy, no allocation, no bookkeeping. 2 KiB buffers (the bench's
/// datagrams are 64 B).
#[cfg(target_os = "linux")]
fn mmsg_echo() -> io::Result<()> {
    use std::os::fd::AsRawFd;
    const SLOTS: usize = 16;
    let sock = UdpSocket::bind(any_port())?;
    ready(sock.local_addr()?);
    let mut bufs = vec![[0u8; 2048]; SLOTS];
    // SAFETY: all-zero `sockaddr_storage`, `iovec` and `mmsghdr` are valid values (null
    // pointers, zero lengths); the pointers set below point into `bufs`, `addrs` and `iovs`,
    // which outlive every call and are never moved (allocated once, never resized).
    let mut addrs: Vec<libc::sockaddr_storage> = vec![unsafe { std::mem::zeroed() }; SLOTS];
    let mut iovs: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; SLOTS];
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; SLOTS];
    for i in 0..SLOTS {
        iovs[i].iov_base = bufs[i].as_mut_ptr().cast();
        iovs[i].iov_len = bufs[i].len();
        msgs[i].msg_hdr.msg_iov = &mut iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
    }
    let fd = sock.as_raw_fd();
    loop {
        for i in 0..SLOTS {
            iovs[i].iov_len = bufs[i].len();
            msgs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as _;
        }
        // SAFETY: `msgs` holds SLOTS headers whose buffers and names are valid (see above).
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                SLOTS as _,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let n = n as usize;
        for i in 0..n {
            iovs[i].iov_len = msgs[i].msg_len as usize; // echo what came, to whom it came from
        }
        let mut sent = 0;
        while sent < n {
            // SAFETY: as above; the first `n` headers were just filled by the kernel.
            let k = unsafe { libc::sendmmsg(fd, msgs[sent..].as_mut_ptr(), (n - sent) as _, 0) };
            if k > 0 {
                sent += k as usize;
            } else if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                sent += 1; // that reply is dropped (the client counts it lost) and the rest go
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn mmsg_echo() -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "std-mmsg needs recvmmsg (Linux)",
    ))
}

fn std_conn(mut conn: TcpStream, sink: bool) -> io::Result<()> {
    conn.set_nodelay(true)?;
    if sink {
        let n = io::copy(&mut conn, &mut io::sink())?;
        conn.write_all(&n.to_le_bytes())
    } else {
        let r = conn.try_clone()?;
        echo_loop(r, conn).map(drop)
    }
}

/// tokio's multi-thread runtime (one worker per core), a task per connection, as in tokio's
/// `examples/echo-tcp.rs`; for UDP one task with `recv_from`/`send_to`.
fn tokio_serve(service: &str) -> io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // One worker per CPU this process may run on (tokio's default); on one CPU (the harness
    // pins servers) tokio's current-thread runtime, which is what one worker amounts to.
    let rt = if std::env::var_os("LOADGEN_TOKIO_MT").is_some()
        || thread::available_parallelism().is_ok_and(|n| n.get() > 1)
    {
        tokio::runtime::Builder::new_multi_thread()
            .enable_io()
            .build()?
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?
    };
    let service = service.to_string();
    rt.block_on(async move {
        if service == "udp-echo" {
            let sock = tokio::net::UdpSocket::bind(any_port()).await?;
            ready(sock.local_addr()?);
            let mut buf = vec![0u8; 65_535];
            loop {
                let (n, from) = sock.recv_from(&mut buf).await?;
                sock.send_to(&buf[..n], from).await?;
            }
        }
        let std_l = std_listener()?;
        std_l.set_nonblocking(true)?;
        let l = tokio::net::TcpListener::from_std(std_l)?;
        ready(l.local_addr()?);
        let sink = service == "tcp-sink";
        loop {
            let Ok((mut conn, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = conn.set_nodelay(true);
                // 8 KiB reads for the sink, as `io::copy` does in the std and crate sinks.
                let mut buf = vec![0u8; if sink { 8 * 1024 } else { ECHO_BUF }];
                let mut total = 0u64;
                loop {
                    let n = match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    total += n as u64;
                    if !sink && conn.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
                if sink {
                    let _ = conn.write_all(&total.to_le_bytes()).await;
                }
            });
        }
    })
}

//! Shutdown latency of an idle server, measured in-process: the time from calling
//! `shutdown()` to `serve_forever()` returning on the serving thread, over many repetitions
//! on one server (`serve_forever` may run again after a shutdown). Also the time of
//! `server_close()` on an idle server (close the socket, drain an empty pool, join workers).
//! Datagram servers also: `shutdown()` right after a reply was received, when the serving
//! loop may still wait in its receive (`RECEIVE_WAIT`, rounded up by the kernel) for the
//! next datagram.

use std::io;
use std::net::UdpSocket;
use std::thread;
use std::time::{Duration, Instant};

use socketserver::{
    DatagramRequest, StreamRequest, ThreadingTcpServer, ThreadingUdpServer, UdpServer,
};

/// Median and maximum of a sample.
#[derive(Debug, Clone, Copy, Default)]
pub struct Spread {
    pub median: Duration,
    pub max: Duration,
    pub n: usize,
}

impl Spread {
    pub fn of(mut v: Vec<Duration>) -> Spread {
        v.sort();
        Spread {
            median: v.get(v.len() / 2).copied().unwrap_or_default(),
            max: v.last().copied().unwrap_or_default(),
            n: v.len(),
        }
    }
}

/// The figures for one server type.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShutdownFigures {
    /// `shutdown()` called → `serve_forever()` returned.
    pub to_return: Spread,
    /// `server_close()` of an idle server (fresh one each time).
    pub close: Spread,
    /// Datagram servers: `shutdown()` called as soon as the reply to one datagram arrived
    /// (n = 0: not measured).
    pub after_reply: Spread,
}

macro_rules! measure {
    ($server:expr, $reps:expr) => {
        measure!($server, $reps, |_: &socketserver::ServerHandle| Ok::<
            (),
            io::Error,
        >(()))
    };
    ($server:expr, $reps:expr, $before:expr) => {{
        let server = $server;
        let handle = server.handle();
        let mut to_return = Vec::with_capacity($reps);
        for _ in 0..$reps {
            thread::scope(|s| {
                let serving = s.spawn(|| {
                    server.serve_forever().expect("serve_forever");
                    Instant::now()
                });
                while !handle.is_serving() {
                    thread::sleep(Duration::from_micros(50));
                }
                // A failed step still shuts the server down, or the scope would never end.
                let before = $before(&handle);
                let t0 = Instant::now();
                handle.shutdown();
                let returned = serving.join().expect("serving thread");
                before?;
                to_return.push(returned.saturating_duration_since(t0));
                Ok::<(), io::Error>(())
            })?;
        }
        server.server_close();
        to_return
    }};
}

/// Idle, asleep in `poll(2)`.
fn pause(_: &socketserver::ServerHandle) -> io::Result<()> {
    thread::sleep(Duration::from_millis(2));
    Ok(())
}

/// `reps` shutdowns on one server made by `$make`, then `close_reps` closes of fresh ones.
macro_rules! figures {
    ($make:expr, $reps:expr, $close_reps:expr) => {{
        let to_return = measure!($make?, $reps, pause);
        let mut close = Vec::with_capacity($close_reps);
        for _ in 0..$close_reps {
            let server = $make?;
            let t0 = Instant::now();
            server.server_close();
            close.push(t0.elapsed());
        }
        Ok::<_, io::Error>(ShutdownFigures {
            to_return: Spread::of(to_return),
            close: Spread::of(close),
            after_reply: Spread::default(),
        })
    }};
}

/// `ThreadingTcpServer`: `reps` shutdowns on one server, `close_reps` closes of fresh ones.
pub fn tcp(reps: usize, close_reps: usize) -> io::Result<ShutdownFigures> {
    let noop = |_: &mut StreamRequest| Ok(());
    figures!(
        ThreadingTcpServer::bind("127.0.0.1:0", noop),
        reps,
        close_reps
    )
}

/// A datagram echo server of type `$ty`: [`figures!`], and `reps` shutdowns right after a
/// reply.
macro_rules! udp_figures {
    ($ty:ident, $reps:expr, $close_reps:expr) => {{
        let echo = |req: &mut DatagramRequest| req.reply(req.packet());
        let mut f = figures!($ty::bind("127.0.0.1:0", echo), $reps, $close_reps)?;
        let server = $ty::bind("127.0.0.1:0", echo)?;
        let to = server.server_address()?;
        f.after_reply = Spread::of(measure!(&server, $reps, after_reply(&to)));
        Ok(f)
    }};
}

/// `ThreadingUdpServer`, as [`tcp`], and `reps` shutdowns right after a reply.
pub fn udp(reps: usize, close_reps: usize) -> io::Result<ShutdownFigures> {
    udp_figures!(ThreadingUdpServer, reps, close_reps)
}

/// `UdpServer` (handlers on the serving thread), as [`udp`].
pub fn udp_sync(reps: usize, close_reps: usize) -> io::Result<ShutdownFigures> {
    udp_figures!(UdpServer, reps, close_reps)
}

/// Sends one datagram to `to` and waits for its echo: the serving loop has just received.
fn after_reply(
    to: &std::net::SocketAddr,
) -> impl Fn(&socketserver::ServerHandle) -> io::Result<()> {
    let to = *to;
    move |_| {
        let c = UdpSocket::bind("127.0.0.1:0")?;
        c.set_read_timeout(Some(Duration::from_secs(5)))?;
        c.send_to(b"ping", to)?;
        let mut buf = [0u8; 8];
        let n = c.recv(&mut buf)?;
        if &buf[..n] != b"ping" {
            return Err(io::Error::other("wrong echo"));
        }
        Ok(())
    }
}

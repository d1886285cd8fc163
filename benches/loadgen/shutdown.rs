//! Shutdown latency of an idle server, measured in-process: the time from calling
//! `shutdown()` to `serve_forever()` returning on the serving thread, over many repetitions
//! on one server (`serve_forever` may run again after a shutdown). Also the time of
//! `server_close()` on an idle server (close the socket, drain an empty pool, join workers).

use std::io;
use std::thread;
use std::time::{Duration, Instant};

use socketserver::{DatagramRequest, StreamRequest, ThreadingTcpServer, ThreadingUdpServer};

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
}

macro_rules! measure {
    ($server:expr, $reps:expr) => {{
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
                thread::sleep(Duration::from_millis(2)); // idle, asleep in poll(2)
                let t0 = Instant::now();
                handle.shutdown();
                let returned = serving.join().expect("serving thread");
                to_return.push(returned.saturating_duration_since(t0));
            });
        }
        server.server_close();
        to_return
    }};
}

/// `reps` shutdowns on one server made by `$make`, then `close_reps` closes of fresh ones.
macro_rules! figures {
    ($make:expr, $reps:expr, $close_reps:expr) => {{
        let to_return = measure!($make?, $reps);
        let mut close = Vec::with_capacity($close_reps);
        for _ in 0..$close_reps {
            let server = $make?;
            let t0 = Instant::now();
            server.server_close();
            close.push(t0.elapsed());
        }
        Ok(ShutdownFigures {
            to_return: Spread::of(to_return),
            close: Spread::of(close),
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

/// `ThreadingUdpServer`, as [`tcp`].
pub fn udp(reps: usize, close_reps: usize) -> io::Result<ShutdownFigures> {
    let noop = |_: &mut DatagramRequest| Ok(());
    figures!(
        ThreadingUdpServer::bind("127.0.0.1:0", noop),
        reps,
        close_reps
    )
}

//! Pre-fork: N supervised worker processes on one port. The pre-fork parent runs in a child
//! process of the test (spawned from this binary); workers answer with their pid.
#![cfg(feature = "ctrlc")]

mod util;

use std::collections::HashSet;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use socketserver::prefork::Prefork;
use socketserver::*;
use util::*;

/// "pid" → the worker's pid; "go" → "started", then waits for "finish" → "done".
fn handler(req: &mut StreamRequest) -> io::Result<()> {
    let mut line = String::new();
    req.rfile.read_line(&mut line)?;
    if line == "go\n" {
        req.wfile.write_all(b"started\n")?;
        line.clear();
        req.rfile.read_line(&mut line)?;
        return req.wfile.write_all(b"done\n");
    }
    writeln!(req.wfile, "{}", std::process::id())
}

/// The same protocol as a message handler for evented workers: "go" takes the connection
/// over (a request in flight, in the drain's eyes, until "done" is written).
struct PidLines;

impl MessageHandler for PidLines {
    fn handle(&mut self, ch: &mut Channel, line: &[u8]) -> io::Result<()> {
        if line == b"go\n" {
            ch.take_over();
        } else {
            writeln!(ch, "{}", std::process::id())?;
            ch.close_when_done();
        }
        Ok(())
    }

    fn handle_blocking(&mut self, ch: &mut Channel, s: &mut BlockingStream) -> io::Result<()> {
        s.write_all(b"started\n")?;
        let mut line = String::new();
        s.read_line(&mut line)?;
        s.write_all(b"done\n")?;
        ch.close_when_done();
        Ok(())
    }
}

fn prefork_parent(reuse_port: bool) {
    prefork_run(reuse_port, false)
}

fn prefork_run(reuse_port: bool, evented: bool) {
    init_stderr_log();
    // Pick a free port first: workers with SO_REUSEPORT each bind it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let prefork = Prefork::new(2).reuse_port(reuse_port);
    shutdown_on_ctrl_c([prefork.handle()]).unwrap();
    println!("PORT {port}");
    if evented {
        prefork
            .run(("127.0.0.1", port), |listener| {
                EventedTcpServer::builder()
                    .read_timeout(None)
                    .from_socket(listener, || PidLines)
            })
            .unwrap();
    } else {
        prefork
            .run(("127.0.0.1", port), |listener| {
                ThreadingTcpServer::builder()
                    .read_timeout(None)
                    .from_socket(listener, handler)
            })
            .unwrap();
    }
    println!("EXITED");
}

#[test]
fn prefork_child() {
    if is_child() {
        prefork_parent(false);
    }
}

#[test]
fn prefork_evented_child() {
    if is_child() {
        prefork_run(false, true);
    }
}

#[test]
fn prefork_reuse_port_child() {
    if is_child() {
        prefork_parent(true);
    }
}

/// Asks for a worker pid; `None` if that connection failed (a worker dying mid-request).
fn worker_pid(addr: SocketAddr) -> Option<i32> {
    let mut s = TcpStream::connect_timeout(&addr, LONG).ok()?;
    s.set_read_timeout(Some(LONG)).ok()?;
    s.write_all(b"pid\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.trim().parse().ok()
}

fn alive(pid: i32) -> bool {
    // A reaped process has no /proc entry; a zombie's state is 'Z'.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// Collects worker pids until `want` distinct ones answered (bounded).
fn pids(addr: SocketAddr, want: usize) -> HashSet<i32> {
    let mut seen = HashSet::new();
    let deadline = Instant::now() + LONG;
    while seen.len() < want {
        assert!(Instant::now() < deadline, "only saw workers {seen:?}");
        if let Some(p) = worker_pid(addr) {
            seen.insert(p);
        }
    }
    seen
}

fn killed_worker_is_replaced(test: &str) {
    let mut parent = spawn_self(test);
    let addr = SocketAddr::from(([127, 0, 0, 1], parent.port()));
    let workers = pids(addr, 2);
    let victim = *workers.iter().next().unwrap();
    // SAFETY: kill(2) on a worker pid that just answered.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    ChildProc::expect_line(&parent.stderr, &format!("worker {victim} died"));
    // Keeps answering, now from a replacement.
    let after = pids(addr, 2);
    assert!(!after.contains(&victim), "the killed worker still answers");
    let all: HashSet<i32> = workers.union(&after).copied().collect();

    // Ctrl-C with a request in flight: it completes, then everything exits.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(LONG)).unwrap();
    s.write_all(b"go\n").unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    assert_eq!(line, "started\n");
    parent.signal(libc::SIGINT);
    ChildProc::expect_line(&parent.stderr, "draining workers");
    s.write_all(b"finish\n").unwrap();
    let mut rest = String::new();
    s.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "done\n", "the in-flight request must complete");
    assert_eq!(parent.wait_exit(), Some(0));
    ChildProc::expect_line(&parent.stdout, "EXITED");
    let deadline = Instant::now() + LONG;
    while all.iter().any(|p| alive(*p)) {
        assert!(Instant::now() < deadline, "a worker outlived the parent");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_sigkilled_worker_is_replaced_and_ctrl_c_leaves_no_process() {
    killed_worker_is_replaced("prefork_child");
}

#[test]
fn reuse_port_workers_are_replaced_and_drained_too() {
    killed_worker_is_replaced("prefork_reuse_port_child");
}

#[test]
fn evented_workers_are_replaced_and_drained_too() {
    killed_worker_is_replaced("prefork_evented_child");
}

//! Ctrl-C (SIGINT) on a real process: the in-flight request completes, the process exits
//! 0; a second signal forces the close. Needs the `ctrlc` feature.
#![cfg(feature = "ctrlc")]

mod util;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;

use socketserver::*;
use util::*;

/// Reads "go", says "started <pid>", reads "finish", says "done": one request in two
/// steps, so the wait for "finish" is marked as part of it (`mark_busy`), and the drain
/// waits for it.
fn two_step(req: &mut StreamRequest) -> io::Result<()> {
    let mut line = String::new();
    req.rfile.read_line(&mut line)?;
    writeln!(req.wfile, "started {}", std::process::id())?;
    req.mark_busy();
    line.clear();
    req.rfile.read_line(&mut line)?;
    req.wfile.write_all(b"done\n")
}

fn serve_until_signalled<M: Mode>() {
    init_stderr_log();
    let server = Server::<Tcp, M>::builder()
        .read_timeout(None)
        .bind("127.0.0.1:0", two_step)
        .unwrap();
    shutdown_on_ctrl_c([server.handle()]).unwrap();
    println!("PORT {}", server.server_address().unwrap().port());
    server.serve_forever().unwrap();
    let clean = server.server_close();
    println!("CLOSED clean={clean} served={}", server.stats().served);
}

#[test]
fn ctrl_c_child() {
    if is_child() {
        serve_until_signalled::<Threading>();
    }
}

#[test]
fn ctrl_c_forking_child() {
    if is_child() {
        serve_until_signalled::<Forking>();
    }
}

fn start() -> (ChildProc, std::net::TcpStream) {
    start_child("ctrl_c_child").0
}

/// Spawns `test`, starts a request; returns the request's handler pid too.
fn start_child(test: &str) -> ((ChildProc, std::net::TcpStream), i32) {
    let child = spawn_self(test);
    let addr = SocketAddr::from(([127, 0, 0, 1], child.port()));
    let mut s = connect(addr);
    s.write_all(b"go\n").unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    assert!(line.starts_with("started "), "{line}");
    let pid = line["started ".len()..].trim().parse().unwrap();
    ((child, s), pid)
}

#[test]
fn sigint_lets_the_in_flight_request_finish_then_exits_0() {
    let (mut child, mut s) = start();
    child.signal(libc::SIGINT);
    ChildProc::expect_line(&child.stderr, "shutting down");
    // The request is still in flight: finish it and get its reply.
    s.write_all(b"finish\n").unwrap();
    let mut rest = String::new();
    s.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "done\n");
    assert_eq!(child.wait_exit(), Some(0));
    let closed = ChildProc::expect_line(&child.stdout, "CLOSED");
    assert_eq!(closed, "CLOSED clean=true served=1");
}

#[test]
fn a_second_sigint_forces_the_close_and_still_exits_0() {
    let (mut child, mut s) = start();
    child.signal(libc::SIGINT);
    ChildProc::expect_line(&child.stderr, "shutting down");
    child.signal(libc::SIGINT);
    // Never sends "finish": the forced close ends the connection.
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert_eq!(child.wait_exit(), Some(0));
    let closed = ChildProc::expect_line(&child.stdout, "CLOSED");
    assert!(closed.starts_with("CLOSED clean=false"), "{closed}");
}

#[test]
fn sigint_on_a_forking_server_lets_children_finish_and_leaves_no_zombie() {
    let ((mut parent, mut s), handler_pid) = start_child("ctrl_c_forking_child");
    assert_ne!(
        handler_pid as u32,
        parent.child.id(),
        "the handler runs in a child"
    );
    // A terminal's Ctrl-C reaches the whole process group: signal both.
    parent.signal(libc::SIGINT);
    // SAFETY: kill(2) on the forked handler process.
    unsafe { libc::kill(handler_pid, libc::SIGINT) };
    ChildProc::expect_line(&parent.stderr, "shutting down");
    s.write_all(b"finish\n").unwrap();
    let mut rest = String::new();
    s.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "done\n", "the forked child must finish its request");
    assert_eq!(parent.wait_exit(), Some(0));
    let closed = ChildProc::expect_line(&parent.stdout, "CLOSED");
    assert_eq!(closed, "CLOSED clean=true served=1");
    // Reaped by its parent before it exited: no process, no zombie.
    assert!(
        std::fs::metadata(format!("/proc/{handler_pid}")).is_err(),
        "the forked child is still around"
    );
}

#[test]
fn ctrl_c_callback_child() {
    if is_child() {
        init_stderr_log();
        let server = ThreadingTcpServer::bind("127.0.0.1:0", two_step).unwrap();
        shutdown_on_ctrl_c_with([server.handle()], |n| println!("CALLBACK {n}")).unwrap();
        println!("PORT {}", server.server_address().unwrap().port());
        server.serve_forever().unwrap();
        server.server_close();
        println!("CLOSED");
    }
}

#[test]
fn sigint_runs_the_users_callback_besides_the_shutdown() {
    let mut child = spawn_self("ctrl_c_callback_child");
    let _port = child.port();
    child.signal(libc::SIGINT);
    assert_eq!(child.wait_exit(), Some(0));
    // The callback's thread and the closing main thread print in either order.
    let lines: Vec<String> = child.stdout.iter().collect();
    assert!(
        lines.iter().any(|l| l.ends_with("CALLBACK 1")),
        "no callback: {lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("CLOSED")),
        "not closed: {lines:?}"
    );
}

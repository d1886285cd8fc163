//! Descriptor exhaustion: with `RLIMIT_NOFILE` lowered in a child process, the server
//! survives EMFILE, uses little CPU while exhausted (back-off, not Python's busy loop), and
//! serves the waiting clients once descriptors are freed.

mod util;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use socketserver::*;
use util::*;

/// Echoes lines, as a message handler (for the evented server).
struct Lines;

impl MessageHandler for Lines {
    fn handle(&mut self, ch: &mut Channel, line: &[u8]) -> std::io::Result<()> {
        ch.push(line);
        Ok(())
    }
}

#[test]
fn emfile_child() {
    if is_child() {
        exhaust_and_serve(ThreadingTcpServer::bind("127.0.0.1:0", echo_lines).unwrap());
    }
}

#[test]
fn emfile_evented_child() {
    if is_child() {
        exhaust_and_serve(EventedTcpServer::bind("127.0.0.1:0", || Lines).unwrap());
    }
}

/// Lowers `RLIMIT_NOFILE` to a few more descriptors than are open, then serves.
fn exhaust_and_serve<M: Mode>(server: Server<Tcp, M>) {
    let limit = (open_fds() + 10) as libc::rlim_t;
    // SAFETY: setrlimit with a valid struct.
    let rc = unsafe {
        libc::setrlimit(
            libc::RLIMIT_NOFILE,
            &libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            },
        )
    };
    assert_eq!(rc, 0);
    println!("PORT {}", server.server_address().unwrap().port());
    server.serve_forever().unwrap();
}

/// Sends a line and waits up to `wait` for the echo.
fn answered(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut line = String::new();
    let ok = BufReader::new(&*s).read_line(&mut line).is_ok() && line == "hi\n";
    s.set_read_timeout(Some(LONG)).unwrap();
    ok
}

#[test]
fn server_survives_emfile_without_spinning_and_recovers() {
    survives_emfile("emfile_child");
}

#[test]
fn evented_server_survives_emfile_without_spinning_and_recovers() {
    survives_emfile("emfile_evented_child");
}

fn survives_emfile(child: &str) {
    let child = spawn_self(child);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], child.port()));

    // Fill the child's descriptor table: connections are served until accept hits EMFILE.
    let mut served = Vec::new();
    let mut pending = Vec::new();
    for _ in 0..40 {
        let mut s = connect(addr);
        s.write_all(b"hi\n").unwrap();
        if pending.is_empty() && answered(&mut s, Duration::from_millis(1500)) {
            served.push(s);
        } else {
            pending.push(s);
        }
    }
    assert!(
        !served.is_empty() && !pending.is_empty(),
        "the limit was never reached"
    );

    // Exhausted, with clients waiting: measure the child's CPU use over one second.
    let before = child.cpu_ticks();
    std::thread::sleep(Duration::from_secs(1));
    let used = child.cpu_ticks() - before;
    assert!(
        used <= 20,
        "{used} ticks (1/100 s) of CPU in 1 s while exhausted: spinning?"
    );

    // Free descriptors: every waiting client is served (each closes once answered, so the
    // next one gets its descriptor).
    drop(served);
    for (i, mut s) in pending.into_iter().enumerate() {
        assert!(
            answered(&mut s, LONG),
            "pending client {i} never served after recovery"
        );
    }
}

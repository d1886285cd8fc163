//! Signals never fail a request: a `recv` or `send` interrupted by a signal (`EINTR`) on an
//! accepted socket is retried by the library, not handed to the handler as
//! `Interrupted`. Accepted sockets carry `SO_RCVTIMEO`/`SO_SNDTIMEO`, and on such sockets
//! Linux returns `EINTR` even for a handler installed with `SA_RESTART` (signal(7)), which
//! is how a Ctrl-C used to drop the request in flight of a synchronous server.

mod util;

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use socketserver::*;
use util::*;

extern "C" fn on_sigusr2(_: libc::c_int) {}

/// A no-op SIGUSR2 handler *with* `SA_RESTART`, as ctrlc and most programs install theirs.
fn install_restarting_handler() {
    // SAFETY: sigaction with a zeroed struct, a no-op handler and SA_RESTART.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigusr2 as *const () as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigaction(libc::SIGUSR2, &sa, std::ptr::null_mut());
    }
}

/// The handler thread, as `pthread_self` (to signal it) and its kernel tid (to watch it).
type HandlerThread = Arc<Mutex<Option<(libc::pthread_t, libc::pid_t)>>>;

fn record_thread(slot: &HandlerThread) {
    // SAFETY: pthread_self and gettid have no preconditions.
    *slot.lock() = Some(unsafe { (libc::pthread_self(), libc::gettid()) });
}

/// Whether thread `tid` of this process is asleep (blocked in a system call).
fn is_sleeping(tid: libc::pid_t) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
    stat.rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().next())
        == Some("S")
}

/// Waits until the handler thread blocks, then interrupts it with SIGUSR2, `times` times.
fn interrupt_when_blocked(thread: &HandlerThread, times: usize) {
    wait_until("the handler to start", || thread.lock().is_some());
    let (pthread, tid) = thread.lock().unwrap();
    for _ in 0..times {
        wait_until("the handler to block", || is_sleeping(tid));
        // SAFETY: the handler thread is alive: it is blocked until the test sends or reads.
        unsafe { libc::pthread_kill(pthread, libc::SIGUSR2) };
    }
}

#[test]
fn a_read_interrupted_by_a_signal_is_retried_not_reported() {
    install_restarting_handler();
    let thread = HandlerThread::default();
    let t = thread.clone();
    let server = ThreadingTcpServer::builder()
        .read_timeout(Some(LONG))
        .bind("127.0.0.1:0", move |req: &mut StreamRequest| {
            record_thread(&t);
            // Through rfile (BufReader) and through the connection itself.
            let mut buf = [0u8; 3];
            req.rfile.read_exact(&mut buf[..1])?;
            let n = req.rfile.read(&mut buf[1..])?;
            let mut conn = req.connection().clone();
            let m = conn.read(&mut buf[1 + n..])?;
            req.wfile.write_all(&buf[..1 + n + m])
        })
        .unwrap();
    let addr = server.server_address().unwrap();
    let run = Running::start(server);
    let mut c = connect(addr);
    for byte in [b"a", b"b", b"c"] {
        interrupt_when_blocked(&thread, 3);
        c.write_all(byte).unwrap();
    }
    let mut reply = Vec::new();
    c.read_to_end(&mut reply).unwrap();
    assert_eq!(
        reply, b"abc",
        "the handler failed: the connection closed early"
    );
    wait_until("served", || run.server.stats().served == 1);
    assert_eq!(run.server.stats().errors, 0);
}

#[test]
fn a_write_interrupted_by_a_signal_is_retried_not_reported() {
    const SIZE: usize = 16 * 1024 * 1024;
    install_restarting_handler();
    let thread = HandlerThread::default();
    let t = thread.clone();
    let failed = Arc::new(Mutex::new(None::<io::ErrorKind>));
    let f = failed.clone();
    let server = ThreadingTcpServer::builder()
        .write_timeout(Some(LONG))
        .bind("127.0.0.1:0", move |req: &mut StreamRequest| {
            record_thread(&t);
            let data = vec![b'x'; 64 * 1024];
            let mut conn = req.connection().clone();
            let mut sent = 0;
            while sent < SIZE {
                // Plain `write`, not `write_all`: the Connection itself must not fail.
                match conn.write(&data[..(SIZE - sent).min(data.len())]) {
                    Ok(n) => sent += n,
                    Err(e) => {
                        *f.lock() = Some(e.kind());
                        return Err(e);
                    }
                }
            }
            Ok(())
        })
        .unwrap();
    let addr = server.server_address().unwrap();
    let _run = Running::start(server);
    let mut c = connect(addr);
    // Nobody reads yet: the handler fills the socket buffers and blocks in send.
    interrupt_when_blocked(&thread, 5);
    let mut total = 0;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = c.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n;
    }
    assert_eq!(*failed.lock(), None, "a write failed");
    assert_eq!(total, SIZE);
}

#[test]
fn a_signal_during_a_slow_request_does_not_cost_the_request() {
    // The same through a synchronous server and a frame reader: nothing but the handler runs.
    install_restarting_handler();
    let thread = HandlerThread::default();
    let t = thread.clone();
    let server = TcpServer::builder()
        .read_timeout(Some(Duration::from_secs(30)))
        .bind("127.0.0.1:0", move |req: &mut StreamRequest| {
            record_thread(&t);
            let framing = framing::Framing::python();
            let frame = framing.read_frame(&mut req.rfile)?.unwrap_or_default();
            framing.write_frame(&mut req.wfile, &frame)
        })
        .unwrap();
    let addr = server.server_address().unwrap();
    let _run = Running::start(server);
    let mut c = connect(addr);
    interrupt_when_blocked(&thread, 3);
    c.write_all(&5i32.to_le_bytes()).unwrap();
    interrupt_when_blocked(&thread, 3);
    c.write_all(b"hello").unwrap();
    let mut reply = Vec::new();
    c.read_to_end(&mut reply).unwrap();
    assert_eq!(reply, b"\x05\0\0\0hello");
}

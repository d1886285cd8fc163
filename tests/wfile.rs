//! `wfile` with Python's `wbufsize` choice (issue 13.8): buffered by default, sent before
//! the handler reads and when it returns, so a reply written in pieces leaves as one
//! segment even with `TCP_NODELAY` on; `wbufsize(0)` sends each write at once.

mod util;

use std::io::{self, BufRead, Read, Write};
use std::net::TcpStream;

use crossbeam_channel::bounded;
use socketserver::*;
use util::*;

/// Replies "OK\n" to every line, in three writes (`write!` twice, then `writeln!`).
fn ok_in_pieces(req: &mut StreamRequest) -> io::Result<()> {
    let mut line = String::new();
    while req.rfile.read_line(&mut line)? > 0 {
        write!(req.wfile, "O")?;
        write!(req.wfile, "K")?;
        writeln!(req.wfile)?;
        line.clear();
    }
    Ok(())
}

/// Data segments this socket has received (Linux `TCP_INFO`, `tcpi_data_segs_in`).
#[cfg(target_os = "linux")]
fn data_segments_in(s: &TcpStream) -> u32 {
    use std::os::fd::AsRawFd;
    // SAFETY: plain integers, valid zeroed; getsockopt writes at most `len` bytes.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    assert_eq!(r, 0, "TCP_INFO: {}", io::Error::last_os_error());
    info.tcpi_data_segs_in
}

#[test]
fn a_reply_written_in_pieces_arrives_as_one_segment() {
    let server = ThreadingTcpServer::bind("127.0.0.1:0", ok_in_pieces).unwrap();
    let addr = server.server_address().unwrap();
    let _run = Running::start(server);
    let mut c = connect(addr);
    for round in 0..3 {
        c.write_all(b"go\n").unwrap();
        // A naive client: one recv(100), as in the issue.
        let mut buf = [0u8; 100];
        let n = c.read(&mut buf).unwrap();
        assert_eq!(
            &buf[..n],
            b"OK\n",
            "round {round}: one recv, the whole line"
        );
        #[cfg(target_os = "linux")]
        assert_eq!(
            data_segments_in(&c),
            round + 1,
            "round {round}: one data segment per reply"
        );
    }
}

#[test]
fn wfile_is_sent_before_the_handler_reads() {
    let server = ThreadingTcpServer::bind("127.0.0.1:0", |req: &mut StreamRequest| {
        req.wfile.write_all(b"name? ")?; // a prompt, no newline, then a read
        let mut name = String::new();
        req.rfile.read_line(&mut name)?;
        write!(req.wfile, "hello {name}")
    })
    .unwrap();
    let addr = server.server_address().unwrap();
    let _run = Running::start(server);
    let mut c = connect(addr);
    let mut prompt = [0u8; 6];
    c.read_exact(&mut prompt).unwrap(); // before the client sends anything
    assert_eq!(&prompt, b"name? ");
    c.write_all(b"ann\n").unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = String::new();
    c.read_to_string(&mut rest).unwrap(); // sent when the handler returned
    assert_eq!(rest, "hello ann\n");
}

#[test]
fn wbufsize_0_sends_every_write_at_once() {
    let (tx, go) = bounded::<()>(1);
    let server = ThreadingTcpServer::builder()
        .wbufsize(0)
        .bind("127.0.0.1:0", move |req: &mut StreamRequest| {
            req.wfile.write_all(b"first\n")?;
            // Waits for something other than its socket, without a flush: unbuffered,
            // the line has left already.
            let _ = go.recv_timeout(LONG);
            req.wfile.write_all(b"second\n")
        })
        .unwrap();
    let addr = server.server_address().unwrap();
    let _run = Running::start(server);
    let c = connect(addr);
    let mut r = io::BufReader::new(&c);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "first\n");
    tx.send(()).unwrap();
    line.clear();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "second\n");
}

#[test]
fn buffered_and_unbuffered_writes_keep_their_order() {
    let server = ThreadingTcpServer::bind("127.0.0.1:0", |req: &mut StreamRequest| {
        req.wfile.write_all(b"1 buffered\n")?;
        req.connection().send_all(b"2 straight to the socket\n")?;
        req.wfile.write_all(b"3 buffered\n")?;
        let big = vec![b'4'; 20_000]; // larger than the buffer: sent at once
        req.wfile.write_all(&big)?;
        req.wfile.write_all(b"\n5 buffered\n")
    })
    .unwrap();
    let addr = server.server_address().unwrap();
    let _run = Running::start(server);
    let reply = round_trip(addr, b"");
    let text = String::from_utf8(reply).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert_eq!(lines[0], "1 buffered");
    assert_eq!(lines[1], "2 straight to the socket");
    assert_eq!(lines[2], "3 buffered");
    assert_eq!(lines[3].len(), 20_000);
    assert_eq!(lines[4], "5 buffered");
}

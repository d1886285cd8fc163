//! The chat client, TCP and UDP: stdin lines out, incoming lines printed meanwhile.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

/// Sends stdin line by line while a reader thread prints what arrives; `/quit` at the end.
pub fn tcp_client(addr: &str, nick: Option<&str>) -> io::Result<()> {
    let conn = TcpStream::connect(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot connect to {addr}: {e}")))?;
    let quitting = Arc::new(AtomicBool::new(false));
    let reader = {
        let (conn, quitting) = (conn.try_clone()?, quitting.clone());
        thread::spawn(move || print_lines(conn, &quitting))
    };
    let went_away = |e: io::Error| io::Error::new(e.kind(), format!("the server went away: {e}"));
    if let Some(nick) = nick {
        (&conn)
            .write_all(format!("/nick {nick}\n").as_bytes())
            .map_err(went_away)?;
    }
    let mut line = Vec::new();
    let mut stdin = io::stdin().lock();
    while stdin.read_until(b'\n', &mut line)? > 0 {
        if line.last() != Some(&b'\n') {
            line.push(b'\n');
        }
        (&conn).write_all(&line).map_err(went_away)?;
        line.clear();
    }
    quitting.store(true, Ordering::SeqCst);
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    (&conn).write_all(b"/quit\n").map_err(went_away)?;
    reader
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the reader thread panicked")))
}

/// Prints each line from the server. If the server closes before we quit, that is the end.
fn print_lines(conn: TcpStream, quitting: &AtomicBool) -> io::Result<()> {
    let mut r = BufReader::new(conn);
    let mut line = Vec::new();
    loop {
        line.clear();
        match r.read_until(b'\n', &mut line) {
            Ok(0) if quitting.load(Ordering::SeqCst) => return Ok(()),
            Ok(0) => exit_went_away("the server closed the connection"),
            Ok(_) => io::stdout().write_all(&line)?,
            Err(e) if quitting.load(Ordering::SeqCst) => return Err(e),
            Err(e) => exit_went_away(&format!("the server went away: {e}")),
        }
    }
}

/// The main thread is blocked reading stdin: leave from here.
fn exit_went_away(why: &str) -> ! {
    let _ = io::stdout().flush();
    eprintln!("chat client: {why}");
    std::process::exit(1)
}

/// Says hello (an empty datagram), then one datagram per stdin line; a reader thread prints
/// what the relay forwards and says hello again every two minutes, so we are not forgotten.
pub fn udp_client(addr: &str, nick: Option<&str>) -> io::Result<()> {
    let sock = UdpSocket::bind(if addr.starts_with('[') {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    })?;
    sock.connect(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot reach {addr}: {e}")))?;
    sock.send(b"")?;
    let reader = sock.try_clone()?;
    reader.set_read_timeout(Some(Duration::from_secs(120)))?;
    thread::spawn(move || {
        let mut buf = vec![0u8; 65_535];
        loop {
            match reader.recv(&mut buf) {
                Ok(n) => println!("{}", String::from_utf8_lossy(&buf[..n])),
                Err(e) if timed_out(&e) => {
                    let _ = reader.send(b"");
                }
                Err(e) => exit_went_away(&format!("the relay went away: {e}")),
            }
        }
    });
    let prefix = nick.map(|n| format!("<{n}> ")).unwrap_or_default();
    for line in io::stdin().lock().lines() {
        sock.send(format!("{prefix}{}", line?).as_bytes())?;
    }
    Ok(())
}

/// A read that hit `SO_RCVTIMEO`.
fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

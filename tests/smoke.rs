mod util;
use socketserver::*;
use std::io::{self, BufRead, Write};
use util::*;

#[test]
fn tcp_threading_echo_smoke() {
    let server = ThreadingTcpServer::bind("127.0.0.1:0", |req: &mut StreamRequest| {
        let mut line = String::new();
        while req.rfile.read_line(&mut line)? > 0 {
            req.wfile.write_all(line.as_bytes())?;
            line.clear();
        }
        Ok::<(), io::Error>(())
    })
    .unwrap();
    let addr = server.server_address().unwrap();
    let run = Running::start(server);
    assert_eq!(round_trip(addr, b"hello world\n"), b"hello world\n");
    run.stop().unwrap();
}

//! Upper-case: the tutorials' `socketserver` demo. Whatever bytes arrive come back with the
//! ASCII letters upper-cased (every other byte unchanged, so UTF-8 text stays valid), per
//! read, until the client closes — over TCP, or one datagram back per datagram with `--udp`.
//!
//! How to run:
//!     cargo run --release --example upper -- server [--addr 127.0.0.1:9001] [--mode sync|threading|forking] [--udp]
//! How to poke it:
//!     printf 'hello\nwörld\n' | cargo run --release --example upper -- client [--udp]
//!     nc 127.0.0.1 9001          (TCP; type lines, see them back upper-cased)
//!     nc -u 127.0.0.1 9001       (with --udp)
//! You should see `upper: listening on 127.0.0.1:9001` on the server's stderr, `HELLO` and
//! `WöRLD` on the client's stdout, one log line per connection (or datagram), and a summary
//! line when the server stops (Ctrl-C).

mod common;

use std::io::{self, Read, Write};
use std::process::ExitCode;

use socketserver::{DatagramRequest, StreamRequest};

const ADDR: &str = "127.0.0.1:9001";

/// TCP: upper-case every read and send it back, until EOF. Python's
/// `self.request.sendall(self.data.upper())`, without its `recv(1024)` truncation.
fn upper_stream(req: &mut StreamRequest) -> io::Result<()> {
    let peer = req.client_address().clone();
    let mut buf = [0u8; 16 * 1024];
    let mut total = 0u64;
    loop {
        let n = req.rfile.read(&mut buf)?;
        if n == 0 {
            break;
        }
        // In place `to_ascii_uppercase`: bytes >= 0x80 (all of UTF-8's multi-byte
        // sequences) are left alone.
        buf[..n].make_ascii_uppercase();
        req.wfile.write_all(&buf[..n])?;
        total += n as u64;
    }
    log::info!("upper: {peer}: upper-cased {total} bytes");
    Ok(())
}

/// UDP: the reply is the datagram, upper-cased (an empty one gets an empty one back).
fn upper_datagram(req: &mut DatagramRequest) -> io::Result<()> {
    let reply = req.packet().to_ascii_uppercase();
    log::info!("upper: {}: {} bytes", req.client_address(), reply.len());
    req.reply(&reply)
}

fn main() -> ExitCode {
    common::run_line_example(
        "upper",
        "Upper-case server and client (TCP, or UDP with --udp)",
        ADDR,
        upper_stream,
        upper_datagram,
    )
}

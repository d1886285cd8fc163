//! Echo: whatever bytes arrive are sent back, per read, until the client closes — over TCP,
//! or one datagram back per datagram with `--udp`. The first server of every tutorial.
//!
//! How to run:
//!     cargo run --release --example echo -- server [--addr 127.0.0.1:9000] [--mode evented|sync|threading|forking] [--udp] [--proxy-protocol]
//! How to poke it:
//!     printf 'hello\n' | cargo run --release --example echo -- client [--udp]
//!     nc 127.0.0.1 9000          (TCP; type lines, see them back)
//!     nc -u 127.0.0.1 9000       (with --udp)
//! You should see `echo: listening on 127.0.0.1:9000` on the server's stderr, each line
//! sent back on the client's stdout, and a summary line when the server stops (Ctrl-C).

mod common;

use std::io;
use std::process::ExitCode;

use socketserver::DatagramRequest;

const ADDR: &str = "127.0.0.1:9000";

/// UDP: the reply is the datagram itself.
fn echo_datagram(req: &mut DatagramRequest) -> io::Result<()> {
    log::info!(
        "echo: {}: {} bytes",
        req.client_address(),
        req.packet().len()
    );
    req.reply(req.packet())
}

fn main() -> ExitCode {
    common::run_line_example(
        "echo",
        "Echo server and client (TCP, or UDP with --udp)",
        ADDR,
        || common::Chunks::new("echo", "echoed", |_: &mut [u8]| {}),
        echo_datagram,
    )
}

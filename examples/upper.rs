//! Upper-case: the tutorials' `socketserver` demo. Whatever bytes arrive come back with the
//! ASCII letters upper-cased (every other byte unchanged, so UTF-8 text stays valid), per
//! read, until the client closes — over TCP, or one datagram back per datagram with `--udp`.
//!
//! How to run:
//!     cargo run --release --example upper -- server [--addr 127.0.0.1:9001] [--mode evented|sync|threading|forking] [--udp] [--proxy-protocol]
//! How to poke it:
//!     printf 'hello\nwörld\n' | cargo run --release --example upper -- client [--udp]
//!     nc 127.0.0.1 9001          (TCP; type lines, see them back upper-cased)
//!     nc -u 127.0.0.1 9001       (with --udp)
//! You should see `upper: listening on 127.0.0.1:9001` on the server's stderr, `HELLO` and
//! `WöRLD` on the client's stdout, one log line per connection (or datagram), and a summary
//! line when the server stops (Ctrl-C).

mod common;

use std::io;
use std::process::ExitCode;

use socketserver::DatagramRequest;

const ADDR: &str = "127.0.0.1:9001";

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
        || common::Chunks::new("upper", "upper-cased", <[u8]>::make_ascii_uppercase),
        upper_datagram,
    )
}

//! Chat: a TCP chat room of `\n`-terminated UTF-8 lines — or, with `--udp`, a relay that
//! forwards each datagram to the other clients it has heard from. The idea it teaches: state
//! shared by every connection (the room), where a slow member must never stall the others.
//!
//! How to run:
//!     cargo run --release --example chat -- server [--addr 127.0.0.1:9002] [--udp] [--mode evented|threading|sync] [--proxy-protocol]
//! How to poke it:
//!     cargo run --release --example chat -- client --nick alice     (and --nick bob in another terminal)
//!     nc 127.0.0.1 9002              (the first line you type is your nickname)
//!     cargo run --release --example chat -- client --udp --nick carol      (with --udp; or `nc -u`)
//! You should see `chat: listening on 127.0.0.1:9002` on the server's stderr, `* bob joined`
//! in alice's terminal, and each line bob types there as `<bob> text`.
//!
//! TCP protocol. Every line from the server starts with `* ` (a notice), `! ` (an error: your
//! line was refused) or `<NAME> ` (a member's message).
//! - On connect: `* welcome ...`. The first line that is not a command is your nickname:
//!   1 to 32 characters, no whitespace or control characters, not starting with `/`, unique
//!   ignoring case. You get `* you are NAME`, everyone else `* NAME joined`.
//! - Then each line goes to everyone else (not back to you) as `<NAME> line`; `//x` sends `/x`.
//! - `/nick NAME` renames (`* OLD is now NAME`); `/who` → `* online (N): a, b`; `/help`;
//!   `/quit` → `* bye`, then the server closes and the others see `* NAME left`.
//! - A line over 4096 bytes → `! line too long ...`, invalid UTF-8 → `! invalid UTF-8 ...`:
//!   the line is dropped, the connection stays. `\r\n` is accepted, empty lines are ignored,
//!   and a connection idle for an hour is closed.
//! - No thread per member: the server is evented, and a line for a member is queued on its
//!   connection, sent when its socket can take it; a broadcast never waits. A member more
//!   than 1 MiB behind, or that read nothing for 5 s while lines waited for it (it stopped
//!   reading), is disconnected — the others see `* NAME was disconnected (too slow)`.
//!
//! UDP relay. Each datagram goes, unchanged, to every other peer heard from in the last 10
//! minutes (at most 1024; when full, the longest silent is forgotten). An empty datagram only
//! says hello: a new peer gets `* relay: ...` back. Forwarding never waits either: when the
//! server's send buffer is full, that copy is dropped (UDP may lose datagrams anyway).
//!
//! Modes. The room lives in the server's memory and every member's connection stays open,
//! so TCP chat runs in evented mode (the default): idle members wait in the poller and hold
//! no thread, so thousands can be in the room. `threading` would block a broadcast on a slow
//! member's socket, `sync` would serve one member at a time, and `forking` would give each
//! member a room of its own: all three are refused. The UDP relay handles one datagram per
//! request, so it runs in `threading` (its default) or `sync`; `forking` and `evented` are
//! refused (children cannot share the peer table; evented is for streams). On Ctrl-C,
//! members get one second, then their connections are closed.
//!
mod client;
#[path = "../common/mod.rs"]
mod common;
mod relay;
mod room;

use client::{tcp_client, udp_client};
use relay::{Relay, relay_datagram};
use room::{Room, Session};

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use common::{Cmd, ModeArg, Settings};
use socketserver::{DatagramRequest, Tcp, Udp};

const ADDR: &str = "127.0.0.1:9002";
/// Members at once; beyond, new connections wait in the kernel backlog.
const MAX_MEMBERS: usize = 4096;

/// The server's own option.
#[derive(Args)]
struct ServerOptions {
    /// Relay UDP datagrams instead of running a TCP room.
    #[arg(long)]
    udp: bool,
}

/// The client's own options.
#[derive(Args)]
struct ClientOptions {
    /// Talk to a UDP relay instead.
    #[arg(long)]
    udp: bool,
    /// Nickname to take on connecting (UDP: prefix every line with `<NAME> `).
    #[arg(long)]
    nick: Option<String>,
}

fn main() -> ExitCode {
    let cli = common::parse::<ServerOptions, ClientOptions>(
        "chat",
        "Chat room server and client (TCP, or a UDP relay with --udp)",
        "Run the server (TCP: evented mode only; UDP: threading or sync).",
        "Send each line of stdin, print what arrives meanwhile; `/quit` at the end of stdin.",
    );
    let mut settings = Settings::new("chat", ADDR);
    settings.read_timeout = Some(Duration::from_secs(3600));
    settings.connection_deadline = None;
    settings.max_connections = Some(MAX_MEMBERS);
    settings.max_connections_evented = Some(MAX_MEMBERS);
    settings.shutdown_grace = Duration::from_secs(1);
    settings.write_timeout = Some(Duration::from_secs(5));
    match cli.cmd {
        Cmd::Server {
            args,
            opts: ServerOptions { udp: false },
        } => {
            let why = match args.mode.unwrap_or(ModeArg::Evented) {
                ModeArg::Evented => None,
                ModeArg::Threading => {
                    Some("threading mode would block a broadcast on a slow member's socket")
                }
                ModeArg::Sync => Some("sync mode serves one connection at a time: a room of one"),
                ModeArg::Forking => Some("forking mode gives each member a room of its own"),
            };
            if let Some(why) = why {
                let msg = format!("chat needs --mode evented (the default): {why}");
                common::usage_error(msg);
            }
            let room = Arc::new(Room::default());
            settings.framing = room::framing();
            settings.default_mode = ModeArg::Evented;
            settings.max_output = Some(room::MAX_BEHIND);
            common::serve::<Tcp, _, _>(&settings, &args, move || Session::new(room.clone()))
        }
        Cmd::Server {
            args,
            opts: ServerOptions { udp: true },
        } => {
            let why = match args.mode {
                Some(ModeArg::Forking) => Some("forked children cannot share the peer table"),
                Some(ModeArg::Evented) => Some("evented mode is for streams"),
                _ => None,
            };
            if let Some(why) = why {
                let msg = format!("the UDP relay needs --mode threading or sync: {why}");
                common::usage_error(msg);
            }
            let relay = Arc::new(Relay::default());
            common::serve::<Udp, _, _>(&settings, &args, move |req: &mut DatagramRequest| {
                relay_datagram(&relay, req)
            })
        }
        Cmd::Client {
            args,
            opts: ClientOptions { udp, nick },
        } => {
            let addr = args.addr.as_deref().unwrap_or(ADDR);
            if args.tls.tls_ca.is_some() {
                common::usage_error("the chat client speaks plaintext only (try openssl s_client)");
            }
            let result = if udp {
                udp_client(addr, nick.as_deref())
            } else {
                tcp_client(addr, nick.as_deref())
            };
            result.map_or_else(|e| common::client_failed("chat", e), |()| ExitCode::SUCCESS)
        }
    }
}

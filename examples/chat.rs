//! Chat: a TCP chat room of `\n`-terminated UTF-8 lines — or, with `--udp`, a relay that
//! forwards each datagram to the other clients it has heard from. The idea it teaches: state
//! shared by every connection (the room), where a slow member must never stall the others.
//!
//! How to run:
//!     cargo run --release --example chat -- server [--addr 127.0.0.1:9002] [--udp] [--mode threading|sync]
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
//! - Each member has an outbox of 128 lines, written to its socket by its own thread. A member
//!   whose outbox is full (it stopped reading) is disconnected — the others see
//!   `* NAME was disconnected (too slow)` — so a broadcast never waits on a socket.
//!
//! UDP relay. Each datagram goes, unchanged, to every other peer heard from in the last 10
//! minutes (at most 1024; when full, the longest silent is forgotten). An empty datagram only
//! says hello: a new peer gets `* relay: ...` back. Forwarding never waits either: when the
//! server's send buffer is full, that copy is dropped (UDP may lose datagrams anyway).
//!
//! Modes. The room lives in the server's memory, so TCP chat needs `--mode threading` (the
//! default): `sync` would serve one member at a time, and `forking` would give each member a
//! room of its own — both are refused. The UDP relay handles one datagram per request, so
//! `sync` works too; `forking` is refused (children cannot share the peer table). Each member
//! holds a pool worker, so at most 256 are served at once; more wait in the kernel backlog.
//! On Ctrl-C, members get one second, then their connections are closed.

mod common;

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use clap::Args;
use common::{Cmd, ModeArg, Settings};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::Mutex;
use socketserver::{ClientAddr, Connection, DatagramRequest, StreamRequest, Tcp, Udp};

const ADDR: &str = "127.0.0.1:9002";
const MAX_LINE: usize = 4096;
const MAX_NICK: usize = 32;
const OUTBOX: usize = 128;
const MAX_MEMBERS: usize = 256; // = the default pool's most workers: one per member
const MAX_PEERS: usize = 1024;
const PEER_IDLE: Duration = Duration::from_secs(600);
const HELP: &str =
    "* commands: /nick NAME, /who, /quit, /help; other lines go to everyone (//x sends /x)";

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

/// A member of the room: its nickname, where to queue lines for it, and its socket (to
/// disconnect it).
struct Member {
    nick: String,
    outbox: Sender<Arc<str>>,
    conn: Connection,
}

/// The room, shared by every connection: the members who have a nickname, by session id.
#[derive(Default)]
struct Room {
    members: Mutex<HashMap<u64, Member>>,
    next_id: AtomicU64,
}

impl Room {
    /// Queues `line` for every member but `skip`, without waiting. A member whose outbox is
    /// full (or whose writer is gone) is disconnected, and the others are told — which may
    /// in turn find more laggards, hence the work list.
    fn broadcast(&self, skip: Option<u64>, line: String) {
        let mut members = self.members.lock();
        let mut pending = vec![(skip, Arc::<str>::from(line + "\n"))];
        while let Some((skip, line)) = pending.pop() {
            let laggards: Vec<u64> = members
                .iter()
                .filter(|(id, m)| Some(**id) != skip && m.outbox.try_send(line.clone()).is_err())
                .map(|(id, _)| *id)
                .collect();
            for m in laggards.iter().filter_map(|id| members.remove(id)) {
                log::warn!("chat: {}: outbox full, disconnected", m.nick);
                let _ = m.conn.shutdown(Shutdown::Both);
                let notice = format!("* {} was disconnected (too slow)\n", m.nick);
                pending.push((None, notice.into()));
            }
        }
    }

    /// Gives session `id` the nickname `nick` unless another member has it (ignoring case);
    /// returns its old nickname, if it had one.
    fn claim(&self, id: u64, member: Member) -> Result<Option<String>, String> {
        let mut members = self.members.lock();
        let key = member.nick.to_lowercase();
        if members
            .iter()
            .any(|(i, m)| *i != id && m.nick.to_lowercase() == key)
        {
            return Err(format!("! nickname {} is taken", member.nick));
        }
        Ok(members.insert(id, member).map(|m| m.nick))
    }

    /// Removes session `id` if it is still in the room; its nickname.
    fn leave(&self, id: u64) -> Option<String> {
        self.members.lock().remove(&id).map(|m| m.nick)
    }

    fn who(&self) -> String {
        let mut nicks: Vec<String> = self
            .members
            .lock()
            .values()
            .map(|m| m.nick.clone())
            .collect();
        nicks.sort_by_key(|n| n.to_lowercase());
        format!("* online ({}): {}", nicks.len(), nicks.join(", "))
    }
}

/// Why a session ended, for the log line.
enum End {
    Quit,
    Closed,
    Idle,
    TooSlow,
}

/// One connection: its outbox and, once chosen, its nickname.
struct Session<'a> {
    room: &'a Room,
    id: u64,
    peer: ClientAddr,
    conn: Connection,
    outbox: Sender<Arc<str>>,
    nick: Option<String>,
}

impl Session<'_> {
    /// Queues a line for this client only; `false` if it cannot take more (too slow or gone).
    fn tell(&self, line: &str) -> bool {
        match self.outbox.try_send(format!("{line}\n").into()) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }

    /// Reads lines until the client quits, closes or falls behind.
    fn run(&mut self, rfile: &mut impl BufRead) -> io::Result<End> {
        let mut buf = Vec::new();
        loop {
            let told = match read_line(rfile, &mut buf) {
                Ok(Line::Eof) => return Ok(End::Closed),
                Ok(Line::TooLong) => self.tell(&format!(
                    "! line too long (at most {MAX_LINE} bytes): dropped"
                )),
                Ok(Line::Text(Err(_))) => self.tell("! invalid UTF-8: line dropped"),
                Ok(Line::Text(Ok(line))) => match self.on_line(&line) {
                    Some(told) => told,
                    None => return Ok(End::Quit),
                },
                Err(e) if timed_out(&e) => {
                    self.tell("! idle for too long: bye");
                    return Ok(End::Idle);
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(End::Closed),
                Err(e) => return Err(e),
            };
            if !told {
                return Ok(End::TooSlow);
            }
        }
    }

    /// One line of input. `None` on `/quit`, else whether the reply could be queued.
    fn on_line(&mut self, line: &str) -> Option<bool> {
        Some(match (parse(line), &self.nick) {
            (Input::Empty, _) => true,
            (Input::Text(name), None) | (Input::Command("nick", name), _) => self.set_nick(name),
            (Input::Text(text), Some(nick)) => {
                self.room
                    .broadcast(Some(self.id), format!("<{nick}> {text}"));
                true
            }
            (Input::Command("who", _), _) => self.tell(&self.room.who()),
            (Input::Command("help", _), _) => self.tell(HELP),
            (Input::Command("quit", _), _) => {
                self.tell("* bye");
                return None;
            }
            (Input::Command(other, _), _) => {
                self.tell(&format!("! unknown command /{other} (try /help)"))
            }
        })
    }

    fn set_nick(&mut self, nick: &str) -> bool {
        if let Err(why) = check_nick(nick) {
            return self.tell(&format!("! {why}"));
        }
        let (outbox, conn) = (self.outbox.clone(), self.conn.clone());
        let member = Member {
            nick: nick.to_string(),
            outbox,
            conn,
        };
        match self.room.claim(self.id, member) {
            Err(why) => self.tell(&why),
            Ok(old) => {
                let told = self.tell(&format!("* you are {nick}"));
                let notice = match &old {
                    Some(old) => format!("* {old} is now {nick}"),
                    None => format!("* {nick} joined"),
                };
                log::info!("chat: {}: {}", self.peer, &notice[2..]);
                self.room.broadcast(Some(self.id), notice);
                self.nick = Some(nick.to_string());
                told
            }
        }
    }
}

/// A read that hit `SO_RCVTIMEO`.
fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn check_nick(nick: &str) -> Result<(), String> {
    if nick.is_empty() {
        Err("usage: /nick NAME".into())
    } else if nick.chars().count() > MAX_NICK {
        Err(format!("nickname too long (at most {MAX_NICK} characters)"))
    } else if nick.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err("nickname must not contain whitespace or control characters".into())
    } else if nick.starts_with('/') {
        Err("nickname must not start with /".into())
    } else {
        Ok(())
    }
}

enum Input<'a> {
    Empty,
    Text(&'a str),
    Command(&'a str, &'a str),
}

/// `/cmd arg`, `//text` (text starting with `/`), or text.
fn parse(line: &str) -> Input<'_> {
    match line.strip_prefix('/') {
        _ if line.is_empty() => Input::Empty,
        Some(rest) if rest.starts_with('/') => Input::Text(rest),
        Some(rest) => {
            let (cmd, arg) = rest.split_once(' ').unwrap_or((rest, ""));
            Input::Command(cmd, arg.trim())
        }
        None => Input::Text(line),
    }
}

enum Line {
    Text(Result<String, std::string::FromUtf8Error>),
    TooLong,
    Eof,
}

/// One line, at most `MAX_LINE` bytes kept: the rest of a longer line is read and dropped.
fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<Line> {
    buf.clear();
    if r.by_ref()
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', buf)?
        == 0
    {
        return Ok(Line::Eof);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    } else if buf.len() > MAX_LINE {
        loop {
            let chunk = r.fill_buf()?;
            let (n, found) = chunk
                .iter()
                .position(|&b| b == b'\n')
                .map_or((chunk.len(), false), |i| (i + 1, true));
            r.consume(n);
            if found || n == 0 {
                return Ok(Line::TooLong);
            }
        }
    }
    Ok(Line::Text(String::from_utf8(std::mem::take(buf))))
}

/// The writer thread of one member: sends what is queued, a batch per `send`.
fn write_outbox(conn: &Connection, outbox: &Receiver<Arc<str>>) {
    let mut batch = Vec::new();
    while let Ok(line) = outbox.recv() {
        batch.clear();
        batch.extend_from_slice(line.as_bytes());
        while batch.len() < 64 * 1024 {
            let Ok(more) = outbox.try_recv() else { break };
            batch.extend_from_slice(more.as_bytes());
        }
        if conn.send_all(&batch).is_err() {
            let _ = conn.shutdown(Shutdown::Both); // the reader notices too
            return;
        }
    }
}

/// The TCP handler: one session per connection.
fn chat_stream(room: &Room, req: &mut StreamRequest) -> io::Result<()> {
    let peer = req.client_address().clone();
    let conn = req.connection().clone();
    let (outbox, rx) = crossbeam_channel::bounded(OUTBOX);
    let writer = {
        let conn = conn.clone();
        thread::Builder::new()
            .name("chat-writer".into())
            .spawn(move || write_outbox(&conn, &rx))?
    };
    let id = room.next_id.fetch_add(1, Ordering::Relaxed);
    let mut session = Session {
        room,
        id,
        peer: peer.clone(),
        conn,
        outbox,
        nick: None,
    };
    session.tell("* welcome to the chat: send your nickname (or /help)");
    let mut end = session.run(&mut req.rfile);
    match (room.leave(id), &end) {
        (Some(nick), Ok(End::TooSlow)) => {
            let _ = session.conn.shutdown(Shutdown::Both); // unblocks the writer
            room.broadcast(None, format!("* {nick} was disconnected (too slow)"));
        }
        (Some(nick), _) => room.broadcast(None, format!("* {nick} left")),
        // Named, yet no longer in the room: a broadcast found its outbox full.
        (None, _) if session.nick.is_some() => end = Ok(End::TooSlow),
        (None, _) => {}
    }
    let who = session
        .nick
        .take()
        .unwrap_or_else(|| "(no nickname)".into());
    drop(session); // the last sender: the writer sends what is queued, then ends
    let _ = writer.join();
    let how = match end? {
        End::Quit => "quit",
        End::Closed => "closed the connection",
        End::Idle => "was idle too long",
        End::TooSlow => "was too slow (outbox full)",
    };
    log::info!("chat: {peer}: {who} {how}");
    Ok(())
}

/// The UDP relay's peers and when each was last heard from.
#[derive(Default)]
struct Relay(Mutex<HashMap<SocketAddr, Instant>>);

impl Relay {
    /// Notes that `from` spoke; the other live peers, and whether `from` is new.
    fn heard_from(&self, from: SocketAddr) -> (Vec<SocketAddr>, bool) {
        let mut peers = self.0.lock();
        let now = Instant::now();
        peers.retain(|_, seen| now.duration_since(*seen) < PEER_IDLE);
        if peers.len() >= MAX_PEERS && !peers.contains_key(&from) {
            let oldest = peers.iter().min_by_key(|(_, seen)| **seen).map(|(a, _)| *a);
            if let Some(a) = oldest {
                peers.remove(&a);
            }
        }
        let new = peers.insert(from, now).is_none();
        (peers.keys().filter(|a| **a != from).copied().collect(), new)
    }
}

/// The UDP handler: forward the datagram to every other peer, never waiting.
fn relay_datagram(relay: &Relay, req: &mut DatagramRequest) -> io::Result<()> {
    let Some(from) = req.client_address().as_inet() else {
        return Ok(());
    };
    let (others, new) = relay.heard_from(from);
    if req.packet().is_empty() {
        log::info!("chat: {from}: hello ({} other peers)", others.len());
        if new {
            let hello = format!("* relay: you are in, with {} other peers", others.len());
            req.reply(hello.as_bytes())?;
        }
        return Ok(());
    }
    let sock = req.socket();
    let sent = others
        .iter()
        .filter(|to| sock.send_to(req.packet(), &(**to).into()).is_ok())
        .count();
    log::info!(
        "chat: {from}: {} bytes relayed to {sent} of {} peers",
        req.packet().len(),
        others.len()
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = common::parse::<ServerOptions, ClientOptions>(
        "chat",
        "Chat room server and client (TCP, or a UDP relay with --udp)",
        "Run the server (TCP: threading mode only; UDP: threading or sync).",
        "Send each line of stdin, print what arrives meanwhile; `/quit` at the end of stdin.",
    );
    let mut settings = Settings::new("chat", ADDR);
    settings.read_timeout = Some(Duration::from_secs(3600));
    settings.connection_deadline = None;
    settings.max_connections = Some(MAX_MEMBERS);
    settings.shutdown_grace = Duration::from_secs(1);
    match cli.cmd {
        Cmd::Server {
            args,
            opts: ServerOptions { udp: false },
        } => {
            let why = match args.mode {
                ModeArg::Threading => None,
                ModeArg::Sync => Some("sync mode serves one connection at a time: a room of one"),
                ModeArg::Forking => Some("forking mode gives each member a room of its own"),
            };
            if let Some(why) = why {
                let msg = format!("chat needs --mode threading (the default): {why}");
                common::usage_error(msg);
            }
            let room = Arc::new(Room::default());
            common::serve::<Tcp, _, _>(&settings, &args, move |req: &mut StreamRequest| {
                chat_stream(&room, req)
            })
        }
        Cmd::Server {
            args,
            opts: ServerOptions { udp: true },
        } => {
            if args.mode == ModeArg::Forking {
                let msg = "the UDP relay needs --mode threading or sync: forked children cannot share the peer table";
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
            let result = if udp {
                udp_client(addr, nick.as_deref())
            } else {
                tcp_client(addr, nick.as_deref())
            };
            result.map_or_else(|e| common::client_failed("chat", e), |()| ExitCode::SUCCESS)
        }
    }
}

/// Sends stdin line by line while a reader thread prints what arrives; `/quit` at the end.
fn tcp_client(addr: &str, nick: Option<&str>) -> io::Result<()> {
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
fn udp_client(addr: &str, nick: Option<&str>) -> io::Result<()> {
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

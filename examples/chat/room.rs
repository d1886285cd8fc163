//! The TCP chat room: members, their bounded outboxes, and one session per connection.

use std::collections::HashMap;
use std::io::{self, BufRead, Read};
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::Mutex;
use socketserver::{ClientAddr, Connection, StreamRequest};

const MAX_LINE: usize = 4096;
const MAX_NICK: usize = 32;
const OUTBOX: usize = 128;
const HELP: &str =
    "* commands: /nick NAME, /who, /quit, /help; other lines go to everyone (//x sends /x)";

/// A member of the room: its nickname, where to queue lines for it, and its socket (to
/// disconnect it).
struct Member {
    nick: String,
    outbox: Sender<Arc<str>>,
    conn: Connection,
}

/// The room, shared by every connection: the members who have a nickname, by session id.
#[derive(Default)]
pub struct Room {
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
pub fn timed_out(e: &io::Error) -> bool {
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
pub fn chat_stream(room: &Room, req: &mut StreamRequest) -> io::Result<()> {
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

//! The TCP chat room, as a message handler: members and their channel handles, one
//! session per connection, and the line framing (long lines refused, the connection kept).
//!
//! No thread per member: a broadcast queues the line on every member's connection
//! ([`ChannelHandle::push`], which never waits), and the server sends it when that socket
//! can take it. A member more than [`MAX_BEHIND`] behind, or that read nothing for the
//! write timeout, is disconnected.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use socketserver::framing::{Decoded, Decoder, MessageFraming};
use socketserver::{Channel, ChannelHandle, MessageHandler};

const MAX_LINE: usize = 4096;
const MAX_NICK: usize = 32;
/// Bytes queued for a member beyond which it is disconnected as too slow (the server's
/// `max_output`): 4096 members x 1 MiB bound the memory.
pub const MAX_BEHIND: usize = 1024 * 1024;
const HELP: &str =
    "* commands: /nick NAME, /who, /quit, /help; other lines go to everyone (//x sends /x)";

/// A member of the room: its nickname, and the handle to its connection.
struct Member {
    nick: String,
    handle: ChannelHandle,
}

/// The room, shared by every connection: the members who have a nickname, by session id.
#[derive(Default)]
pub struct Room {
    members: Mutex<HashMap<u64, Member>>,
    next_id: AtomicU64,
}

impl Room {
    /// Queues `line` for every member but `skip`, never waiting on a socket. A member whose
    /// queue is full (over [`MAX_BEHIND`]) is disconnected, and the others are told.
    fn broadcast(&self, skip: Option<u64>, line: &str) {
        let mut members = self.members.lock();
        let line = format!("{line}\n");
        let laggards: Vec<u64> = members
            .iter()
            .filter(|(id, _)| Some(**id) != skip)
            .filter(|(_, m)| too_slow(m.handle.push(line.as_bytes())))
            .map(|(id, _)| *id)
            .collect();
        Self::disconnect(&mut members, laggards);
    }

    /// Removes `laggards` and tells the others, which may find more laggards.
    fn disconnect(members: &mut HashMap<u64, Member>, mut laggards: Vec<u64>) {
        while !laggards.is_empty() {
            let mut notices = Vec::new();
            for m in laggards.drain(..).filter_map(|id| members.remove(&id)) {
                log::warn!(
                    "chat: {}: outbox full, disconnected (over {MAX_BEHIND} bytes behind)",
                    m.nick
                );
                m.handle.close();
                notices.push(format!("* {} was disconnected (too slow)\n", m.nick));
            }
            for notice in notices {
                for (id, m) in members.iter() {
                    if too_slow(m.handle.push(notice.as_bytes())) {
                        laggards.push(*id);
                    }
                }
            }
            laggards.sort_unstable();
            laggards.dedup();
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

/// A push refused because the member's queue is full. (A member already closing is not
/// a laggard: its own session says it left.)
fn too_slow(pushed: io::Result<()>) -> bool {
    matches!(pushed, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// One connection: its session id and, once chosen, its nickname.
pub struct Session {
    room: Arc<Room>,
    id: u64,
    nick: Option<String>,
    quit: bool,
}

impl Session {
    pub fn new(room: Arc<Room>) -> Session {
        let id = room.next_id.fetch_add(1, Ordering::Relaxed);
        Session {
            room,
            id,
            nick: None,
            quit: false,
        }
    }

    fn tell(ch: &mut Channel, line: &str) {
        ch.push(line.as_bytes());
        ch.push(b"\n");
    }

    /// One line of input (its line end removed).
    fn on_line(&mut self, ch: &mut Channel, line: &str) {
        match (parse(line), &self.nick) {
            (Input::Empty, _) => {}
            (Input::Text(name), None) | (Input::Command("nick", name), _) => {
                self.set_nick(ch, name)
            }
            (Input::Text(text), Some(nick)) => self
                .room
                .broadcast(Some(self.id), &format!("<{nick}> {text}")),
            (Input::Command("who", _), _) => Self::tell(ch, &self.room.who()),
            (Input::Command("help", _), _) => Self::tell(ch, HELP),
            (Input::Command("quit", _), _) => {
                Self::tell(ch, "* bye");
                self.quit = true;
                ch.close_when_done();
            }
            (Input::Command(other, _), _) => {
                Self::tell(ch, &format!("! unknown command /{other} (try /help)"))
            }
        }
    }

    fn set_nick(&mut self, ch: &mut Channel, nick: &str) {
        if let Err(why) = check_nick(nick) {
            return Self::tell(ch, &format!("! {why}"));
        }
        let member = Member {
            nick: nick.to_string(),
            handle: ch.handle(),
        };
        match self.room.claim(self.id, member) {
            Err(why) => Self::tell(ch, &why),
            Ok(old) => {
                Self::tell(ch, &format!("* you are {nick}"));
                let notice = match &old {
                    Some(old) => format!("* {old} is now {nick}"),
                    None => format!("* {nick} joined"),
                };
                log::info!("chat: {}: {}", ch.client_address(), &notice[2..]);
                self.room.broadcast(Some(self.id), &notice);
                self.nick = Some(nick.to_string());
            }
        }
    }
}

impl MessageHandler for Session {
    fn setup(&mut self, ch: &mut Channel) -> io::Result<()> {
        Self::tell(ch, "* welcome to the chat: send your nickname (or /help)");
        Ok(())
    }

    fn handle(&mut self, ch: &mut Channel, line: &[u8]) -> io::Result<()> {
        if line.len() > MAX_LINE && !line.ends_with(b"\n") {
            Self::tell(
                ch,
                &format!("! line too long (at most {MAX_LINE} bytes): dropped"),
            );
            return Ok(());
        }
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match std::str::from_utf8(line) {
            Ok(text) => self.on_line(ch, text),
            Err(_) => Self::tell(ch, "! invalid UTF-8: line dropped"),
        }
        Ok(())
    }

    fn finish(&mut self, ch: &mut Channel) -> io::Result<()> {
        let how = match (self.room.leave(self.id), self.quit) {
            (Some(nick), quit) => {
                self.room.broadcast(None, &format!("* {nick} left"));
                if quit {
                    "quit"
                } else {
                    "closed the connection"
                }
            }
            // Named, yet no longer in the room: a broadcast found its queue full.
            (None, _) if self.nick.is_some() => "was too slow (outbox not drained)",
            (None, true) => "quit",
            (None, false) => "closed the connection",
        };
        let who = self.nick.as_deref().unwrap_or("(no nickname)");
        log::info!("chat: {}: {who} {how}", ch.client_address());
        Ok(())
    }
}

/// The room's framing: lines of at most [`MAX_LINE`] bytes (plus the newline). A longer
/// line reaches the handler cut to `MAX_LINE + 1` bytes without its newline (so that it can
/// say "too long"); the rest of it is skipped, and the connection goes on.
pub fn framing() -> MessageFraming {
    MessageFraming::Custom(Arc::new(|| Box::new(LongLines::default())))
}

#[derive(Default)]
struct LongLines {
    /// Inside a line already reported as too long: skip to its newline.
    skipping: bool,
    /// Bytes already searched for a newline.
    scanned: usize,
}

impl Decoder for LongLines {
    fn decode(&mut self, buf: &[u8]) -> io::Result<Decoded> {
        let limit = buf.len().min(MAX_LINE + 1);
        let newline = |upto: usize, from: usize| {
            buf[from.min(upto)..upto]
                .iter()
                .position(|&b| b == b'\n')
                .map(|i| from.min(upto) + i + 1)
        };
        if self.skipping {
            // An empty message: the handler ignores it.
            let consumed = newline(buf.len(), 0).inspect(|_| self.skipping = false);
            return Ok(Decoded::Message {
                start: 0,
                end: 0,
                consumed: consumed.unwrap_or(buf.len()),
            });
        }
        if let Some(end) = newline(limit, self.scanned) {
            self.scanned = 0;
            return Ok(Decoded::Message {
                start: 0,
                end,
                consumed: end,
            });
        }
        if buf.len() > MAX_LINE {
            // Skip the rest of the line: all of it if its newline is here already.
            let end = newline(buf.len(), limit);
            self.scanned = 0;
            self.skipping = end.is_none();
            return Ok(Decoded::Message {
                start: 0,
                end: MAX_LINE + 1,
                consumed: end.unwrap_or(buf.len()),
            });
        }
        self.scanned = buf.len();
        Ok(Decoded::Incomplete { need: None })
    }
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

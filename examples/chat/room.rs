//! The TCP chat room: members, their outboxes (bounded in bytes and time), and one session
//! per connection.

use std::collections::{HashMap, VecDeque};
use std::io::{self, BufRead, Read};
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use socketserver::{ClientAddr, Connection, StreamRequest};

const MAX_LINE: usize = 4096;
const MAX_NICK: usize = 32;
/// Bytes an outbox holds before a sender waits for it to drain (backpressure: the sender's
/// own input is then read more slowly). 256 members x 256 KiB bound the memory.
const OUTBOX_BYTES: usize = 256 * 1024;
/// A member whose writer has made no progress for this long while lines wait for it
/// (it stopped reading) is disconnected. A member that keeps reading never is, however
/// large a burst and however late its writer thread is scheduled.
const STALL: Duration = Duration::from_secs(5);
/// Most bytes the writer sends per `send`.
const BATCH: usize = 64 * 1024;
const HELP: &str =
    "* commands: /nick NAME, /who, /quit, /help; other lines go to everyone (//x sends /x)";

/// A member of the room: its nickname, where to queue lines for it, and its socket (to
/// disconnect it).
struct Member {
    nick: String,
    outbox: Arc<Outbox>,
    conn: Connection,
}

/// What [`Outbox::push`] did.
enum Pushed {
    /// Queued; `true` if the outbox is now over [`OUTBOX_BYTES`] (the sender should wait).
    Queued(bool),
    /// Not queued: the member has not drained for [`STALL`], or its writer is gone.
    Refused,
}

/// The lines waiting for one member, written to its socket by its own thread.
#[derive(Default)]
struct Outbox {
    state: Mutex<OutboxState>,
    /// The writer waits here for lines.
    ready: Condvar,
    /// Senders wait here for room.
    room: Condvar,
}

#[derive(Default)]
struct OutboxState {
    lines: VecDeque<Arc<str>>,
    /// Bytes queued or being sent.
    pending: usize,
    /// Since when the writer owes `pending` bytes without having made progress.
    progress: Option<Instant>,
    /// No more lines: the session ended (the writer sends what is queued, then ends), or
    /// the writer failed.
    closed: bool,
}

impl OutboxState {
    fn stalled(&self) -> bool {
        self.pending > 0 && self.progress.is_some_and(|p| p.elapsed() >= STALL)
    }
}

impl Outbox {
    fn push(&self, line: Arc<str>) -> Pushed {
        let mut st = self.state.lock();
        if st.closed || st.stalled() {
            return Pushed::Refused;
        }
        if st.pending == 0 {
            st.progress = Some(Instant::now());
        }
        st.pending += line.len();
        st.lines.push_back(line);
        self.ready.notify_one();
        Pushed::Queued(st.pending > OUTBOX_BYTES)
    }

    /// Waits until the outbox is back under [`OUTBOX_BYTES`]; `false` if the member
    /// stalled meanwhile (it is then to be disconnected) or its writer is gone.
    fn wait_for_room(&self) -> bool {
        let mut st = self.state.lock();
        loop {
            if st.closed {
                return false;
            }
            if st.pending <= OUTBOX_BYTES {
                return true;
            }
            if st.stalled() {
                return false;
            }
            self.room.wait_for(&mut st, STALL / 10);
        }
    }

    fn is_stalled(&self) -> bool {
        let st = self.state.lock();
        st.closed || st.stalled()
    }

    /// No more lines: the writer sends what is queued, then ends.
    fn close(&self) {
        self.state.lock().closed = true;
        self.ready.notify_all();
        self.room.notify_all();
    }
}

/// The room, shared by every connection: the members who have a nickname, by session id.
#[derive(Default)]
pub struct Room {
    members: Mutex<HashMap<u64, Member>>,
    next_id: AtomicU64,
}

impl Room {
    /// Queues `line` for every member but `skip`, without waiting on any socket. A member
    /// that has not drained its outbox for [`STALL`] (or whose writer is gone) is
    /// disconnected, and the others are told. Returns the outboxes now over
    /// [`OUTBOX_BYTES`]: the sender waits for them ([`Room::wait_for_room`]).
    fn broadcast(&self, skip: Option<u64>, line: String) -> Vec<Arc<Outbox>> {
        let mut members = self.members.lock();
        let mut full = Vec::new();
        let mut laggards = Vec::new();
        let line = Arc::<str>::from(line + "\n");
        for (id, m) in members.iter() {
            if Some(*id) == skip {
                continue;
            }
            match m.outbox.push(line.clone()) {
                Pushed::Queued(true) => full.push(m.outbox.clone()),
                Pushed::Queued(false) => {}
                Pushed::Refused => laggards.push(*id),
            }
        }
        Self::disconnect(&mut members, laggards);
        full
    }

    /// Removes `laggards` and tells the others, which may find more laggards.
    fn disconnect(members: &mut HashMap<u64, Member>, mut laggards: Vec<u64>) {
        while !laggards.is_empty() {
            let mut notices = Vec::new();
            for m in laggards.drain(..).filter_map(|id| members.remove(&id)) {
                log::warn!(
                    "chat: {}: outbox full, disconnected (not drained for {STALL:?})",
                    m.nick
                );
                let _ = m.conn.shutdown(Shutdown::Both);
                notices.push(Arc::<str>::from(format!(
                    "* {} was disconnected (too slow)\n",
                    m.nick
                )));
            }
            for notice in notices {
                for (id, m) in members.iter() {
                    if let Pushed::Refused = m.outbox.push(notice.clone()) {
                        laggards.push(*id);
                    }
                }
            }
            laggards.sort_unstable();
            laggards.dedup();
        }
    }

    /// The sender's side of backpressure: waits (outside the room's lock) until each of
    /// `full` has drained under [`OUTBOX_BYTES`]; members that stalled instead are
    /// disconnected.
    fn wait_for_room(&self, full: Vec<Arc<Outbox>>) {
        let stalled = full.iter().filter(|o| !o.wait_for_room()).count();
        if stalled > 0 {
            let mut members = self.members.lock();
            let laggards = members
                .iter()
                .filter(|(_, m)| m.outbox.is_stalled())
                .map(|(id, _)| *id)
                .collect();
            Self::disconnect(&mut members, laggards);
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
    outbox: Arc<Outbox>,
    nick: Option<String>,
}

impl Session<'_> {
    /// Queues a line for this client only; `false` if it cannot take more (too slow or gone).
    fn tell(&self, line: &str) -> bool {
        match self.outbox.push(format!("{line}\n").into()) {
            Pushed::Queued(false) => true,
            // Its own replies: this member's input waits for its output.
            Pushed::Queued(true) => self.outbox.wait_for_room(),
            Pushed::Refused => false,
        }
    }

    /// Sends `line` to the room and waits for the outboxes it filled.
    fn broadcast(&self, skip: Option<u64>, line: String) {
        let full = self.room.broadcast(skip, line);
        self.room.wait_for_room(full);
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
                self.broadcast(Some(self.id), format!("<{nick}> {text}"));
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
                self.broadcast(Some(self.id), notice);
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

/// The writer thread of one member: sends what is queued, a batch per `send`, and tells
/// the outbox of each batch sent (its progress).
fn write_outbox(conn: &Connection, outbox: &Outbox) {
    let mut batch = Vec::new();
    loop {
        batch.clear();
        {
            let mut st = outbox.state.lock();
            while st.lines.is_empty() && !st.closed {
                outbox.ready.wait(&mut st);
            }
            if st.lines.is_empty() {
                return; // closed, and everything sent
            }
            while batch.len() < BATCH {
                let Some(line) = st.lines.pop_front() else {
                    break;
                };
                batch.extend_from_slice(line.as_bytes());
            }
        }
        let sent = conn.send_all(&batch);
        let mut st = outbox.state.lock();
        if sent.is_err() {
            st.closed = true;
            st.lines.clear();
            st.pending = 0;
            drop(st);
            outbox.room.notify_all();
            let _ = conn.shutdown(Shutdown::Both); // the reader notices too
            return;
        }
        st.pending -= batch.len();
        st.progress = Some(Instant::now());
        drop(st);
        outbox.room.notify_all();
    }
}

/// The TCP handler: one session per connection.
pub fn chat_stream(room: &Room, req: &mut StreamRequest) -> io::Result<()> {
    let peer = req.client_address().clone();
    let conn = req.connection().clone();
    let outbox = Arc::new(Outbox::default());
    let writer = {
        let (conn, outbox) = (conn.clone(), outbox.clone());
        thread::Builder::new()
            .name("chat-writer".into())
            .spawn(move || write_outbox(&conn, &outbox))?
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
            session.broadcast(None, format!("* {nick} was disconnected (too slow)"));
        }
        (Some(nick), _) => session.broadcast(None, format!("* {nick} left")),
        // Named, yet no longer in the room: a broadcast found its outbox full.
        (None, _) if session.nick.is_some() => end = Ok(End::TooSlow),
        (None, _) => {}
    }
    let who = session
        .nick
        .take()
        .unwrap_or_else(|| "(no nickname)".into());
    // The writer sends what is queued, then ends.
    session.outbox.close();
    drop(session);
    let _ = writer.join();
    let how = match end? {
        End::Quit => "quit",
        End::Closed => "closed the connection",
        End::Idle => "was idle too long",
        End::TooSlow => "was too slow (outbox not drained)",
    };
    log::info!("chat: {peer}: {who} {how}");
    Ok(())
}

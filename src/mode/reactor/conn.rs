//! One connection of the evented reactor: its output queue and ownership flag (`Io`, a
//! leaf lock any thread may take to push), and its handler side (`State`, touched only by
//! the thread that owns the connection for a turn).

use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Instant;

use parking_lot::Mutex;
use socket2::Socket;

use super::Shared;
use super::poller::Ready;
use crate::addr::ClientAddr;
use crate::context::{Context, NEW_IDLE_AFTER, ServerHandle};
use crate::error::HandlerError;
use crate::framing::{MessageFraming, MessageReader};
use crate::handler::MessageHandler;
use crate::options::Options;
use crate::request::HeaderReader;
use crate::request::{BlockingStream, Channel, Closing, Outlet};

/// Reads per turn at most (16 KiB each): a client sending without pause cannot hold a
/// thread.
const READS_PER_TURN: usize = 4;
/// An output buffer larger than this is given back once empty.
const KEEP_OUT_CAPACITY: usize = 64 * 1024;

/// The output side, shared with pushers.
#[derive(Debug)]
struct Io {
    out: Vec<u8>,
    /// Bytes of `out` already sent.
    sent: usize,
    /// A thread is running this connection's turn.
    owned: bool,
    closed: bool,
    /// An event came while a thread owned the connection: the owner looks again before
    /// it lets go (edge-triggered, that readiness is reported only once).
    again: bool,
    /// The peer has closed its side: a short read does not mean the socket is empty (the
    /// FIN is still to be read, and no new edge will report it).
    read_closed: bool,
    /// A pusher asked to close once the queue is sent.
    close_requested: bool,
    /// Set by the timer sweep: close now, for this reason.
    expire: Option<&'static str>,
    opened: Instant,
    last_input: Instant,
    partial_since: Option<Instant>,
    stalled_since: Option<Instant>,
    /// The PROXY header's deadline, while it is being read.
    header_due: Option<Instant>,
    /// The peer has sent something (input, a PROXY header, a TLS handshake) and no message
    /// has been handled since the accept: its first request is on its way (behind a
    /// PROXY header, say), so the drain waits for it, up to [`NEW_IDLE_AFTER`] after the
    /// accept (as the classic modes do). A connection that has sent nothing at all is idle.
    first_on_its_way: bool,
    /// A message was handled on this connection.
    handled_any: bool,
}

/// Why the timer sweep closes a connection whose PROXY header is late.
const HEADER_LATE: &str = "no PROXY protocol header in time (proxy_header_timeout)";

impl Io {
    fn pending(&self) -> usize {
        self.out.len() - self.sent
    }
}

/// The handler side, owned by one thread at a time.
struct State {
    handler: Box<dyn MessageHandler>,
    channel: Channel,
    reader: MessageReader,
    /// The PROXY protocol header still to read (before `setup`).
    preamble: Option<Box<HeaderReader>>,
    /// The client: the socket's peer, or the one the PROXY header names.
    addr: ClientAddr,
    set_up: bool,
    eof: bool,
    /// The TLS handshake failed: the connection was never a request.
    #[cfg(feature = "tls")]
    tls_failed: bool,
}

pub(super) struct Conn {
    pub(super) key: usize,
    sock: Socket,
    /// The socket's peer (a proxy's address behind one: the client's is in `State`).
    peer: ClientAddr,
    io: Mutex<Io>,
    state: Mutex<State>,
    shared: Weak<Shared>,
    /// TLS on (feature `tls`): the session, its handshake done in the first turns.
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::Session>,
}

/// What the turn reads messages from: the socket, or the plaintext of its TLS session.
struct Input<'a>(&'a Conn);

impl io::Read for Input<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.0.tls {
            return tls.read_nonblocking(&self.0.sock, buf);
        }
        (&self.0.sock).read(buf)
    }
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("key", &self.key)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// The channel's outlet: a weak reference, so handles kept in a chat room never keep a
/// closed connection's socket alive.
#[derive(Debug)]
struct ConnOutlet(Weak<Conn>);

impl Outlet for ConnOutlet {
    fn push(&self, data: &[u8]) -> io::Result<()> {
        let conn = self.0.upgrade().ok_or(io::ErrorKind::NotConnected)?;
        conn.push(data)
    }

    fn close(&self) {
        if let Some(conn) = self.0.upgrade() {
            let mut io = conn.io.lock();
            if io.closed {
                return;
            }
            io.close_requested = true;
            let parked = !io.owned;
            drop(io);
            if parked && let Some(s) = conn.shared.upgrade() {
                s.schedule(conn.key);
            }
        }
    }

    fn is_open(&self) -> bool {
        self.0.upgrade().is_some_and(|c| {
            let io = c.io.lock();
            !io.closed && !io.close_requested
        })
    }

    fn raw_fd(&self) -> RawFd {
        self.0.upgrade().map_or(-1, |c| c.sock.as_raw_fd())
    }
}

impl Conn {
    pub(super) fn new(
        key: usize,
        sock: Socket,
        addr: ClientAddr,
        handler: Box<dyn MessageHandler>,
        ctx: &Arc<Context>,
        shared: Weak<Shared>,
    ) -> io::Result<Conn> {
        #[cfg(feature = "tls")]
        let tls = match &ctx.options.tls {
            Some(slot) => Some(crate::tls::Session::new(slot.get())?),
            None => None,
        };
        // The channel needs the connection's weak self: filled in by `Arc::new_cyclic` in
        // `new_arc`; a placeholder outlet until then is never used.
        let now = Instant::now();
        Ok(Conn {
            key,
            sock,
            peer: addr.clone(),
            io: Mutex::new(Io {
                out: Vec::new(),
                sent: 0,
                owned: false,
                closed: false,
                again: false,
                read_closed: false,
                close_requested: false,
                expire: None,
                opened: now,
                last_input: now,
                partial_since: None,
                first_on_its_way: false,
                handled_any: false,
                stalled_since: None,
                header_due: ctx
                    .options
                    .proxy_protocol
                    .is_on()
                    .then(|| now + ctx.options.proxy_header_timeout),
            }),
            state: Mutex::new(State {
                handler,
                channel: Channel::new(
                    Arc::new(ConnOutlet(Weak::new())),
                    addr.clone(),
                    ServerHandle::new(ctx.clone()),
                ),
                reader: MessageReader::new(&ctx.options.framing),
                preamble: ctx
                    .options
                    .proxy_protocol
                    .is_on()
                    .then(|| Box::new(HeaderReader::new(&ctx.options))),
                addr,
                set_up: false,
                eof: false,
                #[cfg(feature = "tls")]
                tls_failed: false,
            }),
            shared,
            #[cfg(feature = "tls")]
            tls,
        })
    }

    /// Is TLS on for this connection?
    fn is_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }

    /// Does the input hold part of a message that the reader cannot see yet: with TLS, part
    /// of a record (rustls keeps it until the rest comes)? A draining connection waits for
    /// it as for a message buffered in part.
    fn input_mid_record(&self) -> bool {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            return tls.mid_record();
        }
        false
    }

    /// After a read of `short` plaintext: was the input emptied?
    fn input_drained(&self, short: bool) -> bool {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            return tls.drained();
        }
        short
    }

    /// Appends `plain` to the output queue: as is, or sealed into TLS records (with the
    /// records the session had to send first).
    fn queue_out(&self, io: &mut Io, plain: &[u8]) -> io::Result<()> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            tls.take_records(&mut io.out);
            return tls.seal_into(plain, &mut io.out);
        }
        io.out.extend_from_slice(plain);
        Ok(())
    }

    /// Points the channel's outlet at this connection (once it is in its `Arc`).
    pub(super) fn bind_outlet(self: &Arc<Self>) {
        let addr = self.peer.clone();
        let mut st = self.state.lock();
        let server = st.channel.server().clone();
        st.channel = Channel::new(Arc::new(ConnOutlet(Arc::downgrade(self))), addr, server);
    }

    pub(super) fn raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// A push from any thread: queue, send what the socket takes now if no thread owns the
    /// connection, and arm for writability if something is left.
    fn push(&self, data: &[u8]) -> io::Result<()> {
        let shared = self.shared.upgrade().ok_or(io::ErrorKind::NotConnected)?;
        let mut io = self.io.lock();
        if io.closed || io.close_requested {
            return Err(io::ErrorKind::NotConnected.into());
        }
        if io.pending() + data.len() > shared.options.max_output {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "{} bytes already queued for {} (max_output {}): the peer is not reading",
                    io.pending(),
                    self.peer,
                    shared.options.max_output
                ),
            ));
        }
        self.queue_out(&mut io, data)?;
        if io.owned {
            return Ok(()); // the owner flushes and re-arms
        }
        if let Err(e) = self.send_pending(&mut io) {
            // The peer is gone: let a thread close it.
            io.close_requested = true;
            drop(io);
            shared.schedule(self.key);
            return Err(e);
        }
        // Bytes left over: the send hit EAGAIN, so the kernel reports writability when
        // the peer reads (the socket is watched for both directions all along).
        Ok(())
    }

    /// Sends queued output until the socket would block. Caller holds the `Io` lock.
    fn send_pending(&self, io: &mut Io) -> io::Result<()> {
        while io.sent < io.out.len() {
            match self.sock.send(&io.out[io.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    io.sent += n;
                    io.stalled_since = None;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if io.sent == io.out.len() {
            io.out.clear();
            io.sent = 0;
            if io.out.capacity() > KEEP_OUT_CAPACITY {
                io.out = Vec::new();
            }
        } else if io.stalled_since.is_none() {
            io.stalled_since = Some(Instant::now());
        }
        Ok(())
    }

    /// The timer sweep: marks this connection for closing if a limit has passed. `true` if
    /// it did (the caller schedules it).
    pub(super) fn expire(&self, o: &Options, now: Instant) -> bool {
        let mut io = self.io.lock();
        if io.closed || io.owned || io.expire.is_some() {
            return false;
        }
        let past = |since: Option<Instant>, limit: Option<std::time::Duration>| matches!((since, limit), (Some(t), Some(d)) if now.saturating_duration_since(t) >= d);
        #[cfg(feature = "tls")]
        let handshaking = self.tls.as_ref().is_some_and(|t| t.is_handshaking());
        #[cfg(not(feature = "tls"))]
        let handshaking = false;
        let why = if io.header_due.is_some_and(|t| now >= t) {
            HEADER_LATE
        } else if handshaking && past(Some(io.opened), handshake_timeout(o)) {
            HANDSHAKE_LATE
        } else if past(Some(io.opened), o.connection_deadline) {
            "connection deadline (connection_deadline)"
        } else if past(io.partial_since, o.message_deadline) {
            "half a message past its deadline (message_deadline)"
        } else if past(io.stalled_since, o.write_timeout) {
            "the peer read nothing for the write timeout (write_timeout)"
        } else if io.pending() == 0 && past(Some(io.last_input), o.read_timeout) {
            "idle timeout (read_timeout)"
        } else {
            return false;
        };
        io.expire = Some(why);
        true
    }

    /// One turn of this connection on a reactor thread.
    pub(super) fn turn(
        self: &Arc<Self>,
        s: &Shared,
        ctx: &Arc<Context>,
        spare: &mut Vec<u8>,
        ready: Ready,
    ) {
        let (expire, read_closed) = {
            let mut io = self.io.lock();
            io.read_closed |= ready.closed;
            if io.owned || io.closed {
                io.again = true;
                return;
            }
            io.owned = true;
            (io.expire, io.read_closed)
        };
        let mut guard = self.state.lock();
        let st = &mut *guard;
        if st.preamble.is_some() && !self.preamble(s, ctx, st, expire) {
            return;
        }
        #[cfg(feature = "tls")]
        if !st.set_up && !self.handshake_turn(s, ctx, st, expire) {
            return;
        }
        st.reader.adopt(spare);
        if !st.set_up {
            st.set_up = true;
            let ok = stage(ctx, &st.addr, || st.handler.setup(&mut st.channel));
            if !ok {
                self.close(s, ctx, st, false);
                return;
            }
        }
        if s.forced.load(Ordering::SeqCst) {
            self.close(s, ctx, st, true);
            return;
        }
        if let Some(why) = expire {
            log::info!(
                "socketserver: closing the connection from {}: {why}",
                st.addr
            );
            self.close(s, ctx, st, true);
            return;
        }
        let o = &s.options;
        let mut handled = 0;
        let mut reads = 0;
        let (mut got_input, mut drained) = (false, false);
        let mut failed = false;
        loop {
            // Messages already buffered first: epoll cannot see them.
            let paused = self.io.lock().pending() + st.channel.out.len() >= o.high_water;
            while !paused && st.channel.closing == Closing::No && handled < o.max_messages_per_turn
            {
                match st.reader.next() {
                    Ok(true) => {
                        handled += 1;
                        ctx.in_flight.fetch_add(1, Ordering::SeqCst);
                        let ok = stage(ctx, &st.addr, || {
                            st.handler.handle(&mut st.channel, st.reader.message())
                        });
                        let ok = ok && (!st.channel.take_over || self.blocking(s, ctx, st));
                        ctx.in_flight.fetch_sub(1, Ordering::SeqCst);
                        if !ok {
                            failed = true;
                            break;
                        }
                    }
                    Ok(false) => break,
                    Err(e) => {
                        ctx.report_error(&st.addr, &HandlerError::Io(e));
                        failed = true;
                        break;
                    }
                }
            }
            if failed
                || paused
                || st.eof
                || st.channel.closing != Closing::No
                || handled >= o.max_messages_per_turn
                || reads >= READS_PER_TURN
                || drained
            {
                break;
            }
            reads += 1;
            match st.reader.read_from(&mut Input(self)) {
                Ok(0) => {
                    st.eof = true;
                    let rest = st.reader.take_rest();
                    if !rest.is_empty() {
                        if matches!(o.framing, MessageFraming::Lines { .. }) {
                            let ok =
                                stage(ctx, &st.addr, || st.handler.handle(&mut st.channel, &rest));
                            failed |= !ok;
                        } else {
                            let e = MessageReader::truncated(rest.len());
                            ctx.report_error(&st.addr, &HandlerError::Io(e));
                            failed = true;
                        }
                    }
                    break;
                }
                Ok(_) => {
                    got_input = true;
                    // A read that did not fill the buffer emptied the socket: no second
                    // `recv` just to hear `EAGAIN`. (The one-shot re-arm reports anything
                    // that arrives after it.)
                    // With TLS: the session's `recv` came back short and it holds no more
                    // plaintext.
                    drained = !read_closed && self.input_drained(st.reader.short_read());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    drained = true;
                    break;
                }
                #[cfg(feature = "tls")]
                Err(e) if crate::tls::is_truncated(&e) => {
                    ctx.report_error(&st.addr, &HandlerError::Io(e));
                    st.eof = true;
                    failed = true;
                    break;
                }
                Err(e) => {
                    log::debug!("socketserver: connection from {}: {e}", st.addr);
                    st.eof = true;
                    failed = true;
                    break;
                }
            }
        }
        // Send this turn's replies (and anything pushed meanwhile) in as few sends as
        // possible.
        let mut io = self.io.lock();
        if got_input {
            io.last_input = Instant::now();
        }
        io.handled_any |= handled > 0;
        io.first_on_its_way = !io.handled_any && (io.first_on_its_way || got_input);
        if self.is_tls() {
            let out = std::mem::take(&mut st.channel.out);
            failed |= self.queue_out(&mut io, &out).is_err();
            st.channel.out = out;
            st.channel.out.clear();
        } else if !st.channel.out.is_empty() {
            if io.pending() == 0 {
                io.out.clear();
                io.sent = 0;
                std::mem::swap(&mut io.out, &mut st.channel.out);
            } else {
                io.out.extend_from_slice(&st.channel.out);
                st.channel.out.clear();
            }
        }
        if self.send_pending(&mut io).is_err() {
            io.out.clear();
            io.sent = 0;
            failed = true;
        }
        let pending = io.pending();
        let draining = s.draining.load(Ordering::SeqCst);
        let closing = st.channel.closing != Closing::No || io.close_requested;
        let done = failed
            || (st.eof && pending == 0)
            || (closing && pending == 0)
            || (draining
                && pending == 0
                && drained
                && st.reader.buffered() == 0
                && !self.input_mid_record()
                && !(io.first_on_its_way && io.opened.elapsed() < NEW_IDLE_AFTER));
        if done {
            drop(io);
            self.close(s, ctx, st, true);
            return;
        }
        st.reader.release(spare);
        let more_buffered = handled >= o.max_messages_per_turn;
        io.partial_since = match (st.reader.buffered() > 0, io.partial_since) {
            (false, _) => None,
            (true, Some(t)) => Some(t),
            (true, None) => Some(Instant::now()),
        };
        let want_read = !st.eof && !closing && pending < o.high_water;
        io.owned = false;
        // Edge-triggered, the kernel reports only what is new: a turn that stopped before
        // the socket was empty (the read or message cap, a high-water pause since cleared)
        // or that missed an event while it owned the connection goes round again, behind
        // the other ready connections. Otherwise the next edge brings it back.
        let again = std::mem::take(&mut io.again) || (want_read && !drained);
        if again || (more_buffered && pending < o.high_water) {
            drop(io);
            drop(guard);
            s.schedule(self.key);
        }
    }

    /// Ends a turn that waits for the peer (the rest of a PROXY header, the next flight of
    /// a handshake): lets go of the connection, and goes round again if an event came
    /// meanwhile (edge-triggered, it is not reported twice).
    fn park(&self, s: &Shared, mut io: parking_lot::MutexGuard<'_, Io>) {
        io.owned = false;
        let again = std::mem::take(&mut io.again);
        drop(io);
        if again {
            s.schedule(self.key);
        }
    }

    /// Reads what has arrived of the PROXY header. `true` once it is read and the client
    /// it names passed `verify_request`: the turn goes on (what follows the header may
    /// already be in the socket, and no new edge would report it). `false`: the turn is
    /// over — parked until more arrives, or the connection closed (refused or late).
    fn preamble(
        &self,
        s: &Shared,
        ctx: &Arc<Context>,
        st: &mut State,
        expire: Option<&'static str>,
    ) -> bool {
        let Some(reader) = st.preamble.as_mut() else {
            return true;
        };
        if s.forced.load(Ordering::SeqCst) {
            self.close(s, ctx, st, false);
            return false;
        }
        let result = if expire == Some(HEADER_LATE) {
            Err(reader.timed_out())
        } else {
            reader.advance(&self.sock, &st.addr)
        };
        match result {
            Ok(Some(header)) => {
                st.preamble = None;
                {
                    let mut io = self.io.lock();
                    io.header_due = None;
                    io.first_on_its_way = true;
                }
                st.addr = header.client_address().clone();
                st.channel.set_proxy_header(Box::new(header));
                if ctx.verify(&st.addr) {
                    return true;
                }
            }
            // A header on its way when the drain starts is waited for (its deadline is
            // within the grace period): the request behind it may be on its way too.
            Ok(None) => match expire {
                // Nothing at all came: idle, as a plain connection that never spoke.
                None if s.draining.load(Ordering::SeqCst) && reader.nothing_yet() => {
                    closing_silent(&st.addr);
                }
                None => {
                    self.park(s, self.io.lock());
                    return false;
                }
                Some(why) => ctx.proxy_failed(
                    &st.addr,
                    &io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no complete PROXY protocol header before the {why}"),
                    ),
                ),
            },
            Err(e) => ctx.proxy_failed(&st.addr, &e),
        }
        self.close(s, ctx, st, false);
        false
    }

    /// A take-over ([`Channel::take_over`]): the replies queued so far are sent, then the
    /// handler has the socket in blocking mode (the server's read and write timeouts) until
    /// `handle_blocking` returns; pushes from elsewhere meanwhile wait in the queue. `true`
    /// if it succeeded and the socket is non-blocking again.
    fn blocking(&self, s: &Shared, ctx: &Arc<Context>, st: &mut State) -> bool {
        st.channel.take_over = false;
        // What the queue holds is sent as is (ciphertext with TLS), then the replies.
        let (queued, replies) = {
            let mut io = self.io.lock();
            let sent = io.sent;
            let queued = io.out.split_off(sent);
            io.out.clear();
            io.sent = 0;
            (queued, std::mem::take(&mut st.channel.out))
        };
        let timeouts = Some((s.options.read_timeout, s.options.write_timeout));
        let State {
            handler,
            channel,
            reader,
            ..
        } = st;
        let ok = stage(ctx, &st.addr, || {
            #[cfg(feature = "tls")]
            if let Some(tls) = &self.tls {
                let mut stream = BlockingStream::with_tls(reader, &self.sock, tls, timeouts)?;
                (&self.sock).write_all(&queued)?;
                stream.write_all(&replies)?;
                return handler.handle_blocking(channel, &mut stream);
            }
            let mut stream = BlockingStream::new(reader, &self.sock, timeouts)?;
            stream.write_all(&queued)?;
            stream.write_all(&replies)?;
            handler.handle_blocking(channel, &mut stream)
        });
        self.io.lock().last_input = Instant::now();
        match self.sock.set_nonblocking(true) {
            Ok(()) => ok,
            Err(e) => {
                log::error!(
                    "socketserver: connection from {}: back to non-blocking mode: {e}",
                    st.addr
                );
                false
            }
        }
    }

    /// The grace period is over: a handler still running on this connection gets its
    /// socket shut (its blocking reads and writes fail at once; a command it runs can see
    /// `POLLHUP`).
    pub(super) fn shut_if_busy(&self) {
        if self.io.lock().owned {
            let _ = self.sock.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Closes the connection: out of the poller, out of the table, `finish` (if `setup`
    /// succeeded), a last non-blocking flush, `shutdown(SHUT_WR)`. The descriptor closes
    /// with the last `Arc<Conn>`.
    fn close(&self, s: &Shared, ctx: &Arc<Context>, st: &mut State, finish: bool) {
        {
            let mut io = self.io.lock();
            if io.closed {
                return;
            }
            io.closed = true;
            let _ = s.poller.delete(self.sock.as_raw_fd());
        }
        s.conns.write().remove(&self.key);
        if finish {
            stage(ctx, &st.addr, || st.handler.finish(&mut st.channel));
            let mut io = self.io.lock();
            let out = std::mem::take(&mut st.channel.out);
            let _ = self.queue_out(&mut io, &out);
            let _ = self.send_pending(&mut io);
        }
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            // `close_notify` after the last reply; after a failed handshake, its alert.
            if !st.tls_failed {
                tls.queue_close_notify();
            }
            let mut io = self.io.lock();
            tls.take_records(&mut io.out);
            let _ = self.send_pending(&mut io);
        }
        let _ = self.sock.shutdown(std::net::Shutdown::Write);
        // As in the classic modes: a connection refused before its handler ran (its PROXY
        // header, `verify_request`) was not served.
        if st.set_up {
            ctx.stats.served.inc();
        }
        ctx.release_connection();
    }
}

/// The drain closes a connection that has sent nothing at all (not a byte of its PROXY
/// header or `ClientHello`): idle, as a plain connection that never spoke.
fn closing_silent(addr: &ClientAddr) {
    log::debug!("socketserver: draining: closing the connection from {addr}: it sent nothing");
}

/// Why the sweep closes a connection whose TLS handshake is not done.
const HANDSHAKE_LATE: &str = "TLS handshake not done within the deadline (tls_handshake_timeout)";

/// The handshake deadline, with TLS on.
fn handshake_timeout(o: &Options) -> Option<std::time::Duration> {
    #[cfg(feature = "tls")]
    return o.tls.as_ref().map(|_| o.tls_handshake_timeout);
    #[cfg(not(feature = "tls"))]
    {
        let _ = o;
        None
    }
}

#[cfg(feature = "tls")]
impl Conn {
    /// A turn before the TLS handshake is done: feeds it what arrived and sends its
    /// answer. `true` once it is done (the turn goes on: `setup`, then the messages);
    /// `false` if the turn is over — waiting for the peer, or closed: a failed handshake
    /// (garbage, plaintext, a refused certificate, the deadline) is reported once, counted
    /// in `tls_failures`, and closed without ever reaching the handler.
    fn handshake_turn(
        &self,
        s: &Shared,
        ctx: &Arc<Context>,
        st: &mut State,
        expire: Option<&'static str>,
    ) -> bool {
        let Some(tls) = &self.tls else { return true };
        if !tls.is_handshaking() {
            return true;
        }
        let r = match expire {
            Some(HANDSHAKE_LATE) => Err(io::ErrorKind::WouldBlock.into()),
            Some(why) => Err(io::Error::other(why)),
            None if s.forced.load(Ordering::SeqCst) => Err(io::Error::other("forced close")),
            None => tls.handshake_nonblocking(&self.sock),
        };
        // Draining, and not a byte of a `ClientHello` came: idle, as a plain connection that
        // never spoke. Closed without an alert, and not counted as a failed handshake.
        if matches!(r, Ok(false)) && s.draining.load(Ordering::SeqCst) && tls.nothing_received() {
            closing_silent(&st.addr);
            st.tls_failed = true;
            self.close(s, ctx, st, false);
            return false;
        }
        match r {
            Ok(true) => {
                st.channel.set_tls(tls.info());
                self.io.lock().first_on_its_way = true;
                true
            }
            Ok(false) => {
                let mut io = self.io.lock();
                tls.take_records(&mut io.out);
                if self.send_pending(&mut io).is_err() {
                    drop(io);
                    st.tls_failed = true;
                    self.close(s, ctx, st, false);
                    return false;
                }
                self.park(s, io);
                false
            }
            Err(e) => {
                let e = crate::request::handshake_failed(e, s.options.tls_handshake_timeout);
                ctx.report_error(&st.addr, &HandlerError::Io(e));
                st.tls_failed = true;
                self.close(s, ctx, st, false);
                false
            }
        }
    }
}

/// Creates a connection in its `Arc`, its channel pointing back at it.
pub(super) fn new_arc(conn: Conn) -> Arc<Conn> {
    let conn = Arc::new(conn);
    conn.bind_outlet();
    conn
}

/// Runs one handler stage, reporting an error or a panic. `true` if it succeeded.
fn stage(ctx: &Context, addr: &ClientAddr, f: impl FnOnce() -> io::Result<()>) -> bool {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            ctx.report_error(addr, &HandlerError::Io(e));
            false
        }
        Err(p) => {
            ctx.report_error(addr, &HandlerError::from_panic(p));
            false
        }
    }
}

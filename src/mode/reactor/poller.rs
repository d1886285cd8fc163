//! The readiness source of the reactor: `mio` (epoll on Linux, kqueue on macOS and the
//! BSDs), edge-triggered, each connection registered once for both directions.
//!
//! Why `mio` and not `polling`: edge-triggered registration needs to know that the peer
//! has closed its side (`EPOLLRDHUP`), because a short read that emptied the socket's data
//! may leave a FIN behind it, and no new edge will ever report that FIN. `mio` registers
//! `EPOLLRDHUP` and reports it (`is_read_closed`); `polling` does not, which forces one-shot
//! registration and an `epoll_ctl` re-arm after every message — the single largest cost
//! left on the reactor's path once hand-offs were gone.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use parking_lot::Mutex;

/// The waker's token: no connection has key 0.
const WAKE: Token = Token(0);

/// What one wait reported for one connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ready {
    /// The connection's key.
    pub(super) key: usize,
    /// The peer has closed its side (or the socket failed): read to the end.
    pub(super) closed: bool,
}

#[derive(Debug)]
pub(super) struct Poller {
    /// Only the leader waits: the lock is never contended.
    poll: Mutex<(Poll, Events)>,
    registry: Registry,
    waker: Waker,
}

impl Poller {
    pub(super) fn new() -> io::Result<Poller> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = Waker::new(&registry, WAKE)?;
        Ok(Poller {
            poll: Mutex::new((poll, Events::with_capacity(256))),
            registry,
            waker,
        })
    }

    /// Watches `fd` for both directions, edge-triggered, under `key` (never 0).
    pub(super) fn add(&self, fd: RawFd, key: usize) -> io::Result<()> {
        self.registry.register(
            &mut SourceFd(&fd),
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        )
    }

    /// Stops watching `fd` (before it is closed).
    pub(super) fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.registry.deregister(&mut SourceFd(&fd))
    }

    /// Wakes the thread waiting in [`wait`](Self::wait).
    pub(super) fn notify(&self) -> io::Result<()> {
        self.waker.wake()
    }

    /// Waits for readiness (at most `timeout`), appending what it reports to `out`.
    pub(super) fn wait(&self, out: &mut Vec<Ready>, timeout: Option<Duration>) -> io::Result<()> {
        let mut guard = self.poll.lock();
        let (poll, events) = &mut *guard;
        match poll.poll(events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        out.extend(events.iter().filter(|e| e.token() != WAKE).map(|e| Ready {
            key: e.token().0,
            closed: e.is_read_closed() || e.is_error(),
        }));
        Ok(())
    }
}

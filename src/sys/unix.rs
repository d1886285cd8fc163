//! Unix implementations: `poll(2)` on a few descriptors and a socketpair waker.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// Waits until one of `fds` is readable, or `timeout` passes (`None` waits forever).
///
/// Returns a bit mask: bit `i` is set when `fds[i]` is readable (or has an error or hang-up
/// pending, which a read will report). An interrupted call (`EINTR`) returns an empty mask so
/// that callers re-check their state and deadlines, as `select`-based loops do.
pub(crate) fn poll_readable(fds: &[RawFd], timeout: Option<Duration>) -> io::Result<u32> {
    debug_assert!(fds.len() <= 4);
    let mut pfds = [libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    }; 4];
    for (slot, fd) in pfds.iter_mut().zip(fds) {
        slot.fd = *fd;
        slot.events = libc::POLLIN;
    }
    let ms: libc::c_int = match timeout {
        None => -1,
        // Round up so that a 0.5 ms timeout does not become a busy loop of 0 ms polls.
        Some(d) => d
            .as_micros()
            .div_ceil(1000)
            .try_into()
            .unwrap_or(libc::c_int::MAX),
    };
    // SAFETY: `pfds` is a valid array of `fds.len()` initialised pollfd structs.
    let n = unsafe { libc::poll(pfds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    if n < 0 {
        return interrupted_as_empty();
    }
    let mut mask = 0;
    for (i, p) in pfds.iter().take(fds.len()).enumerate() {
        if p.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
            mask |= 1 << i;
        }
    }
    Ok(mask)
}

/// After a failed wait: `EINTR` is an empty mask (callers re-check their state), anything
/// else the error.
fn interrupted_as_empty() -> io::Result<u32> {
    let err = io::Error::last_os_error();
    if err.kind() == io::ErrorKind::Interrupted {
        Ok(0)
    } else {
        Err(err)
    }
}

/// `sendto(2)` on a non-blocking datagram socket, waiting for room (`POLLOUT`) up to
/// `timeout` when the send buffer is full instead of failing with `EAGAIN`.
///
/// `POLLOUT` does not always see what blocks: a Unix datagram peer whose receive queue is
/// full fails the send with `EAGAIN` while the (unconnected) server socket stays writable.
/// When a send fails again right after `poll` said writable, the wait goes on in sleeps
/// instead (1 ms, doubling up to [`STALLED_PEER_NAP_MAX`]), so that a peer that does not
/// read costs no CPU while its reply waits.
pub(crate) fn send_to_waiting(
    sock: &socket2::Socket,
    buf: &[u8],
    to: &socket2::SockAddr,
    timeout: Option<Duration>,
) -> io::Result<usize> {
    // Set at the first `EAGAIN` (the clock is not read when the send buffer has room, the
    // usual case). A timeout too large to add to `now` (years) waits forever instead of
    // panicking.
    let mut deadline = None;
    // Did the last `poll` say writable? Then a send that would block all the same is
    // waited for in naps (see above), from `nap` on.
    let mut writable = false;
    let mut nap = STALLED_PEER_NAP_MIN;
    loop {
        // `MSG_DONTWAIT`: the socket may be blocking while a serving loop waits in its
        // receives (`ReceiveWait`); this send still honours `timeout`.
        match sock.send_to_with_flags(buf, to, libc::MSG_DONTWAIT) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let deadline = *deadline.get_or_insert_with(|| {
                    timeout.and_then(|t| std::time::Instant::now().checked_add(t))
                });
                let left = deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
                if left == Some(Duration::ZERO) {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "datagram send timed out (the send buffer, or the peer's receive queue, stayed full)",
                    ));
                }
                if writable {
                    std::thread::sleep(left.map_or(nap, |l| l.min(nap)));
                    nap = (nap * 2).min(STALLED_PEER_NAP_MAX);
                    continue;
                }
                let mut p = libc::pollfd {
                    fd: sock.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                };
                let ms = left.map_or(-1, |d| {
                    d.as_millis().clamp(1, i32::MAX as u128) as libc::c_int
                });
                // SAFETY: one valid pollfd.
                let ready = unsafe { libc::poll(&mut p, 1, ms) };
                writable = ready > 0 && p.revents & libc::POLLOUT != 0;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

/// The first nap of [`send_to_waiting`] when `POLLOUT` cannot see what blocks.
const STALLED_PEER_NAP_MIN: Duration = Duration::from_millis(1);
/// Its longest nap: a reply to a peer that starts reading again waits at most this long
/// beyond that.
const STALLED_PEER_NAP_MAX: Duration = Duration::from_millis(50);

/// Wakes a thread blocked in [`poll_readable`]: a non-blocking socketpair whose read end is
/// polled next to the listener. `wake` is async-signal-safe in effect (one `write`), never
/// blocks, and coalesces: many wakes before a drain cost one readable event.
#[derive(Debug)]
pub(crate) struct Waker {
    rx: Option<UnixStream>,
    tx: Option<UnixStream>,
}

impl Waker {
    pub(crate) fn new() -> io::Result<Waker> {
        let (rx, tx) = UnixStream::pair()?;
        rx.set_nonblocking(true)?;
        tx.set_nonblocking(true)?;
        Ok(Waker {
            rx: Some(rx),
            tx: Some(tx),
        })
    }

    /// A waker that could not be created; `is_alive` reports it so that callers that
    /// cannot return errors at construction can report them later.
    pub(crate) fn dead() -> Waker {
        Waker { rx: None, tx: None }
    }

    pub(crate) fn is_alive(&self) -> bool {
        self.rx.is_some()
    }

    /// The descriptor to poll for readability.
    pub(crate) fn fd(&self) -> RawFd {
        self.rx.as_ref().map_or(-1, |r| r.as_raw_fd())
    }

    /// Makes [`fd`](Self::fd) readable. A full pipe means a wake is already pending.
    pub(crate) fn wake(&self) {
        let Some(tx) = &self.tx else { return };
        match (&*tx).write(&[1]) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => log::warn!("socketserver: waker write failed: {e}"),
        }
    }

    /// Consumes pending wakes.
    pub(crate) fn drain(&self) {
        let Some(rx) = &self.rx else { return };
        let mut buf = [0u8; 64];
        while let Ok(n) = (&*rx).read(&mut buf) {
            if n < buf.len() {
                break;
            }
        }
    }
}

/// `shutdown(2)` on a raw descriptor, ignoring errors (the peer may already be gone).
pub(crate) fn shutdown_fd(fd: RawFd) {
    // SAFETY: shutdown on a descriptor has no memory-safety preconditions; callers guarantee
    // (under the tracker lock) that `fd` is still the connection they registered.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

/// `shutdown(SHUT_RD)` on a raw descriptor, ignoring errors: a blocked `recv` returns 0
/// (end of file) once what was already received has been read; writes still work.
pub(crate) fn shutdown_read_fd(fd: RawFd) {
    // SAFETY: as `shutdown_fd`: no memory-safety preconditions; callers guarantee (under the
    // tracker lock) that `fd` is still the connection they registered.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RD);
    }
}

/// Connections waiting in a TCP listener's accept queue (the listen backlog): Linux's
/// `TCP_INFO` on a listening socket reports it as `tcpi_unacked`. `None` elsewhere, and for
/// sockets that are not listening TCP sockets.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn listen_queue_len(fd: RawFd) -> Option<usize> {
    const TCP_LISTEN: u8 = 10;
    // SAFETY: `tcp_info` is plain integers, valid when zeroed; getsockopt writes at most
    // `len` bytes into it.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    (r == 0 && info.tcpi_state == TCP_LISTEN).then_some(info.tcpi_unacked as usize)
}

/// Not known on this platform.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn listen_queue_len(_fd: RawFd) -> Option<usize> {
    None
}

/// The credentials of a Unix-domain socket's peer, as the kernel recorded them at
/// `connect(2)`: `(uid, gid, pid)`. Linux: `SO_PEERCRED` (pid included). macOS and the
/// BSDs: `getpeereid(3)` (no pid).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn peer_credentials(fd: RawFd) -> io::Result<(u32, u32, Option<i32>)> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a valid `ucred`; getsockopt writes at most `len` bytes into it.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((cred.uid, cred.gid, Some(cred.pid)))
}

/// See the Linux version.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn peer_credentials(fd: RawFd) -> io::Result<(u32, u32, Option<i32>)> {
    let (mut uid, mut gid) = (0, 0);
    // SAFETY: two out-parameters we own.
    if unsafe { libc::getpeereid(fd, &mut uid, &mut gid) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((uid, gid, None))
}

/// Has the peer sent bytes not read yet, or closed its side? One non-blocking
/// `recv(MSG_PEEK | MSG_DONTWAIT)` of one byte; errors count as "nothing pending".
pub(crate) fn has_pending_input(fd: RawFd) -> bool {
    let mut byte = 0u8;
    // SAFETY: a one-byte buffer we own; MSG_PEEK leaves the data in the socket.
    let n = unsafe {
        libc::recv(
            fd,
            (&raw mut byte).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n >= 0
}

/// `recv(MSG_PEEK)`: copies what the socket holds, up to `buf.len()` bytes, and leaves it
/// there; blocks (within `SO_RCVTIMEO`) if the socket is blocking and holds nothing.
/// Retried on `EINTR`.
pub(crate) fn peek(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: a buffer we own, of the length given.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_PEEK) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Sleeps for `d` unless `waker` fires first. Used for accept back-off, so that a server in
/// back-off still shuts down at once.
pub(crate) fn sleep_or_wake(waker: &Waker, d: Duration) -> io::Result<()> {
    poll_readable(&[waker.fd()], Some(d)).map(|_| ())
}

/// While it lives, the calling thread's timer slack (`prctl(PR_SET_TIMERSLACK)`: how late
/// the kernel may run its timed waits, to run them with another wake-up; default 50 µs) is
/// the given one; dropping it restores the previous slack. Does nothing if the kernel
/// refuses.
#[cfg(target_os = "linux")]
pub(crate) struct TimerSlack {
    before: Option<libc::c_ulong>,
}

#[cfg(target_os = "linux")]
impl TimerSlack {
    /// Sets this thread's timer slack to `slack`.
    pub(crate) fn set(slack: Duration) -> TimerSlack {
        let ns = libc::c_ulong::try_from(slack.as_nanos()).unwrap_or(libc::c_ulong::MAX);
        // SAFETY: PR_GET_TIMERSLACK and PR_SET_TIMERSLACK take plain integers and only
        // concern the calling thread.
        let before = unsafe { libc::prctl(libc::PR_GET_TIMERSLACK) };
        if before <= 0 || unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, ns) } != 0 {
            return TimerSlack { before: None };
        }
        TimerSlack {
            before: Some(before as libc::c_ulong),
        }
    }
}

#[cfg(target_os = "linux")]
impl Drop for TimerSlack {
    fn drop(&mut self) {
        if let Some(ns) = self.before {
            // SAFETY: as in `set`.
            unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, ns) };
        }
    }
}

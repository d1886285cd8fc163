//! Receiving datagrams in batches: on Linux one `recvmmsg(2)` takes every datagram waiting
//! (up to the batch size) in one system call; elsewhere one `recvmsg(2)` per datagram.
//! Truncation (`MSG_TRUNC`) is reported per datagram, as `recvmsg` does.

use std::io;
use std::mem::MaybeUninit;

#[cfg(not(target_os = "linux"))]
use socket2::MaybeUninitSlice;
use socket2::{SockAddr, Socket};

/// Datagrams taken per `recvmmsg` at most.
pub(crate) const BATCH_SLOTS: usize = 16;

/// One received datagram, borrowed from the batch.
#[derive(Debug)]
pub(crate) struct Datagram<'a> {
    /// Its bytes (at most the slot size).
    pub(crate) data: &'a [u8],
    /// It was larger than the slot: the rest is lost (`MSG_TRUNC`).
    pub(crate) truncated: bool,
    /// Its sender.
    pub(crate) from: SockAddr,
}

/// A batch of receive buffers: `slots` buffers of `size` bytes, and what the last receive
/// put in them. Uninitialised memory: pages the kernel never writes stay unmapped.
pub(crate) struct RecvBatch {
    buf: Vec<MaybeUninit<u8>>,
    size: usize,
    slots: usize,
    /// Per datagram received: length, truncated, and the sender's address length (Linux:
    /// the address itself stays in `addrs` until [`next`](Self::next) takes it).
    #[cfg(target_os = "linux")]
    got: Vec<(usize, bool, libc::socklen_t)>,
    #[cfg(not(target_os = "linux"))]
    got: Vec<(usize, bool, SockAddr)>,
    next: usize,
    /// The last receive took fewer datagrams than it had room for: the socket was empty.
    drained: bool,
    /// Receives wait in the kernel for the first datagram (the socket is blocking, with a
    /// receive timeout: see [`ReceiveWait`]) instead of returning `EAGAIN` at once.
    wait: bool,
    /// The last receive took something: the next may wait (when `wait`). Only while
    /// datagrams flow does a receive wait, so that a loop that found the socket empty goes
    /// straight back to `poll(2)` on its waker: an idle server, or one just started, stops
    /// at once on `shutdown()`.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    flowing: bool,
    /// `recvmmsg`'s headers, pointing into `buf`, `iovs` and `addrs` (heap memory that
    /// never moves: the vectors are never resized). This makes the batch `!Send`: it lives
    /// on the thread that receives, unless moved with its owner (see the `Send` impl).
    #[cfg(target_os = "linux")]
    hdrs: Vec<libc::mmsghdr>,
    #[cfg(target_os = "linux")]
    iovs: Vec<libc::iovec>,
    #[cfg(target_os = "linux")]
    addrs: Vec<socket2::SockAddrStorage>,
}

// SAFETY: the raw pointers in `hdrs` and `iovs` point into `buf`, `iovs` and `addrs`, heap
// memory this batch owns and never reallocates: moving the batch to another thread moves
// what they point to with it, and nothing else holds them (every use takes `&mut self`).
#[cfg(target_os = "linux")]
unsafe impl Send for RecvBatch {}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("size", &self.size)
            .field("slots", &self.slots)
            .field("pending", &(self.got.len() - self.next))
            .finish()
    }
}

impl RecvBatch {
    /// `slots` buffers (at least one) of `size` bytes each.
    pub(crate) fn new(size: usize, slots: usize) -> RecvBatch {
        let slots = slots.max(1);
        #[allow(unused_mut)]
        let mut b = RecvBatch {
            buf: vec![MaybeUninit::uninit(); size.saturating_mul(slots)],
            size,
            slots,
            got: Vec::with_capacity(slots),
            next: 0,
            drained: false,
            wait: false,
            flowing: false,
            #[cfg(target_os = "linux")]
            hdrs: Vec::new(),
            #[cfg(target_os = "linux")]
            iovs: Vec::new(),
            #[cfg(target_os = "linux")]
            addrs: Vec::new(),
        };
        #[cfg(target_os = "linux")]
        b.link();
        b
    }

    /// Points one header per slot at its buffer and address storage.
    #[cfg(target_os = "linux")]
    fn link(&mut self) {
        self.addrs = (0..self.slots)
            .map(|_| socket2::SockAddrStorage::zeroed())
            .collect();
        let base = self.buf.as_mut_ptr();
        let size = self.size;
        self.iovs = (0..self.slots)
            .map(|i| libc::iovec {
                // SAFETY: slot `i` lies inside `buf` (slots * size bytes).
                iov_base: unsafe { base.add(i * size) }.cast(),
                iov_len: size,
            })
            .collect();
        let (iovs, addrs) = (self.iovs.as_mut_ptr(), self.addrs.as_mut_ptr());
        self.hdrs = (0..self.slots)
            .map(|i| {
                // SAFETY: a zeroed mmsghdr is valid; `i` is inside both vectors.
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_name = unsafe { addrs.add(i) }.cast();
                h.msg_hdr.msg_iov = unsafe { iovs.add(i) };
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
    }

    /// Datagrams received and not yet taken with [`next`](Self::next).
    pub(crate) fn has_pending(&self) -> bool {
        self.next < self.got.len()
    }

    /// Did the last receive leave the socket empty (it took fewer datagrams than it had
    /// slots)? Asked once: the flag is cleared.
    pub(crate) fn take_drained(&mut self) -> bool {
        std::mem::take(&mut self.drained)
    }

    /// Lets receives wait (up to the socket's receive timeout) for the first datagram, when
    /// a [`ReceiveWait`] holds the socket and the receive before took something; otherwise
    /// they never wait.
    pub(crate) fn set_wait(&mut self, on: bool) {
        self.wait = on;
    }

    /// Do receives wait for the first datagram ([`set_wait`](Self::set_wait))?
    pub(crate) fn waits(&self) -> bool {
        self.wait
    }

    /// The next datagram of the last receive.
    pub(crate) fn next(&mut self) -> Option<Datagram<'_>> {
        let i = self.next;
        #[cfg(target_os = "linux")]
        let (len, truncated, from) = {
            let &(len, truncated, namelen) = self.got.get(i)?;
            // SAFETY: recvmmsg filled slot `i`'s address and its length; the storage is
            // plain data (`sockaddr_storage`), so a bitwise copy is a valid one — a single
            // copy, straight into the `SockAddr` the request keeps.
            let from = unsafe { SockAddr::new(std::ptr::read(&self.addrs[i]), namelen) };
            (len, truncated, from)
        };
        #[cfg(not(target_os = "linux"))]
        let (len, truncated, from) = self.got.get(i)?.clone();
        self.next += 1;
        let slot = &self.buf[i * self.size..i * self.size + len.min(self.size)];
        // SAFETY: the receive initialised the first `len` bytes of slot `i`.
        let data = unsafe { std::slice::from_raw_parts(slot.as_ptr().cast::<u8>(), slot.len()) };
        Some(Datagram {
            data,
            truncated,
            from,
        })
    }

    /// Receives what is waiting on `sock`: the number of datagrams (0 is `WouldBlock`).
    /// Without [`set_wait`](Self::set_wait) it never waits; with it (Linux), if the receive
    /// before took something, it waits for the first datagram up to the receive timeout a
    /// [`ReceiveWait`] set, then takes what else is there without waiting
    /// (`MSG_WAITFORONE`).
    pub(crate) fn recv(&mut self, sock: &Socket) -> io::Result<usize> {
        self.got.clear();
        self.next = 0;
        self.drained = false;
        #[cfg(target_os = "linux")]
        return self.recv_many(sock);
        #[cfg(not(target_os = "linux"))]
        {
            let mut slices = [MaybeUninitSlice::new(&mut self.buf[..self.size])];
            match sock.recv_from_vectored(&mut slices) {
                Ok((n, flags, from)) => {
                    self.got.push((n, flags.is_truncated(), from));
                    Ok(1)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                Err(e) => Err(e),
            }
        }
    }

    #[cfg(target_os = "linux")]
    fn recv_many(&mut self, sock: &Socket) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        let namelen = socket2::SockAddrStorage::zeroed().size_of();
        for h in &mut self.hdrs {
            h.msg_hdr.msg_namelen = namelen;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        let flags = if self.wait && self.flowing {
            libc::MSG_WAITFORONE
        } else {
            libc::MSG_DONTWAIT
        };
        let n = loop {
            // SAFETY: `hdrs` holds `slots` headers whose buffers and address storage live
            // as long as `self` (see `link`).
            let r = unsafe {
                libc::recvmmsg(
                    sock.as_raw_fd(),
                    self.hdrs.as_mut_ptr(),
                    self.slots as libc::c_uint,
                    flags,
                    std::ptr::null_mut(),
                )
            };
            if r >= 0 {
                break r as usize;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => {
                    self.flowing = false;
                    return Ok(0);
                }
                _ => return Err(e),
            }
        };
        self.flowing = n > 0;
        for i in 0..n.min(self.slots) {
            let h = &self.hdrs[i];
            let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            let len = (h.msg_len as usize).min(self.size);
            self.got.push((len, truncated, h.msg_hdr.msg_namelen));
        }
        self.drained = n > 0 && n < self.slots;
        Ok(n)
    }
}

/// How long a serving loop's receive waits in the kernel for the next datagram before the
/// loop goes back to `poll(2)` (and so how long after `shutdown()` a loop that had just
/// received may still be waiting): see [`ReceiveWait`]. The kernel counts it in ticks and
/// its timer wheel rounds up once more: a 2 ms `SO_RCVTIMEO` measured 6–8 ms at
/// `HZ=250` (it would be 10–20 ms at `HZ=100`).
#[cfg(target_os = "linux")]
pub(crate) const RECEIVE_WAIT: std::time::Duration = std::time::Duration::from_millis(2);

/// While it lives, a datagram socket is blocking with a receive timeout of
/// [`RECEIVE_WAIT`] (`SO_RCVTIMEO`), so that a serving loop whose batch drained waits for
/// the next datagram in `recvmmsg(2)` itself rather than in `poll(2)` and then
/// `recvmmsg(2)`: one system call and one wait-queue round instead of two under load
/// (measured: about 3.5 % of the server's CPU per datagram). A receive waits only right
/// after one that took something ([`RecvBatch::recv`]); once a wait times out, or when
/// the socket was found empty, the loop polls with its waker, so an idle server (or one
/// just started) wakes at once for `shutdown()`.
/// Every other receive and send of the crate passes `MSG_DONTWAIT`, so the socket's mode
/// changes nothing else; dropping it restores non-blocking mode and the previous timeout.
/// A socket shared by processes (one file description after `fork`) may be switched back
/// by another one meanwhile: the wait then returns `EAGAIN` at once and the loop polls.
#[cfg(target_os = "linux")]
pub(crate) struct ReceiveWait<'a> {
    sock: &'a Socket,
    before: Option<std::time::Duration>,
}

#[cfg(target_os = "linux")]
impl<'a> ReceiveWait<'a> {
    /// Switches `sock`; `None` (and the socket left as it was) if it cannot be.
    pub(crate) fn start(sock: &'a Socket) -> Option<ReceiveWait<'a>> {
        let before = sock.read_timeout().ok()?;
        let switched = sock
            .set_read_timeout(Some(RECEIVE_WAIT))
            .and_then(|()| sock.set_nonblocking(false));
        let w = ReceiveWait { sock, before };
        match switched {
            Ok(()) => Some(w),
            Err(e) => {
                log::debug!("socketserver: receives wait in poll(2) only: {e}");
                drop(w);
                None
            }
        }
    }
}

#[cfg(target_os = "linux")]
impl Drop for ReceiveWait<'_> {
    fn drop(&mut self) {
        let restored = self
            .sock
            .set_nonblocking(true)
            .and_then(|()| self.sock.set_read_timeout(self.before));
        if let Err(e) = restored {
            log::error!("socketserver: cannot make the datagram socket non-blocking again: {e}");
        }
    }
}

/// Buffers kept for reuse by [`SendBatch`] at most: the reply buffers of the next
/// datagrams come from there instead of the allocator.
const SPARE_BUFFERS: usize = BATCH_SLOTS;
/// The largest buffer kept for reuse (a larger one was grown by a handler, and is freed),
/// here and by a reused datagram request.
pub(crate) const SPARE_CAPACITY: usize = 16 << 10;

/// Where a queued reply goes: an IP peer as its `SocketAddr` (32 bytes, converted to a
/// `sockaddr` only when the batch is sent, so queueing copies no 128-byte
/// `sockaddr_storage`), anything else (a Unix peer) as its raw address.
#[derive(Debug, Clone)]
pub(crate) enum Peer {
    /// An IPv4 or IPv6 peer.
    Inet(std::net::SocketAddr),
    /// Any other address, as received.
    Other(Box<SockAddr>),
}

impl Peer {
    /// The same peer?
    fn same(&self, other: &Peer) -> bool {
        match (self, other) {
            (Peer::Inet(a), Peer::Inet(b)) => a == b,
            (Peer::Other(a), Peer::Other(b)) => a == b,
            _ => false,
        }
    }

    /// The raw address (what `sendto(2)` takes).
    pub(crate) fn to_sockaddr(&self) -> SockAddr {
        match self {
            Peer::Inet(a) => SockAddr::from(*a),
            Peer::Other(a) => (**a).clone(),
        }
    }
}

/// Replies queued while a batch of datagrams is handled, sent together: one `sendmmsg(2)`
/// per [`BATCH_SLOTS`] replies on Linux (what it leaves, and every reply elsewhere, one
/// `sendto` at a time, waiting up to the timeout when the send buffer is full). It also
/// keeps the buffers of sent replies, cleared, for the next replies.
#[derive(Debug, Default)]
pub(crate) struct SendBatch {
    replies: Vec<(Peer, Vec<u8>)>,
    spare: Vec<Vec<u8>>,
}

impl SendBatch {
    /// Queues `data` for `to`.
    pub(crate) fn push(&mut self, to: Peer, data: Vec<u8>) {
        self.replies.push((to, data));
    }

    /// Nothing queued?
    pub(crate) fn is_empty(&self) -> bool {
        self.replies.is_empty()
    }

    /// An empty buffer, reused if one is spare.
    pub(crate) fn take_buffer(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_default()
    }

    /// Keeps `buf` for [`take_buffer`](Self::take_buffer) (unless enough are kept, or it is
    /// large: memory stays bounded).
    fn give_back(&mut self, mut buf: Vec<u8>) {
        if self.spare.len() < SPARE_BUFFERS
            && buf.capacity() > 0
            && buf.capacity() <= SPARE_CAPACITY
        {
            buf.clear();
            self.spare.push(buf);
        }
    }

    /// Sends everything queued; calls `failed(to, error)` for each reply that could not be
    /// sent.
    ///
    /// With `stalled`, nothing waits: from the first reply that would have to wait for room
    /// on (a full send buffer, a Unix peer's full receive queue), the rest moves there, in
    /// order, for the caller to send waiting once it has let go of the batch
    /// ([`Stalled::send`]). Without, such a reply waits, up to `timeout`.
    pub(crate) fn flush(
        &mut self,
        sock: &Socket,
        timeout: Option<std::time::Duration>,
        mut failed: impl FnMut(&Peer, io::Error),
        mut stalled: Option<&mut Stalled>,
    ) {
        let mut replies = std::mem::take(&mut self.replies);
        let mut start = 0;
        while start < replies.len() {
            let chunk = &replies[start..(start + BATCH_SLOTS).min(replies.len())];
            #[allow(unused_mut)]
            let mut sent = 0;
            #[cfg(target_os = "linux")]
            if chunk.len() > 1 {
                sent = send_many(sock, chunk);
            }
            if sent == 0 {
                // One on its own, the first of what is left: waiting for room, or not.
                let (to, data) = &chunk[0];
                let to_addr = to.to_sockaddr();
                let r = match stalled {
                    Some(_) => send_now(sock, data, &to_addr),
                    None => super::send_to_waiting(sock, data, &to_addr, timeout),
                };
                match (r, stalled.as_deref_mut()) {
                    (Err(e), Some(later)) if e.kind() == io::ErrorKind::WouldBlock => {
                        // It waits, and so does every later reply to the same peer (in
                        // order within this batch; a leader that takes over meanwhile may
                        // send a newer one first); the others go now, one at a time.
                        let rest = replies.split_off(start);
                        later.take_behind(rest, sock, &mut failed);
                        break;
                    }
                    (Err(e), _) => failed(to, e),
                    (Ok(_), _) => {}
                }
                sent = 1;
            }
            start += sent;
        }
        for (_, data) in replies.drain(..) {
            self.give_back(data);
        }
        // The emptied vector is kept: no allocation for the next batch.
        self.replies = replies;
    }
}

/// Replies that could not leave at once (see [`SendBatch::flush`]), taken out of their batch.
#[derive(Debug, Default)]
pub(crate) struct Stalled(Vec<(Peer, Vec<u8>)>);

impl Stalled {
    /// `rest` starts with a reply that would block: it is kept, with every later reply to
    /// a peer already kept or whose send would block too; the others are sent now.
    fn take_behind(
        &mut self,
        rest: Vec<(Peer, Vec<u8>)>,
        sock: &Socket,
        failed: &mut impl FnMut(&Peer, io::Error),
    ) {
        for (to, data) in rest {
            let waits = self.0.iter().any(|(p, _)| p.same(&to));
            if !waits {
                match send_now(sock, &data, &to.to_sockaddr()) {
                    Ok(_) => continue,
                    Err(e) if e.kind() != io::ErrorKind::WouldBlock => {
                        failed(&to, e);
                        continue;
                    }
                    Err(_) => {}
                }
            }
            self.0.push((to, data));
        }
    }

    /// Nothing waits?
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sends them in order, each waiting for room up to `timeout`; calls `failed(to, error)`
    /// for each that could not be sent. Once a peer's reply has timed out, its later ones
    /// fail at once (a peer that does not read costs one timeout, not one per reply).
    pub(crate) fn send(
        self,
        sock: &Socket,
        timeout: Option<std::time::Duration>,
        mut failed: impl FnMut(&Peer, io::Error),
    ) {
        let mut gave_up: Vec<Peer> = Vec::new();
        for (to, data) in self.0 {
            if gave_up.iter().any(|p| p.same(&to)) {
                failed(
                    &to,
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        "datagram not sent: an earlier reply to this peer timed out",
                    ),
                );
                continue;
            }
            if let Err(e) = super::send_to_waiting(sock, &data, &to.to_sockaddr(), timeout) {
                if e.kind() == io::ErrorKind::TimedOut {
                    gave_up.push(to.clone());
                }
                failed(&to, e);
            }
        }
    }
}

/// One `sendto` that never waits, retried on `EINTR`.
fn send_now(sock: &Socket, data: &[u8], to: &SockAddr) -> io::Result<usize> {
    loop {
        match sock.send_to_with_flags(data, to, libc::MSG_DONTWAIT) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

/// One `sendmmsg` of up to [`BATCH_SLOTS`] replies without waiting: how many (from the
/// first) it sent; 0 if the first could not be sent at once.
#[cfg(target_os = "linux")]
fn send_many(sock: &Socket, replies: &[(Peer, Vec<u8>)]) -> usize {
    use std::os::fd::AsRawFd;
    let n = replies.len().min(BATCH_SLOTS);
    // Only the first `n` of each are written (and read by the kernel).
    let mut names = [const { MaybeUninit::<SockAddr>::uninit() }; BATCH_SLOTS];
    let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; BATCH_SLOTS];
    let mut hdrs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; BATCH_SLOTS];
    for (i, (to, data)) in replies.iter().take(n).enumerate() {
        let name: &SockAddr = match to {
            Peer::Inet(a) => names[i].write(SockAddr::from(*a)),
            Peer::Other(a) => a,
        };
        let iov = iovs[i].write(libc::iovec {
            iov_base: data.as_ptr().cast_mut().cast(),
            iov_len: data.len(),
        });
        // SAFETY: a zeroed mmsghdr is a valid one (null pointers, zero lengths).
        let h = hdrs[i].write(unsafe { std::mem::zeroed() });
        h.msg_hdr.msg_name = name.as_ptr().cast_mut().cast();
        h.msg_hdr.msg_namelen = name.len();
        h.msg_hdr.msg_iov = iov;
        h.msg_hdr.msg_iovlen = 1;
    }
    loop {
        // SAFETY: `hdrs[..n]` are initialised headers pointing at `names`, `replies` and
        // `iovs`, which live until the call returns; the kernel only reads them (and writes
        // each header's `msg_len`).
        let r = unsafe {
            libc::sendmmsg(
                sock.as_raw_fd(),
                hdrs.as_mut_ptr().cast::<libc::mmsghdr>(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if r >= 0 {
            return r as usize;
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            // The first failed: the caller sends it on its own (waiting) and reports.
            return 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn a_batch_takes_every_waiting_datagram_and_reports_truncation_per_datagram() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_nonblocking(true).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = server.local_addr().unwrap();
        client.send_to(b"one", to).unwrap();
        client.send_to(&[7u8; 100], to).unwrap();
        client.send_to(b"three", to).unwrap();
        let sock = Socket::from(server);
        let mut batch = RecvBatch::new(16, 4);
        let mut got = Vec::new();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while got.len() < 3 && std::time::Instant::now() < until {
            batch.recv(&sock).unwrap();
            while let Some(d) = batch.next() {
                assert_eq!(d.from.as_socket(), Some(client.local_addr().unwrap()));
                got.push((d.data.to_vec(), d.truncated));
            }
        }
        assert_eq!(
            got,
            vec![
                (b"one".to_vec(), false),
                (vec![7u8; 16], true),
                (b"three".to_vec(), false)
            ]
        );
        assert!(
            batch.take_drained(),
            "three datagrams, four slots: the socket was empty"
        );
        assert!(!batch.take_drained());
        assert_eq!(batch.recv(&sock).unwrap(), 0);
    }

    /// With waits on, a receive waits only right after one that took something: an empty
    /// socket found by a loop that was idle answers at once (so it can poll its waker).
    #[cfg(target_os = "linux")]
    #[test]
    fn a_receive_waits_only_while_datagrams_flow() {
        use std::time::{Duration, Instant};
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let timeout = Duration::from_secs(1);
        server.set_read_timeout(Some(timeout)).unwrap(); // blocking, as under ReceiveWait
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = server.local_addr().unwrap();
        let sock = Socket::from(server);
        let mut batch = RecvBatch::new(16, 4);
        batch.set_wait(true);
        let t = Instant::now();
        assert_eq!(batch.recv(&sock).unwrap(), 0);
        assert!(
            t.elapsed() < timeout / 2,
            "an idle loop's receive waited {:?}",
            t.elapsed()
        );
        client.send_to(b"one", to).unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        while batch.recv(&sock).unwrap() == 0 && Instant::now() < until {}
        assert_eq!(batch.next().map(|d| d.data.to_vec()), Some(b"one".to_vec()));
        let t = Instant::now();
        assert_eq!(batch.recv(&sock).unwrap(), 0);
        assert!(
            t.elapsed() >= timeout * 9 / 10,
            "a receive right after one that took a datagram returned after {:?}, not the timeout",
            t.elapsed()
        );
        let t = Instant::now();
        assert_eq!(batch.recv(&sock).unwrap(), 0);
        assert!(
            t.elapsed() < timeout / 2,
            "the wait timed out: no second wait"
        );
    }

    use std::os::unix::net::UnixDatagram;

    /// A non-blocking unbound Unix datagram socket, and peers bound in a fresh directory
    /// (removed with the returned guard), each with its address.
    fn unix_peers(names: &[&str]) -> (tempfile::TempDir, Socket, Vec<(UnixDatagram, SockAddr)>) {
        let dir = tempfile::tempdir().unwrap();
        let server = Socket::from(UnixDatagram::unbound().unwrap());
        server.set_nonblocking(true).unwrap();
        let peers = names
            .iter()
            .map(|n| {
                let path = dir.path().join(n);
                let peer = UnixDatagram::bind(&path).unwrap();
                peer.set_nonblocking(true).unwrap();
                (peer, SockAddr::unix(&path).unwrap())
            })
            .collect();
        (dir, server, peers)
    }

    /// How many datagrams `peer` has waiting (it reads them all).
    fn count_waiting(peer: &UnixDatagram) -> usize {
        let mut buf = [0u8; 4];
        std::iter::from_fn(|| peer.recv(&mut buf).ok()).count()
    }

    #[test]
    fn a_flush_that_must_not_wait_hands_back_what_would_block_in_order() {
        // A Unix peer that does not read: its receive queue (net.unix.max_dgram_qlen)
        // fills, and the next send to it would block. Another peer, with room, whose
        // replies come after the stall: they leave at once.
        let (_dir, server, peers) = unix_peers(&["peer", "other"]);
        let [(peer, to), (other, to_other)] = &peers[..] else {
            unreachable!()
        };
        let mut batch = SendBatch::default();
        let n = 2000u16;
        for i in 0..n {
            batch.push(Peer::Other(Box::new(to.clone())), i.to_be_bytes().to_vec());
        }
        for i in 0..5u16 {
            batch.push(
                Peer::Other(Box::new(to_other.clone())),
                i.to_be_bytes().to_vec(),
            );
        }
        let (mut errors, mut stalled) = (0, Stalled::default());
        let t = std::time::Instant::now();
        batch.flush(&server, None, |_, _| errors += 1, Some(&mut stalled));
        assert!(
            t.elapsed() < std::time::Duration::from_secs(5),
            "it did not wait"
        );
        assert_eq!(errors, 0);
        assert!(batch.is_empty());
        let held = stalled.0.len();
        assert!(held > 0 && held < n as usize, "{held} of {n} handed back");
        // What was handed back is the tail, in order.
        let first = u16::from_be_bytes([stalled.0[0].1[0], stalled.0[0].1[1]]);
        assert_eq!(first as usize, n as usize - held);
        assert_eq!(
            count_waiting(peer),
            n as usize - held,
            "what left at once arrived"
        );
        assert!(
            stalled
                .0
                .iter()
                .all(|(p, _)| p.same(&Peer::Other(Box::new(to.clone())))),
            "only the peer with no room waits"
        );
        assert_eq!(
            count_waiting(other),
            5,
            "a peer with room is not held up behind one without"
        );
    }

    #[test]
    fn stalled_replies_to_a_peer_that_timed_out_fail_at_once() {
        let (_dir, server, peers) = unix_peers(&["peer"]);
        let to = &peers[0].1;
        // Fill the peer's queue, then five replies that cannot leave.
        while server.send_to(b"x", to).is_ok() {}
        let stalled = Stalled(
            (0..5u8)
                .map(|i| (Peer::Other(Box::new(to.clone())), vec![i]))
                .collect(),
        );
        let mut errors = Vec::new();
        let timeout = std::time::Duration::from_millis(100);
        stalled.send(&server, Some(timeout), |_, e| errors.push(e.to_string()));
        assert_eq!(errors.len(), 5, "{errors:?}");
        assert!(errors[0].contains("timed out"), "{errors:?}");
        assert!(
            errors[1..].iter().all(|e| e.contains("earlier reply")),
            "one timeout for the peer, not one per reply: {errors:?}"
        );
    }

    #[test]
    fn a_send_batch_delivers_each_reply_to_its_own_peer_in_order() {
        let server = Socket::from(UdpSocket::bind("127.0.0.1:0").unwrap());
        let peers: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let mut batch = SendBatch::default();
        // More than one `sendmmsg` holds.
        let rounds = (BATCH_SLOTS + 4).div_ceil(3) as u8;
        for round in 0..rounds {
            for (i, p) in peers.iter().enumerate() {
                batch.push(Peer::Inet(p.local_addr().unwrap()), vec![round, i as u8]);
            }
        }
        let mut errors = 0;
        batch.flush(&server, None, |_, _| errors += 1, None);
        assert_eq!(errors, 0);
        assert!(batch.is_empty());
        assert!(
            batch.take_buffer().capacity() >= 2,
            "the sent replies' buffers are kept for reuse"
        );
        for (i, p) in peers.iter().enumerate() {
            p.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            let mut buf = [0u8; 8];
            for round in 0..rounds {
                let n = p.recv(&mut buf).unwrap();
                assert_eq!(&buf[..n], &[round, i as u8]);
            }
        }
    }
}

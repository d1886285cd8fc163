//! Server statistics: counters updated lock-free, read as a [`Stats`] snapshot.

use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing event counter.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The server's event counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) accepted: Counter,
    pub(crate) served: Counter,
    pub(crate) refused: Counter,
    pub(crate) rejected: Counter,
    pub(crate) dropped: Counter,
    pub(crate) errors: Counter,
    pub(crate) timeouts: Counter,
    pub(crate) disconnects: Counter,
    pub(crate) panics: Counter,
    pub(crate) truncated: Counter,
    pub(crate) accept_errors: Counter,
    pub(crate) saturated: Counter,
    pub(crate) proxy_refused: Counter,
    pub(crate) tls_failures: Counter,
}

/// A snapshot of a server's activity, from [`ServerHandle::stats`](crate::ServerHandle::stats).
///
/// Counters (`accepted`, `served`, …) only grow; gauges (`workers`, `idle`, `queued`,
/// `active`) describe the moment of the snapshot.
///
/// `Display` prints it on one line, counters then gauges (`12 served, 0 errors, 1
/// timeouts, …; open 3, active 3, queued 0, workers 4, idle 1`); it implements
/// `serde::Serialize` (serde is already a dependency of the crate, for
/// [`framing`](crate::framing)'s JSON headers), one field per counter and gauge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// Connections accepted / datagrams received (before `verify_request`).
    pub accepted: u64,
    /// Requests whose handler pipeline ran to the end (whatever the handler returned).
    pub served: u64,
    /// Requests refused by `verify_request`.
    pub refused: u64,
    /// Connections closed at once because the queue was full (overload policy `Reject`).
    pub rejected: u64,
    /// Accepted requests closed without being handled because the server was force-closed
    /// (grace period over, or a second Ctrl-C). Each one is also logged.
    pub dropped: u64,
    /// Errors returned by handlers or by setting a request up (reported to `handle_error`),
    /// other than [`timeouts`](Self::timeouts) and [`disconnects`](Self::disconnects).
    pub errors: u64,
    /// Requests ended by a read or write timeout ([`io::ErrorKind::TimedOut`](std::io::ErrorKind::TimedOut):
    /// [`Builder::read_timeout`](crate::Builder::read_timeout),
    /// [`Builder::write_timeout`](crate::Builder::write_timeout)); reported to
    /// `handle_error`, logged at INFO by default, not counted in `errors`.
    pub timeouts: u64,
    /// Requests ended because the peer went away: connection reset, broken pipe, aborted,
    /// not connected. Reported to `handle_error`, logged at INFO by default, not counted in
    /// `errors`.
    pub disconnects: u64,
    /// Handler panics (caught, reported to `handle_error`; the worker survived).
    pub panics: u64,
    /// Datagrams dropped because they were larger than `max_packet_size`.
    pub truncated: u64,
    /// Failed `accept(2)` / `recvfrom(2)` calls (EMFILE, ECONNABORTED…).
    pub accept_errors: u64,
    /// Worker threads alive (threading mode) or child processes running (forking mode).
    pub workers: usize,
    /// Worker threads waiting for work.
    pub idle: usize,
    /// Requests accepted and waiting for a worker.
    pub queued: usize,
    /// Stream requests being handled right now.
    pub active: usize,
    /// Connections accepted and not yet closed (queued or running).
    pub open: usize,
    /// Connections shut down because they outlived the connection deadline.
    pub deadline_expired: u64,
    /// Requests queued while every worker, at the pool's maximum, was busy: they waited
    /// for one to free up (threading mode). Long-lived connections beyond
    /// [`workers`](crate::Builder::workers)' maximum wait until another closes; this counts
    /// them, and a warning is logged (at most every 10 s).
    pub saturated: u64,
    /// Connections closed over their PROXY protocol header
    /// ([`Builder::proxy_protocol`](crate::Builder::proxy_protocol)): none, malformed,
    /// longer than `proxy_header_max`, not complete within `proxy_header_timeout`, or from
    /// a peer outside the trusted networks. Logged at WARN, one line a second for all of
    /// them together (the lines left out are counted in the next).
    /// In forking mode the header is read in the child, which keeps its count (only the
    /// untrusted peers, closed before forking, are counted here).
    pub proxy_refused: u64,
    /// TLS handshakes that failed (feature `tls`): garbage or a plaintext client on the TLS
    /// port, a refused client certificate, a client that did not finish within
    /// [`Builder::tls_handshake_timeout`](crate::Builder::tls_handshake_timeout). Each
    /// connection was closed before reaching the handler; each is logged (at WARN, at most
    /// one line a second), not counted in `errors`. In forking mode the handshake runs in
    /// the child, which tells the parent through its exit status.
    pub tls_failures: u64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            accepted: self.accepted.get(),
            served: self.served.get(),
            refused: self.refused.get(),
            rejected: self.rejected.get(),
            dropped: self.dropped.get(),
            errors: self.errors.get(),
            timeouts: self.timeouts.get(),
            disconnects: self.disconnects.get(),
            panics: self.panics.get(),
            truncated: self.truncated.get(),
            accept_errors: self.accept_errors.get(),
            saturated: self.saturated.get(),
            proxy_refused: self.proxy_refused.get(),
            tls_failures: self.tls_failures.get(),
            ..Stats::default()
        }
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} accepted, {} served, {} errors, {} timeouts, {} disconnects, {} panics, \
             {} refused, {} rejected, {} dropped",
            self.accepted,
            self.served,
            self.errors,
            self.timeouts,
            self.disconnects,
            self.panics,
            self.refused,
            self.rejected,
            self.dropped
        )?;
        for (n, what) in [
            (self.truncated, "truncated"),
            (self.accept_errors, "accept errors"),
            (self.deadline_expired, "past the deadline"),
            (self.saturated, "saturated"),
            (self.proxy_refused, "refused over their PROXY header"),
            (self.tls_failures, "TLS handshakes failed"),
        ] {
            if n > 0 {
                write!(f, ", {n} {what}")?;
            }
        }
        write!(
            f,
            "; open {}, active {}, queued {}, workers {}, idle {}",
            self.open, self.active, self.queued, self.workers, self.idle
        )
    }
}

//! Log lines a person can read: per-connection events (errors, timeouts, peers gone,
//! refusals) are logged at most once a second per kind, each line counting the ones left
//! out since the previous line of its kind, and the server's close reports the totals.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::HandlerError;

/// A kind of per-connection event, each with its own line budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// A handler error (ERROR).
    Error,
    /// A handler panic (ERROR).
    Panic,
    /// A read or write timeout (INFO).
    Timeout,
    /// The peer went away: reset, broken pipe, aborted (INFO).
    Disconnect,
    /// A connection refused by the overload policy or `max_connections` (WARN).
    Rejected,
    /// A request closed unhandled by the drain (WARN).
    Dropped,
    /// A connection closed for a missing, malformed, late or untrusted PROXY header (WARN).
    Proxy,
    /// A TLS handshake that failed: garbage, plaintext, a refused certificate, too slow
    /// (WARN).
    Tls,
}

const KINDS: usize = 8;

impl Event {
    /// What a handler error is.
    pub(crate) fn of(err: &HandlerError) -> Event {
        match err {
            HandlerError::Panic(_) => Event::Panic,
            #[cfg(feature = "tls")]
            HandlerError::Io(e) if crate::tls::is_handshake_error(e) => Event::Tls,
            #[cfg(feature = "tls")]
            HandlerError::Io(e) if crate::tls::is_truncated(e) => Event::Disconnect,
            HandlerError::Io(e) => match e.kind() {
                io::ErrorKind::TimedOut => Event::Timeout,
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::NotConnected => Event::Disconnect,
                _ => Event::Error,
            },
        }
    }

    /// The level its lines are logged at.
    pub(crate) fn level(self) -> log::Level {
        match self {
            Event::Error | Event::Panic => log::Level::Error,
            Event::Rejected | Event::Dropped | Event::Proxy | Event::Tls => log::Level::Warn,
            Event::Timeout | Event::Disconnect => log::Level::Info,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Event::Error => "error",
            Event::Panic => "panic",
            Event::Timeout => "timeout",
            Event::Disconnect => "disconnect",
            Event::Rejected => "rejection",
            Event::Dropped => "dropped request",
            Event::Proxy => "PROXY header refusal",
            Event::Tls => "TLS handshake failure",
        }
    }
}

#[derive(Debug, Default)]
struct Budget {
    last: Mutex<Option<Instant>>,
    /// Left out since the last line of this kind.
    skipped: AtomicU64,
    /// Left out in all.
    skipped_total: AtomicU64,
}

/// The per-kind line budgets of one server.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    budgets: [Budget; KINDS],
}

/// How many lines of a kind were left out before this one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Skipped(u64);

impl Skipped {
    /// Nothing left out.
    pub(crate) const NONE: Skipped = Skipped(0);
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 > 0 {
            write!(
                f,
                " (+{} more like it in the last second, not logged)",
                self.0
            )
        } else {
            Ok(())
        }
    }
}

/// The shortest time between two lines of one kind.
const EVERY: Duration = Duration::from_secs(1);

impl Summary {
    /// May a line of `kind` be logged now? `Some` with the count left out since the last
    /// one; `None` (and counted) if one was logged less than a second ago.
    pub(crate) fn admit(&self, kind: Event) -> Option<Skipped> {
        let b = &self.budgets[kind as usize];
        let mut last = b.last.lock();
        if last.is_none_or(|t| t.elapsed() >= EVERY) {
            *last = Some(Instant::now());
            Some(Skipped(b.skipped.swap(0, Ordering::Relaxed)))
        } else {
            b.skipped.fetch_add(1, Ordering::Relaxed);
            b.skipped_total.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    /// "3 timeout(s), 1740 disconnect(s)": the lines left out in all, or `None`.
    pub(crate) fn left_out(&self) -> Option<String> {
        const ALL: [Event; KINDS] = [
            Event::Error,
            Event::Panic,
            Event::Timeout,
            Event::Disconnect,
            Event::Rejected,
            Event::Dropped,
            Event::Proxy,
            Event::Tls,
        ];
        let parts: Vec<String> = ALL
            .iter()
            .filter_map(|&k| {
                let n = self.budgets[k as usize]
                    .skipped_total
                    .load(Ordering::Relaxed);
                (n > 0).then(|| format!("{n} {}(s)", k.name()))
            })
            .collect();
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

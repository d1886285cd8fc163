//! What the serving loop does when `accept(2)` / `recvfrom(2)` fails.
//!
//! Per-connection errors (the peer reset or aborted before we accepted) are skipped at once.
//! Everything else — above all EMFILE/ENFILE/ENOBUFS/ENOMEM, where the pending connection
//! stays queued and the listener stays readable, so that Python spins at 100 % CPU — backs
//! off: 5 ms, doubling to 1 s, reset by the next success; the error is logged at most once
//! per second with the number of repeats. The loop ends only on shutdown.

use std::io;
use std::time::{Duration, Instant};

const FIRST: Duration = Duration::from_millis(5);
const MAX: Duration = Duration::from_secs(1);

/// Is this error about one connection only (retry at once)?
pub(crate) fn is_per_connection(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock
    ) {
        return true;
    }
    // Linux reports some pending-connection errors through accept (accept(2) "Error
    // handling"): EPROTO, ENOPROTOOPT, EHOSTDOWN, ENONET, EHOSTUNREACH, EOPNOTSUPP,
    // ENETUNREACH; EPERM comes from firewall rules.
    matches!(
        e.raw_os_error(),
        Some(
            libc::EPROTO
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETUNREACH
                | libc::EPERM
        )
    )
}

/// Back-off state and rate-limited logging for one serving loop.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    delay: Option<Duration>,
    last_log: Option<Instant>,
    suppressed: u64,
}

impl Backoff {
    pub(crate) fn reset(&mut self) {
        self.delay = None;
    }

    /// Logs (rate-limited) and returns how long to pause before the next attempt.
    pub(crate) fn on_error(&mut self, e: &io::Error) -> Duration {
        let d = match self.delay {
            None => FIRST,
            Some(d) => (d * 2).min(MAX),
        };
        self.delay = Some(d);
        let now = Instant::now();
        match self.last_log {
            Some(t) if now.duration_since(t) < Duration::from_secs(1) => self.suppressed += 1,
            _ => {
                if self.suppressed > 0 {
                    log::error!(
                        "socketserver: accept failed: {e} (and {} more times); pausing {d:?}",
                        self.suppressed
                    );
                } else {
                    log::error!("socketserver: accept failed: {e}; pausing {d:?}");
                }
                self.suppressed = 0;
                self.last_log = Some(now);
            }
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_5ms_to_1s_and_resets() {
        let mut b = Backoff::default();
        let e = io::Error::from_raw_os_error(libc::EMFILE);
        let seq: Vec<_> = (0..10).map(|_| b.on_error(&e).as_millis()).collect();
        assert_eq!(seq, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.reset();
        assert_eq!(b.on_error(&e), FIRST);
    }

    #[test]
    fn emfile_is_not_per_connection_but_reset_is() {
        assert!(!is_per_connection(&io::Error::from_raw_os_error(
            libc::EMFILE
        )));
        assert!(!is_per_connection(&io::Error::from_raw_os_error(
            libc::ENFILE
        )));
        assert!(is_per_connection(&io::Error::from_raw_os_error(
            libc::ECONNABORTED
        )));
        assert!(is_per_connection(&io::Error::from_raw_os_error(
            libc::EPROTO
        )));
    }
}

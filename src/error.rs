//! [`HandlerError`]: what a handler stage produced when it failed — the value the
//! `handle_error` hook receives. At the bottom of the layers: the context reports it, the
//! pipeline makes it, and handlers never see it.

use std::fmt;
use std::io;

/// What went wrong while processing a request, as passed to the `handle_error` hook.
#[derive(Debug)]
#[non_exhaustive]
pub enum HandlerError {
    /// `setup`, `handle` or `finish` returned an error, or the server failed to set up or
    /// complete the request (e.g. a datagram reply could not be sent).
    Io(io::Error),
    /// A handler (or its factory) panicked; the payload's message, if it was a string.
    Panic(String),
}

impl HandlerError {
    pub(crate) fn from_panic(payload: Box<dyn std::any::Any + Send>) -> HandlerError {
        let msg = if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "non-string panic payload".to_string()
        };
        HandlerError::Panic(msg)
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandlerError::Io(e) => write!(f, "{e}"),
            HandlerError::Panic(m) => write!(f, "handler panicked: {m}"),
        }
    }
}

impl std::error::Error for HandlerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HandlerError::Io(e) => Some(e),
            HandlerError::Panic(_) => None,
        }
    }
}

/// A socket read or write on an accepted connection waited longer than its timeout
/// (`SO_RCVTIMEO` / `SO_SNDTIMEO`, set from [`Builder::read_timeout`](crate::Builder::read_timeout)
/// and [`Builder::write_timeout`](crate::Builder::write_timeout)).
///
/// It travels inside an [`io::Error`] of kind [`io::ErrorKind::TimedOut`] (the OS reports
/// `EAGAIN`, which std calls `WouldBlock`); its message names the knob and the duration,
/// `read timed out after 2s (read_timeout)`. Reach it with
/// `err.get_ref().and_then(|e| e.downcast_ref::<TimeoutError>())`. Servers count these in
/// [`Stats::timeouts`](crate::Stats::timeouts), apart from errors, and log them below ERROR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeoutError {
    write: bool,
    after: Option<std::time::Duration>,
}

impl TimeoutError {
    pub(crate) fn new(write: bool, after: Option<std::time::Duration>) -> TimeoutError {
        TimeoutError { write, after }
    }

    /// The builder knob that set the timeout: `"read_timeout"` or `"write_timeout"`.
    pub fn knob(&self) -> &'static str {
        if self.write {
            "write_timeout"
        } else {
            "read_timeout"
        }
    }

    /// `true` for a write (`SO_SNDTIMEO`), `false` for a read (`SO_RCVTIMEO`).
    pub fn is_write(&self) -> bool {
        self.write
    }

    /// The timeout that expired, as read back from the socket (`getsockopt(2)`).
    pub fn duration(&self) -> Option<std::time::Duration> {
        self.after
    }

    /// Wraps it in an `io::Error` of kind `TimedOut`.
    pub(crate) fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, self)
    }
}

impl fmt::Display for TimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = if self.write { "write" } else { "read" };
        match self.after {
            Some(d) => write!(f, "{op} timed out after {d:?} ({})", self.knob()),
            None => write!(f, "{op} timed out ({})", self.knob()),
        }
    }
}

impl std::error::Error for TimeoutError {}

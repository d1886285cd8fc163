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

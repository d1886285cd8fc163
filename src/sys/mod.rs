//! Thin wrappers over the OS calls that std and socket2 do not cover: `poll(2)`, a waker for
//! the serving loop, `getrlimit`/`setrlimit`. Everything platform-specific lives below this
//! module, apart from the public API.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(crate) use unix::*;

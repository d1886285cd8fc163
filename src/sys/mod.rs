//! Thin wrappers over the OS calls that std and socket2 do not cover: `poll(2)`, a waker for
//! the serving loop, `getrlimit`/`setrlimit`, and the forked-child flag. Everything
//! platform-specific lives below this module, apart from the public API. The bottom layer:
//! it names no other module of the crate.

#[cfg(unix)]
pub(crate) mod activation;
#[cfg(unix)]
mod child;
#[cfg(unix)]
mod limits;
#[cfg(unix)]
mod mmsg;
#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(crate) use child::*;
#[cfg(unix)]
pub use limits::raise_fd_limit;
#[cfg(unix)]
#[cfg(target_os = "linux")]
pub(crate) use mmsg::ReceiveWait;
pub(crate) use mmsg::{BATCH_SLOTS, Datagram, Peer, RecvBatch, SPARE_CAPACITY, SendBatch, Stalled};
#[cfg(unix)]
pub(crate) use unix::*;

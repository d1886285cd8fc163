//! Execution modes: how a server runs each request once it has it.
//!
//! | mode | Python | what runs the handler |
//! |---|---|---|
//! | [`Synchronous`] | `TCPServer` | the thread in `serve_forever`, one request at a time |
//! | [`Threading`] | `ThreadingMixIn` | a bounded, elastic worker pool ([`PoolConfig`]) |
//!
//! The mode is a type parameter of [`Server`](crate::Server) so that the names read like
//! Python's (`ThreadingTcpServer`); inside, it selects one runtime executor.

mod executor;
mod pool;

pub(crate) use executor::{Disposition, Executor, Job, Refusal};

pub(crate) use pool::Pool;
pub use pool::{Overload, PoolConfig};

mod sealed {
    pub trait Sealed {}
}

/// An execution mode: [`Synchronous`] or [`Threading`]. Sealed.
pub trait Mode: sealed::Sealed + Send + Sync + 'static {
    #[doc(hidden)]
    fn executor(config: &PoolConfig) -> Executor;
}

/// Serve one request at a time on the thread that calls `serve_forever` (Python's plain
/// `TCPServer` / `UDPServer`). Simplest and cheapest; a slow client blocks everyone else.
#[derive(Debug, Clone, Copy)]
pub struct Synchronous;

/// Serve requests on a bounded pool of worker threads (Python's `ThreadingMixIn`, with a
/// pool instead of a thread per request). See [`PoolConfig`] for sizing and overload.
#[derive(Debug, Clone, Copy)]
pub struct Threading;

impl sealed::Sealed for Synchronous {}
impl sealed::Sealed for Threading {}

impl Mode for Synchronous {
    fn executor(_config: &PoolConfig) -> Executor {
        Executor::Inline
    }
}

impl Mode for Threading {
    fn executor(config: &PoolConfig) -> Executor {
        Executor::Pool(Pool::new(config.clone()))
    }
}

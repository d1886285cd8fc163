//! Execution modes: how a server runs each request once it has it.
//!
//! | mode | Python | what runs the handler |
//! |---|---|---|
//! | [`Synchronous`] | `TCPServer` | the thread in `serve_forever`, one request at a time |
//! | [`Threading`] | `ThreadingMixIn` | a bounded, elastic worker pool ([`PoolConfig`]) |
//! | [`Forking`] | `ForkingMixIn` | a child process per request, at most `max_children` |
//!
//! The mode is a type parameter of [`Server`](crate::Server) so that the names read like
//! Python's (`ThreadingTcpServer`); inside, it selects one runtime executor.

mod executor;
#[cfg(unix)]
mod forking;
pub(crate) mod pipeline;
mod pool;
mod reactor;

pub(crate) use executor::{Disposition, Executor, Job, Refusal};
#[cfg(unix)]
pub(crate) use forking::Forker;

pub use crate::options::{Overload, PoolConfig};
pub(crate) use pool::Pool;
pub(crate) use reactor::Reactor;

mod sealed {
    pub trait Sealed {}
}

/// An execution mode: [`Synchronous`] or [`Threading`]. Sealed.
pub trait Mode: sealed::Sealed + Send + Sync + 'static {
    #[doc(hidden)]
    fn executor(options: &crate::options::Options) -> std::io::Result<Executor>;
}

/// Serve one request at a time on the thread that calls `serve_forever` (Python's plain
/// `TCPServer` / `UDPServer`). Simplest and cheapest; a slow client blocks everyone else.
#[derive(Debug, Clone, Copy)]
pub struct Synchronous;

/// Serve requests on a bounded pool of worker threads (Python's `ThreadingMixIn`, with a
/// pool instead of a thread per request). See [`PoolConfig`] for sizing and overload.
///
/// A stream connection holds its worker from accept to close, idle or not. So a classic
/// server serves at most the pool's maximum of long-lived clients at once (256 by
/// default): by default [`max_connections`](crate::Builder::max_connections) follows that
/// maximum, the next client waits in the listen backlog — not accepted, with a warning
/// that says how many wait — until one closes. More long-lived clients than threads you
/// are willing to run is the [`Evented`] mode's job: idle connections wait in the poller
/// and hold no thread.
#[derive(Debug, Clone, Copy)]
pub struct Threading;

/// Serve each request in a child process (Python's `ForkingMixIn`), at most
/// [`max_children`](crate::Builder::max_children) at once (default 40). Unix only. Read
/// the fork-safety notes: in the child, `log` is off by default and SIGINT is ignored.
///
/// Process isolation has a price: a `fork` per request. Prefer [`Threading`] unless a
/// handler must not share memory or crash its siblings; for multi-ctx scaling with
/// isolation, see [`Prefork`](crate::prefork::Prefork).
#[cfg(unix)]
#[derive(Debug, Clone, Copy)]
pub struct Forking;

/// Serve stream connections from a readiness loop (epoll on Linux, kqueue on macOS and the
/// BSDs): idle connections — and connections with half a message, or whose replies wait for
/// the peer to read — wait in the poller and hold no thread; a thread is used only while a
/// complete message is handled. The tutorials' `select`/`epoll` chapter, done the way
/// Apache's event MPM and Tomcat's NIO connector do it. Handlers are
/// [`MessageHandler`](crate::MessageHandler)s (one per connection, called once per message,
/// framing set by [`Builder::framing`](crate::Builder::framing)).
///
/// Threads: the pool's minimum (at least 2) to its maximum
/// ([`Builder::workers`](crate::Builder::workers)); more start only while every thread is
/// busy in a handler, so handlers may block (a database call, a command) without stopping
/// the others while the pool has threads. Stream transports only (TCP, Unix stream);
/// forking does not combine with it (a child per connection is the opposite design): use
/// [`Prefork`](crate::prefork::Prefork) for several processes.
#[derive(Debug, Clone, Copy)]
pub struct Evented;

impl sealed::Sealed for Synchronous {}
impl sealed::Sealed for Evented {}
impl sealed::Sealed for Threading {}
#[cfg(unix)]
impl sealed::Sealed for Forking {}

impl Mode for Synchronous {
    fn executor(_options: &crate::options::Options) -> std::io::Result<Executor> {
        Ok(Executor::Inline)
    }
}

impl Mode for Threading {
    fn executor(options: &crate::options::Options) -> std::io::Result<Executor> {
        Ok(Executor::Pool(Pool::new(options.pool.clone())))
    }
}

#[cfg(unix)]
impl Mode for Forking {
    fn executor(options: &crate::options::Options) -> std::io::Result<Executor> {
        Ok(Executor::Fork(Forker::new(options.max_children)))
    }
}

impl Mode for Evented {
    fn executor(options: &crate::options::Options) -> std::io::Result<Executor> {
        Ok(Executor::Reactor(Reactor::new(options)?))
    }
}

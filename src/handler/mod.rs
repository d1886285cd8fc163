//! Handler traits: Python's `BaseRequestHandler`, `StreamRequestHandler` and
//! `DatagramRequestHandler`, and how servers build one handler per request.
//!
//! # Lifecycle (exactly Python's)
//!
//! For every request the server builds a **new handler** with its factory, then calls
//! `setup`; if `setup` succeeds, `handle`, then `finish` — `finish` runs even when `handle`
//! returns an error or panics, but not when `setup` fails. Errors and panics from any of the
//! three go to the server's `handle_error` hook (default: one `log::error!` line with the
//! peer address); the server keeps serving.

use std::io;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::request::{DatagramRequest, Request, StreamRequest};

/// A handler for connection-oriented requests (TCP, Unix stream): Python's
/// `StreamRequestHandler` subclass.
///
/// Implement [`handle`](Self::handle); `setup` and `finish` default to doing nothing. The
/// request's `rfile` / `wfile` are ready before `setup` runs.
///
/// ```
/// use std::io::{self, BufRead, Write};
/// use socketserver::{StreamRequest, StreamRequestHandler};
///
/// /// Echoes lines back, numbering them.
/// #[derive(Default)]
/// struct Numbered { n: u64 }
///
/// impl StreamRequestHandler for Numbered {
///     fn handle(&mut self, req: &mut StreamRequest) -> io::Result<()> {
///         let mut line = String::new();
///         while req.rfile.read_line(&mut line)? > 0 {
///             self.n += 1;
///             write!(req.wfile, "{} {line}", self.n)?;
///             line.clear();
///         }
///         Ok(())
///     }
/// }
///
/// // One handler per connection, built by its constructor.
/// let server = socketserver::ThreadingTcpServer::bind("127.0.0.1:0", Numbered::default)?;
/// # drop(server);
/// # Ok::<(), std::io::Error>(())
/// ```
pub trait StreamRequestHandler: Send + 'static {
    /// Called before [`handle`](Self::handle). An error here skips `handle` **and** `finish`.
    fn setup(&mut self, request: &mut StreamRequest) -> io::Result<()> {
        let _ = request;
        Ok(())
    }

    /// Serves the request. Returning ends the connection (after `finish`).
    fn handle(&mut self, request: &mut StreamRequest) -> io::Result<()>;

    /// Called after `handle`, even if it failed or panicked.
    fn finish(&mut self, request: &mut StreamRequest) -> io::Result<()> {
        let _ = request;
        Ok(())
    }
}

/// A handler for datagram requests (UDP, Unix datagram): Python's `DatagramRequestHandler`
/// subclass. Read the packet from `request.rfile`, write the reply to `request.wfile`; the
/// reply is sent after `finish`, as one datagram, only if something was written.
pub trait DatagramRequestHandler: Send + 'static {
    /// Called before [`handle`](Self::handle). An error here skips `handle` **and** `finish`.
    fn setup(&mut self, request: &mut DatagramRequest) -> io::Result<()> {
        let _ = request;
        Ok(())
    }

    /// Serves the datagram.
    fn handle(&mut self, request: &mut DatagramRequest) -> io::Result<()>;

    /// Called after `handle`, even if it failed or panicked, before the reply is sent.
    fn finish(&mut self, request: &mut DatagramRequest) -> io::Result<()> {
        let _ = request;
        Ok(())
    }
}

/// Python's `BaseRequestHandler`, generic over the request flavour: what servers call.
///
/// You rarely implement it directly: every [`StreamRequestHandler`] and
/// [`DatagramRequestHandler`] is one. Implement it to write a handler generic over flavours.
pub trait BaseRequestHandler<R: Request>: Send + 'static {
    /// See [`StreamRequestHandler::setup`].
    fn setup(&mut self, request: &mut R) -> io::Result<()>;
    /// See [`StreamRequestHandler::handle`].
    fn handle(&mut self, request: &mut R) -> io::Result<()>;
    /// See [`StreamRequestHandler::finish`].
    fn finish(&mut self, request: &mut R) -> io::Result<()>;
}

macro_rules! base_for {
    ($flavour:ident, $req:ty) => {
        impl<H: $flavour> BaseRequestHandler<$req> for H {
            fn setup(&mut self, request: &mut $req) -> io::Result<()> {
                $flavour::setup(self, request)
            }
            fn handle(&mut self, request: &mut $req) -> io::Result<()> {
                $flavour::handle(self, request)
            }
            fn finish(&mut self, request: &mut $req) -> io::Result<()> {
                $flavour::finish(self, request)
            }
        }
    };
}
base_for!(StreamRequestHandler, StreamRequest);
base_for!(DatagramRequestHandler, DatagramRequest);

/// A stateless handler function (see [`HandlerFactory::stateless`]).
#[doc(hidden)]
pub type HandleFn<R> = dyn Fn(&mut R) -> io::Result<()>;

/// Builds one handler per request: Python's `RequestHandlerClass`.
///
/// Servers accept anything that converts into a factory ([`IntoHandler`]): a constructor
/// such as `MyHandler::default` or `|| MyHandler::new(shared.clone())`, or a plain closure
/// `|req: &mut StreamRequest| -> io::Result<()>` for stateless handlers.
pub trait HandlerFactory<R: Request>: Send + Sync + 'static {
    /// A fresh handler for one request.
    fn new_handler(&self) -> Box<dyn BaseRequestHandler<R>>;

    /// A fresh [`MessageHandler`] for one connection, if this factory makes them (the
    /// evented mode runs only those). Default: `None`.
    fn new_message_handler(&self) -> Option<Box<dyn MessageHandler>> {
        None
    }

    /// Does [`new_message_handler`](Self::new_message_handler) make handlers? Default
    /// `false`.
    fn handles_messages(&self) -> bool {
        false
    }

    /// The handler when it is one stateless function (a plain closure, whose `setup` and
    /// `finish` do nothing): the request pipeline then calls it directly, with no handler
    /// object allocated per request. Default: `None` (a handler from
    /// [`new_handler`](Self::new_handler) per request).
    #[doc(hidden)]
    fn stateless(&self) -> Option<&HandleFn<R>> {
        None
    }
}

/// Conversion into a [`HandlerFactory`]; the `Marker` type parameter only tells the
/// blanket implementations apart and is always inferred.
///
/// Three things convert:
///
/// - a **constructor** of a handler type — `MyHandler::default` (the function, without
///   parentheses: the server calls it once per request), `MyHandler::new`, or
///   `move || MyHandler::new(db.clone())` — where the type implements
///   [`StreamRequestHandler`] (streams) or [`DatagramRequestHandler`] (datagrams);
/// - a constructor of a [`MessageHandler`] (stream transports);
/// - a **closure that handles the request itself**. Write its argument type out, and
///   return `io::Result<()>`: `|req: &mut StreamRequest| -> io::Result<()> { … }`. Without
///   the annotation Rust cannot infer a closure's argument type from this trait, and the
///   closure does not convert.
///
/// A value (`MyHandler::default()`), a closure returning `()`, or a handler for the other
/// flavour is refused at compile time with a message that says what to pass:
///
/// ```compile_fail,E0277
/// use socketserver::{StreamRequest, StreamRequestHandler, ThreadingTcpServer};
/// #[derive(Default)]
/// struct Kv;
/// impl StreamRequestHandler for Kv {
///     fn handle(&mut self, _req: &mut StreamRequest) -> std::io::Result<()> { Ok(()) }
/// }
/// // A value, not a constructor: `Kv::default` is what the server needs.
/// let server = ThreadingTcpServer::bind("127.0.0.1:0", Kv::default());
/// ```
///
/// ```compile_fail,E0277
/// use socketserver::{StreamRequest, ThreadingTcpServer};
/// // Returns `()`, not `io::Result<()>`.
/// let server = ThreadingTcpServer::bind("127.0.0.1:0", |_req: &mut StreamRequest| {});
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a request handler for `{R}`",
    label = "expected a handler constructor, or a closure `|req: &mut {R}| -> io::Result<()>`",
    note = "pass a constructor, not a value: `MyHandler::default` (no parentheses) or `move || MyHandler::new(..)`, for a type implementing `StreamRequestHandler`, `DatagramRequestHandler` or `MessageHandler`",
    note = "a closure needs its argument type written out and must return `io::Result<()>`: `|req: &mut {R}| -> std::io::Result<()> {{ ...; Ok(()) }}`"
)]
pub trait IntoHandler<R: Request, Marker>: Sized {
    /// Makes the factory.
    fn into_factory(self) -> Arc<dyn HandlerFactory<R>>;
}

/// Marker for [`IntoHandler`]: a constructor `Fn() -> H`.
#[derive(Debug)]
pub struct Constructor<H>(PhantomData<fn() -> H>);

/// Marker for [`IntoHandler`]: a closure that handles the request itself.
#[derive(Debug)]
pub struct Closure;

struct CtorFactory<F>(F);

impl<R, F, H> HandlerFactory<R> for CtorFactory<F>
where
    R: Request,
    F: Fn() -> H + Send + Sync + 'static,
    H: BaseRequestHandler<R>,
{
    fn new_handler(&self) -> Box<dyn BaseRequestHandler<R>> {
        Box::new((self.0)())
    }
}

impl<R, F, H> IntoHandler<R, Constructor<H>> for F
where
    R: Request,
    F: Fn() -> H + Send + Sync + 'static,
    H: BaseRequestHandler<R>,
{
    fn into_factory(self) -> Arc<dyn HandlerFactory<R>> {
        Arc::new(CtorFactory(self))
    }
}

struct FnFactory<F>(Arc<F>);
struct FnHandler<F>(Arc<F>);

impl<R, F> BaseRequestHandler<R> for FnHandler<F>
where
    R: Request,
    F: Fn(&mut R) -> io::Result<()> + Send + Sync + 'static,
{
    fn setup(&mut self, _request: &mut R) -> io::Result<()> {
        Ok(())
    }
    fn handle(&mut self, request: &mut R) -> io::Result<()> {
        (self.0)(request)
    }
    fn finish(&mut self, _request: &mut R) -> io::Result<()> {
        Ok(())
    }
}

impl<R, F> HandlerFactory<R> for FnFactory<F>
where
    R: Request,
    F: Fn(&mut R) -> io::Result<()> + Send + Sync + 'static,
{
    fn new_handler(&self) -> Box<dyn BaseRequestHandler<R>> {
        Box::new(FnHandler(self.0.clone()))
    }

    fn stateless(&self) -> Option<&HandleFn<R>> {
        Some(&*self.0)
    }
}

impl<R, F> IntoHandler<R, Closure> for F
where
    R: Request,
    F: Fn(&mut R) -> io::Result<()> + Send + Sync + 'static,
{
    fn into_factory(self) -> Arc<dyn HandlerFactory<R>> {
        Arc::new(FnFactory(Arc::new(self)))
    }
}

mod message;
pub use message::{MessageHandler, Messages};

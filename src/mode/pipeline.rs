//! Python's request pipeline, per request: `verify_request` (on the serving thread, in
//! `server/serve.rs`; here, after the PROXY header, behind a proxy), then here `finish_request` (handler `setup` → `handle` → `finish`) and
//! `shutdown_request`, exactly once, whatever happened.

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Disposition, Refusal};
use crate::addr::ClientAddr;
use crate::context::Context;
use crate::error::HandlerError;
use crate::handler::HandlerFactory;
use crate::request::sealed::RequestKind;

/// Runs one request through its handler, or refuses it. `true` if no error or panic was
/// reported (a forked child's exit status).
pub(crate) fn process<R: RequestKind + crate::request::Request>(
    ctx: &Arc<Context>,
    factory: &dyn HandlerFactory<R>,
    inc: R::Incoming,
    disposition: Disposition,
) -> bool {
    if let Disposition::Refuse(why) = disposition {
        refuse::<R>(ctx, inc, why);
        return false;
    }
    let _in_flight = InFlight::new(ctx);
    let Some(inc) = R::preamble(inc, ctx) else {
        return false;
    };
    // Behind a proxy, `verify_request` waited for the header (see `server/serve.rs`).
    if R::STREAM && ctx.options.proxy_protocol.is_on() && !ctx.verify(R::incoming_addr(&inc)) {
        R::close_incoming(inc);
        return false;
    }
    let addr = R::incoming_addr(&inc).clone();
    match R::open(inc, ctx) {
        Ok(mut req) => {
            let ok = run_handler(ctx, factory, &addr, &mut req);
            R::shutdown_request(req);
            ctx.stats.served.inc();
            ok
        }
        Err(e) => {
            ctx.report_error(&addr, &HandlerError::Io(e));
            false
        }
    }
}

/// [`process`] for a request the caller refills and keeps (a datagram request reused by a
/// receiving thread, `RequestKind::next_reused`): `verify_request` on its sender, then the
/// handler stages and `complete`; the reply is left in `req` for `reply_reused`. `true`
/// if it ran and no error or panic was reported.
pub(crate) fn process_reused<R: RequestKind + crate::request::Request>(
    ctx: &Context,
    factory: &dyn HandlerFactory<R>,
    addr: &ClientAddr,
    req: &mut R,
) -> bool {
    ctx.stats.accepted.inc();
    if !ctx.verify(addr) {
        return false;
    }
    let _in_flight = InFlight::new(ctx);
    let ok = run_handler(ctx, factory, addr, req);
    ctx.stats.served.inc();
    ok
}

/// A request counted in `in_flight` (`Stats::active`) while it lives: decremented on every
/// way out, a panic outside the handler stages included.
struct InFlight<'a>(&'a Context);

impl<'a> InFlight<'a> {
    fn new(ctx: &'a Context) -> InFlight<'a> {
        ctx.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(ctx)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Closes an accepted request without handling it; never silent.
pub(crate) fn refuse<R: RequestKind>(ctx: &Context, inc: R::Incoming, why: Refusal) {
    if why == Refusal::Overloaded {
        ctx.log_rejected(R::incoming_addr(&inc), why.reason());
    } else {
        ctx.stats.dropped.inc();
        ctx.log_dropped(R::incoming_addr(&inc), why.reason());
    }
    R::close_incoming(inc);
}

fn run_handler<R: RequestKind + crate::request::Request>(
    ctx: &Context,
    factory: &dyn HandlerFactory<R>,
    addr: &ClientAddr,
    req: &mut R,
) -> bool {
    if let Some(handle) = factory.stateless() {
        // A closure handler (no setup, no finish): no handler object to allocate.
        let handled = stage(ctx, addr, || handle(req));
        let completed = stage(ctx, addr, || req.complete());
        return handled && completed;
    }
    let mut handler = match catch_unwind(AssertUnwindSafe(|| factory.new_handler())) {
        Ok(h) => h,
        Err(p) => {
            ctx.report_error(addr, &HandlerError::from_panic(p));
            return false;
        }
    };
    // Python: setup(); try: handle() finally: finish(). No finish when setup fails.
    if !stage(ctx, addr, || handler.setup(req)) {
        return false;
    }
    let handled = stage(ctx, addr, || handler.handle(req));
    let finished = stage(ctx, addr, || handler.finish(req));
    let completed = stage(ctx, addr, || req.complete());
    handled && finished && completed
}

/// Runs one hook, reporting an error or a panic. `true` if it succeeded.
fn stage(ctx: &Context, addr: &ClientAddr, f: impl FnOnce() -> io::Result<()>) -> bool {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            ctx.report_error(addr, &HandlerError::Io(e));
            false
        }
        Err(p) => {
            ctx.report_error(addr, &HandlerError::from_panic(p));
            false
        }
    }
}

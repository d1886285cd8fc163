//! Running under a service manager: every example server adopts a socket passed by
//! systemd (or `systemd-socket-activate`, or a predecessor's hand-over) when it is started
//! that way, with no flag; reports `READY=1`/`STOPPING=1` (`Type=notify`); and on `SIGUSR2`
//! hands its socket over to a fresh copy of itself, then drains — a restart that refuses
//! nobody.

use std::ffi::OsString;
use std::io;
use std::process::Command;
use std::time::Duration;

use socketserver::{BindAddr, Builder, IntoHandler, Mode, Server, Transport};

/// The passed socket if there is one (logging that it is used), else `bind(addr)`.
pub fn bind_or_adopt<T, M, H, Marker>(
    name: &str,
    builder: Builder<T, M>,
    addr: &str,
    handler: H,
) -> io::Result<Server<T, M>>
where
    T: Transport,
    M: Mode,
    for<'a> &'a str: BindAddr<T>,
    H: IntoHandler<T::Request, Marker>,
{
    if let Some(passed) = socketserver::systemd::take(0)? {
        log::info!("{name}: using {passed}");
        return builder
            .from_passed(passed, handler)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot adopt the passed socket: {e}")));
    }
    builder
        .bind(addr, handler)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// `sd_notify`, best effort: a service manager that does not listen is no error.
pub fn notify(name: &str, what: &str, result: io::Result<()>) {
    if let Err(e) = result {
        log::debug!("{name}: sd_notify {what}: {e}");
    }
}

/// The `SIGUSR2` trigger of a hand-over, registered (`signal-hook`) before the server
/// says it listens, so that a signal sent after that line never kills it.
pub struct HandOverSignal(signal_hook::iterator::Signals);

impl HandOverSignal {
    pub fn register() -> io::Result<HandOverSignal> {
        signal_hook::iterator::Signals::new([signal_hook::consts::SIGUSR2]).map(HandOverSignal)
    }
}

/// Serves until Ctrl-C/SIGTERM or a completed hand-over (SIGUSR2): a thread waits for
/// SIGUSR2, starts this same program with the same arguments on the same socket, and once
/// it reports ready, stops this server, which then drains.
pub fn serve_with_hand_over<T: Transport, M: Mode>(
    name: &'static str,
    server: &Server<T, M>,
    signal: HandOverSignal,
) -> io::Result<()> {
    let mut signals = signal.0;
    let stop_signals = signals.handle();
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in signals.forever() {
                if hand_over(name, server) {
                    break; // one successor: later signals are for it
                }
            }
        });
        let result = server.serve_forever();
        stop_signals.close();
        result
    })
}

fn hand_over<T: Transport, M: Mode>(name: &str, server: &Server<T, M>) -> bool {
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    // The program as it was started (a path), so that a new build at that path is what
    // starts; `current_exe` names the old, possibly deleted, file.
    let program: OsString = if argv0.to_string_lossy().contains('/') {
        argv0
    } else {
        match std::env::current_exe() {
            Ok(p) => p.into(),
            Err(e) => {
                log::error!("{name}: hand-over: cannot find this program: {e}");
                return false;
            }
        }
    };
    let mut cmd = Command::new(program);
    cmd.args(args);
    log::info!("{name}: SIGUSR2: handing the socket over to a new process");
    match server.hand_over(&cmd, Duration::from_secs(10)) {
        Ok(child) => {
            log::info!(
                "{name}: hand-over: successor pid {} serves; draining",
                child.id()
            );
            server.shutdown();
            true
        }
        Err(e) => {
            log::error!("{name}: {e}; still serving");
            false
        }
    }
}

//! UDP time server: each datagram is a `strftime` format (an empty one means `%F %X`), the
//! reply one datagram with the server's local time in it. It calls C's `strftime`, as
//! Python's `time.strftime` does, so both agree byte for byte.
//!
//! How to run:
//!     cargo run --release --example timeserver -- server [--addr 127.0.0.1:9005] [--mode sync|threading|forking]
//! How to poke it:
//!     printf '%%Y-%%m-%%d %%H:%%M:%%S\n\n%%A, week %%V\n' | cargo run --release --example timeserver -- client
//!     nc -u 127.0.0.1 9005       (type `%c` and Enter: nc sends the newline too, and gets it back)
//! You should see `timeserver: listening on 127.0.0.1:9005` on the server's stderr, and on the
//! client's stdout one line per format, e.g. `2025-06-01 14:03:27`, `2025-06-01 14:03:27`,
//! `Sunday, week 22`. A bad format (longer than 256 bytes, not UTF-8, with a NUL byte, or
//! whose output would be empty or over 1024 bytes) gets a reply starting with `error:`.

mod common;

use std::ffi::CString;
use std::io;
use std::process::ExitCode;

use common::{Cmd, NoOptions, Settings};
use socketserver::{DatagramRequest, Udp};

const ADDR: &str = "127.0.0.1:9005";
/// What an empty request means: ISO date and the locale's time (`2025-06-01 14:03:27`).
const DEFAULT_FORMAT: &str = "%F %X";
/// Longest format accepted, in bytes.
const MAX_FORMAT: usize = 256;
/// Longest reply, in bytes: `%9999Y` must not make the server build a huge datagram.
const MAX_OUTPUT: usize = 1024;

unsafe extern "C" {
    /// POSIX `tzset(3)`: reads `TZ` and the zone files (the `libc` crate lacks it).
    fn tzset();
}

/// One datagram in, one back: the time, or `error: ...` for a format it cannot serve.
fn time_datagram(req: &mut DatagramRequest) -> io::Result<()> {
    let peer = req.client_address().clone();
    let reply = match local_time(req.packet()) {
        Ok(time) => {
            log::info!("timeserver: {peer}: {} bytes", time.len());
            time
        }
        Err(why) => {
            log::warn!("timeserver: {peer}: refused: {why}");
            format!("error: {why}").into_bytes()
        }
    };
    req.reply(&reply)
}

/// The local time now, formatted by `strftime(3)` with `format` (empty: [`DEFAULT_FORMAT`]).
fn local_time(format: &[u8]) -> Result<Vec<u8>, String> {
    if format.len() > MAX_FORMAT {
        return Err(format!(
            "the format is {} bytes long, at most {MAX_FORMAT} are allowed",
            format.len()
        ));
    }
    let format =
        std::str::from_utf8(format).map_err(|e| format!("the format is not valid UTF-8 ({e})"))?;
    let format = if format.is_empty() {
        DEFAULT_FORMAT
    } else {
        format
    };
    let format = CString::new(format).map_err(|_| "the format contains a NUL byte".to_string())?;
    // SAFETY: `libc::tm` is plain data (an all-zero one is valid, its `tm_zone` null);
    // `localtime_r` fills it and returns null only on failure.
    let tm = unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut tm).is_null() {
            return Err("the server cannot read its local time".to_string());
        }
        tm
    };
    // Room for MAX_OUTPUT bytes and strftime's NUL.
    let mut out = vec![0u8; MAX_OUTPUT + 1];
    // SAFETY: `out` is writable for `out.len()` bytes, `format` is NUL-terminated, and `tm`
    // was filled by `localtime_r`; strftime writes at most `out.len()` bytes.
    let n = unsafe { libc::strftime(out.as_mut_ptr().cast(), out.len(), format.as_ptr(), &tm) };
    // strftime returns 0 both for "did not fit" and for an empty result (C has no way to
    // tell them apart; Python's time.strftime would return '' for the latter).
    if n == 0 {
        return Err(format!(
            "the time in this format is empty or longer than {MAX_OUTPUT} bytes"
        ));
    }
    out.truncate(n);
    Ok(out)
}

fn main() -> ExitCode {
    let cli = common::parse::<NoOptions, NoOptions>(
        "timeserver",
        "UDP time server: send a strftime format, get the server's local time in it",
        "Run the time server.",
        "Send each line of stdin as a format (an empty line: the default), print each reply.",
    );
    match cli.cmd {
        Cmd::Server { args, .. } => {
            // Read the time zone once, before any worker thread or child exists.
            // SAFETY: no other thread is running yet that could read the zone data.
            unsafe { tzset() };
            let settings = Settings::new("timeserver", ADDR);
            common::serve::<Udp, _, _>(&settings, &args, time_datagram)
        }
        Cmd::Client { args, .. } => {
            let addr = args.addr.as_deref().unwrap_or(ADDR);
            if args.tls.tls_ca.is_some() {
                common::usage_error("TLS is for stream transports; the time server is UDP");
            }
            common::udp_line_client(addr).map_or_else(
                |e| common::client_failed("timeserver", e),
                |()| ExitCode::SUCCESS,
            )
        }
    }
}

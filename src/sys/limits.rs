//! The descriptor limit: a server holding thousands of idle connections needs more than
//! the soft limit most machines start with (1 024).

use std::io;

/// Raises the soft `RLIMIT_NOFILE` (the most descriptors this process may hold) to the
/// hard limit, as Go's runtime does at start, and returns `(before, after)`.
///
/// Every connection is one descriptor, so an [`Evented`](crate::Evented) server with
/// 10 000 idle clients needs a limit above 10 000; most systems start processes with a
/// soft limit of 1 024 and a hard one far higher. The library never calls this by itself:
/// call it at the start of `main` (the bundled examples do, and log the result). On macOS
/// the new limit is capped at `OPEN_MAX`. `getrlimit(2)` / `setrlimit(2)`.
#[allow(clippy::useless_conversion)] // rlim_t is u64 on Linux, not everywhere
pub fn raise_fd_limit() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a valid rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = lim.rlim_cur;
    #[allow(unused_mut)]
    let mut target = lim.rlim_max;
    #[cfg(target_os = "macos")]
    {
        target = target.min(libc::OPEN_MAX as libc::rlim_t);
    }
    if target <= before {
        return Ok((u64::from(before), u64::from(before)));
    }
    lim.rlim_cur = target;
    // SAFETY: setrlimit reads a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((u64::from(before), u64::from(target)))
}

//! Process-wide facts about fork: is this process a child forked by a forking server, and
//! a way to write a line to stderr that takes no lock (the only safe way to report there).
//!
//! The flag lives here, below every other layer, because code at several layers must
//! behave differently in a forked child: the context reports errors without the `log`
//! facade, a stream request does not register in the parent's connection tracker, and the
//! forking executor sets it.

use std::sync::atomic::{AtomicBool, Ordering};

/// Set in a forked child: reporting avoids the `log` facade and locks.
static IN_CHILD: AtomicBool = AtomicBool::new(false);

/// Is this process a child forked by a forking server?
pub(crate) fn in_forked_child() -> bool {
    IN_CHILD.load(Ordering::Relaxed)
}

/// Marks this process as a forked child (called first thing after `fork(2)` returns 0).
pub(crate) fn mark_forked_child() {
    IN_CHILD.store(true, Ordering::Relaxed);
}

/// Writes one line to stderr with a raw `write(2)`: no lock, safe in a forked child.
pub(crate) fn raw_stderr_line(msg: &str) {
    let line = format!("{msg}\n");
    let mut buf = line.as_bytes();
    while !buf.is_empty() {
        // SAFETY: writes from a valid buffer to fd 2.
        let n = unsafe { libc::write(2, buf.as_ptr().cast(), buf.len()) };
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        if n <= 0 {
            break;
        }
        buf = &buf[n as usize..];
    }
}

//! The OS side of socket activation and hand-over: how many threads this process runs (so
//! the `LISTEN_*` variables are cleared only when that is sound), and starting a successor
//! process with listening descriptors at 3, 4, … and `LISTEN_PID` set to its own pid, as
//! systemd does.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

/// The first descriptor of passed sockets (`SD_LISTEN_FDS_START`).
pub(crate) const LISTEN_FDS_START: RawFd = 3;

/// Threads of this process (Linux: the entries of `/proc/self/task`); `None` where it
/// cannot be told.
pub(crate) fn thread_count() -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        std::fs::read_dir("/proc/self/task")
            .ok()
            .map(|dir| dir.count())
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// Removes `names` from the environment if this process runs one thread, where
/// `std::env::remove_var` is sound (no other thread can read the environment meanwhile:
/// only this one could start one). Returns whether it did.
pub(crate) fn clear_env_if_single_threaded(names: &[&str]) -> bool {
    if thread_count() != Some(1) {
        return false;
    }
    for name in names {
        // SAFETY: this process has one thread (checked just above, and only this thread
        // could start another), so nothing reads or writes the environment concurrently.
        unsafe { std::env::remove_var(name) };
    }
    true
}

/// A program to start with listening descriptors: `program` (a path, not searched on
/// `PATH`), its arguments, extra environment variables, and the descriptors to pass.
#[derive(Debug)]
pub(crate) struct Successor<'a> {
    pub program: &'a OsStr,
    pub args: Vec<OsString>,
    /// Changes to this process's environment (`None`: removed); `LISTEN_FDS`,
    /// `LISTEN_PID`, `LISTEN_FDNAMES` are set as well.
    pub env: Vec<(OsString, Option<OsString>)>,
    /// The child's working directory (`None`: this process's).
    pub cwd: Option<&'a std::path::Path>,
    /// Descriptors of this process, passed as 3, 4, … in this order, with their names.
    pub fds: Vec<(RawFd, String)>,
}

/// Starts `succ` the way systemd starts a socket-activated service: the descriptors at
/// 3, 4, … without `FD_CLOEXEC`, `LISTEN_FDS=n`, `LISTEN_FDNAMES=a:b`, and
/// `LISTEN_PID=<the child's own pid>` — which only the child knows, so the environment is
/// prepared here with a placeholder that the child fills in before `execve(2)`, without
/// allocating. stdin, stdout and stderr are inherited.
pub(crate) fn spawn_with_fds(succ: Successor<'_>) -> io::Result<Child> {
    let nul = |s: &[u8]| {
        CString::new(s).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "hand-over: a NUL byte in the program, an argument or the environment",
            )
        })
    };
    let program = nul(succ.program.as_bytes())?;
    let mut argv = vec![program.clone()];
    for a in &succ.args {
        argv.push(nul(a.as_bytes())?);
    }
    let ours = ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"];
    let mut env: Vec<Vec<u8>> = Vec::new();
    let overridden =
        |k: &OsStr| ours.iter().any(|o| OsStr::new(o) == k) || succ.env.iter().any(|(e, _)| e == k);
    for (k, v) in std::env::vars_os() {
        if !overridden(&k) {
            env.push([k.as_bytes(), b"=", v.as_bytes()].concat());
        }
    }
    for (k, v) in &succ.env {
        if let Some(v) = v {
            env.push([k.as_bytes(), b"=", v.as_bytes()].concat());
        }
    }
    let names: Vec<&str> = succ.fds.iter().map(|(_, n)| n.as_str()).collect();
    env.push(format!("LISTEN_FDS={}", succ.fds.len()).into_bytes());
    env.push(format!("LISTEN_FDNAMES={}", names.join(":")).into_bytes());
    let child_env: Vec<CString> = env.iter().map(|e| nul(e)).collect::<io::Result<_>>()?;
    // The child writes its pid over the placeholder: 20 digits hold any pid_t.
    let mut pid_var = b"LISTEN_PID=00000000000000000000\0".to_vec();
    let pid_at = b"LISTEN_PID=".len();
    let argv_ptrs = Ptrs(
        argv.iter()
            .map(|a| a.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect(),
    );
    let mut env_ptrs = Ptrs(Vec::with_capacity(child_env.len() + 2));
    let sources: Vec<RawFd> = succ.fds.iter().map(|(fd, _)| *fd).collect();
    let mut moved: Vec<RawFd> = vec![-1; sources.len()];
    let count = sources.len() as RawFd;
    let mut cmd = Command::new(succ.program);
    if let Some(dir) = succ.cwd {
        cmd.current_dir(dir);
    }
    // SAFETY: the closure runs in the child between fork(2) and exec; it calls only
    // async-signal-safe functions (getpid, fcntl, dup2, execve) and does not allocate: every
    // buffer it touches (the pid placeholder, the pointer arrays, `moved`) was allocated
    // above, with room for what it writes, and is owned by the closure.
    unsafe {
        cmd.pre_exec(move || {
            let _keep = &argv; // the strings `argv_ptrs` points into
            // Whole `Ptrs` values are captured (not their fields), so the closure is Send.
            let (argv_ptrs, env_ptrs) = (&argv_ptrs, &mut env_ptrs);
            let (argv_ptrs, env_ptrs) = (&argv_ptrs.0, &mut env_ptrs.0);
            let pid = libc::getpid();
            write_decimal(&mut pid_var[pid_at..pid_at + 20], pid as u64);
            // First move every source above the target range, so that no dup2 below
            // overwrites a source still to be moved.
            for (i, &fd) in sources.iter().enumerate() {
                let high = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, LISTEN_FDS_START + count);
                if high < 0 {
                    return Err(io::Error::last_os_error());
                }
                moved[i] = high;
            }
            for (i, &fd) in moved.iter().enumerate() {
                // dup2 leaves FD_CLOEXEC clear on the new descriptor.
                if libc::dup2(fd, LISTEN_FDS_START + i as RawFd) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            env_ptrs.clear();
            env_ptrs.extend(child_env.iter().map(|e| e.as_ptr()));
            env_ptrs.push(pid_var.as_ptr().cast());
            env_ptrs.push(std::ptr::null());
            libc::execve(argv_ptrs[0], argv_ptrs.as_ptr(), env_ptrs.as_ptr());
            Err(io::Error::last_os_error())
        });
    }
    cmd.spawn()
}

/// C string pointers for `execve(2)`, moved into the `pre_exec` closure with the strings
/// they point into (which the closure owns too).
struct Ptrs(Vec<*const libc::c_char>);

// SAFETY: the pointers are only dereferenced (by execve) in the child, while the closure
// that owns both them and their strings is alive; the closure is `Send + Sync` only so that
// `Command` accepts it.
unsafe impl Send for Ptrs {}
// SAFETY: as above; nothing is shared between threads through them.
unsafe impl Sync for Ptrs {}

/// Writes `n` in decimal at the start of `buf`, NUL-terminated (the rest is left as it
/// is). `buf` holds 20 digits; u64 needs at most 20, plus the NUL that follows `buf`.
fn write_decimal(buf: &mut [u8], mut n: u64) {
    let mut digits = [0u8; 20];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 || len == digits.len() {
            break;
        }
    }
    for i in 0..len {
        buf[i] = digits[len - 1 - i];
    }
    if len < buf.len() {
        buf[len] = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_decimal_writes_digits_and_a_terminating_nul() {
        let mut buf = *b"00000000000000000000";
        write_decimal(&mut buf, 4242);
        assert_eq!(&buf[..5], b"4242\0");
        write_decimal(&mut buf, 0);
        assert_eq!(&buf[..2], b"0\0");
    }
}

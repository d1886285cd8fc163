//! The temporary (`.part`) files of [`FileReceiver`](super::FileReceiver) transfers: their
//! names, a registry of the ones being written (so that a process being terminated can
//! remove them from a signal handler), and the removal of those left by writers that died.
//!
//! A transfer removes its temporary file itself when it fails, as long as it gets to run
//! its destructors. Two ways it does not: a signal whose default action ends the process
//! (SIGTERM from a forking server after its grace period, or from systemd to the whole
//! process group), and a process that ends while a thread is still receiving. For the
//! first, a handler calls [`remove_partial_files`]; for both, and for SIGKILL or a crash,
//! [`remove_stale_partial_files`] at the next start removes what the dead writers left.

use std::ffi::{CString, c_char};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::time::SystemTime;

use super::sys;

/// Prefix of every temporary file name: `.socketserver-<pid>-<seq>-<nanos>.part`.
const PREFIX: &str = ".socketserver-";
const SUFFIX: &str = ".part";

/// Most temporary files registered at once; beyond, a transfer still works, but its file
/// is only removed by its own destructor or by [`remove_stale_partial_files`].
const SLOTS: usize = 1024;

/// The paths of the temporary files being written, as `CString::into_raw` pointers (null:
/// a free slot). Whoever swaps a pointer out owns it.
static PARTIAL: [AtomicPtr<c_char>; SLOTS] = [const { AtomicPtr::new(ptr::null_mut()) }; SLOTS];

/// When this process first used the registry: a temporary file named with our own pid but
/// last modified before that was left by an earlier process that had the same pid (in a
/// container, the server is often pid 1 on every start).
static FIRST_USE: OnceLock<SystemTime> = OnceLock::new();

/// How much older than [`FIRST_USE`] an own-pid file must be to count as stale.
const FIRST_USE_MARGIN: std::time::Duration = std::time::Duration::from_secs(2);

pub(crate) fn note_first_use() {
    FIRST_USE.get_or_init(SystemTime::now);
}

/// The name of a temporary file of process `pid`.
pub(crate) fn temp_name(pid: u32, seq: u64, nanos: u32) -> String {
    format!("{PREFIX}{pid}-{seq}-{nanos:09}{SUFFIX}")
}

/// The writer's pid if `name` is a temporary file name of ours.
fn writer_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    let mut parts = rest.split('-');
    let pid = parts.next()?.parse().ok()?;
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match (parts.next(), parts.next(), parts.next()) {
        (Some(seq), Some(nanos), None) if all_digits(seq) && all_digits(nanos) => Some(pid),
        _ => None,
    }
}

/// A registered temporary file: its slot, freed on drop.
#[derive(Debug)]
pub(crate) struct Registered(Option<usize>);

/// Registers `path` as being written, before the file is created (a signal in between
/// then finds no file, rather than a file nobody knows of).
pub(crate) fn register(path: &Path) -> Registered {
    note_first_use();
    let Some(c) = c_path(path) else {
        return Registered(None);
    };
    let raw = c.into_raw();
    for (i, slot) in PARTIAL.iter().enumerate() {
        if slot
            .compare_exchange(ptr::null_mut(), raw, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return Registered(Some(i));
        }
    }
    // SAFETY: `raw` came from `into_raw` above and was never shared.
    drop(unsafe { CString::from_raw(raw) });
    log::debug!(
        "more than {SLOTS} transfers at once: {} not registered",
        path.display()
    );
    Registered(None)
}

impl Drop for Registered {
    fn drop(&mut self) {
        let Some(i) = self.0 else { return };
        let raw = PARTIAL[i].swap(ptr::null_mut(), Ordering::SeqCst);
        if !raw.is_null() {
            // SAFETY: we stored this `into_raw` pointer, and swapping it out made it ours.
            drop(unsafe { CString::from_raw(raw) });
        }
    }
}

#[cfg(unix)]
fn c_path(path: &Path) -> Option<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes()).ok()
}

#[cfg(not(unix))]
fn c_path(path: &Path) -> Option<CString> {
    CString::new(path.to_str()?).ok()
}

/// Removes the temporary files of every [`FileReceiver`](super::FileReceiver) transfer in
/// progress in this process; those transfers then fail. Returns how many were removed.
///
/// **Async-signal-safe** (atomic swaps and `unlink(2)`, no allocation, no lock): meant for
/// a SIGTERM handler, where the default action would end the process without running the
/// destructors that normally remove them, and for the end of `main`, when worker threads
/// may still be receiving. Each path is leaked rather than freed (the process is ending).
///
/// ```no_run
/// extern "C" fn on_sigterm(sig: libc::c_int) {
///     socketserver::framing::remove_partial_files();
///     // SAFETY: async-signal-safe calls; the default action then ends the process.
///     unsafe {
///         libc::signal(sig, libc::SIG_DFL);
///         libc::raise(sig);
///     }
/// }
/// // SAFETY: installs a handler that only makes async-signal-safe calls.
/// unsafe { libc::signal(libc::SIGTERM, on_sigterm as *const () as libc::sighandler_t) };
/// ```
pub fn remove_partial_files() -> usize {
    let mut removed = 0;
    for slot in &PARTIAL {
        let raw = slot.swap(ptr::null_mut(), Ordering::SeqCst);
        if !raw.is_null() {
            // SAFETY: a NUL-terminated path from `CString::into_raw`, now ours and never
            // freed.
            unsafe { sys::unlink_raw(raw) };
            removed += 1;
        }
    }
    removed
}

/// Removes from `dir` the temporary files (`.socketserver-<pid>-….part`) whose writer is
/// gone: a process that no longer exists, or this very process when the file was last
/// modified well (2 s) before this process first used the registry (an earlier process
/// with the same pid). Files of live writers, and every other file, are left alone. Returns the paths
/// removed. Call it at start, before accepting uploads.
///
/// # Notes
/// A pid can be reused: a file whose writer died while an unrelated process got its pid is
/// kept until that process exits. Files of writers in another pid namespace look alive or
/// dead depending on what their pid means here.
///
/// # Errors
/// Reading `dir`; a file that cannot be removed is logged and skipped.
pub fn remove_stale_partial_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    note_first_use();
    let me = std::process::id();
    let first_use = FIRST_USE.get().copied();
    let mut removed = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(writer_pid) else {
            continue;
        };
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let stale = if pid == me {
            // File times come from a coarse clock (a few ms behind `SystemTime::now`):
            // only a file older than first use by a margin is another process's.
            let before = first_use.and_then(|f| f.checked_sub(FIRST_USE_MARGIN));
            matches!((meta.modified(), before), (Ok(m), Some(b)) if m < b)
        } else {
            !sys::process_exists(pid)
        };
        if !stale {
            continue;
        }
        let path = entry.path();
        match fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("could not remove stale {}: {e}", path.display()),
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_recognised_and_nothing_else() {
        assert_eq!(writer_pid(&temp_name(42, 7, 5)), Some(42));
        for other in [
            ".socketserver-42-7.part",
            ".socketserver-42-7-5-1.part",
            ".socketserver-x-7-5.part",
            ".socketserver-42-7-5.partial",
            "socketserver-42-7-5.part",
            ".socketserver-42--5.part",
        ] {
            assert_eq!(writer_pid(other), None, "{other}");
        }
    }

    /// A file named with our own pid is stale only if it predates this process's first
    /// use of the registry (an earlier process with the same pid, as pid 1 in a container).
    #[test]
    fn own_pid_files_from_before_first_use_are_stale() {
        note_first_use();
        let dir = std::env::temp_dir().join(format!("framing-partial-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let me = std::process::id();
        let old = dir.join(temp_name(me, u64::MAX, 1));
        let new = dir.join(temp_name(me, u64::MAX, 2));
        fs::write(&old, b"old").unwrap();
        fs::write(&new, b"new").unwrap();
        let hour_ago = SystemTime::now() - std::time::Duration::from_secs(3600);
        fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(hour_ago)
            .unwrap();
        assert_eq!(
            remove_stale_partial_files(&dir).unwrap(),
            std::slice::from_ref(&old)
        );
        assert!(!old.exists() && new.exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    /// `remove_partial_files` removes a registered file, and the registration is then
    /// dropped without a double free.
    #[test]
    fn registered_files_are_removed_once() {
        let dir = std::env::temp_dir().join(format!("framing-partial-reg-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(temp_name(std::process::id(), u64::MAX - 1, 3));
        let reg = register(&path);
        fs::write(&path, b"partial").unwrap();
        assert!(remove_partial_files() >= 1);
        assert!(!path.exists());
        drop(reg);
        fs::remove_dir_all(&dir).unwrap();
    }
}

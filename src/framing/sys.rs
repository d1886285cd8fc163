//! OS-specific file operations for [`FileReceiver`](super::FileReceiver): thin wrappers,
//! one syscall (or one fallback) each.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::Path;

/// Creates a new file at `path` for writing, failing if anything (a file, a symlink, a
/// dangling symlink) is already there: `open(O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
/// O_CLOEXEC, 0666 & ~umask)`.
pub(crate) fn create_exclusive(path: &Path) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NOFOLLOW);
    }
    opts.open(path)
}

/// Renames `from` to `to`, failing with [`io::ErrorKind::AlreadyExists`] if `to` exists
/// (whatever it is: a file, a directory, a symlink, which is not followed).
///
/// On Linux this is `renameat2(from, to, RENAME_NOREPLACE)`, atomic. Where the file system
/// or kernel does not support that flag (`EINVAL`, `ENOSYS`), and on other platforms, it
/// falls back to `link(from, to)` then `unlink(from)`; `link` never follows or replaces
/// `to`.
///
/// # Notes
/// The fallback is not atomic: if the process dies between `link` and `unlink`, the file
/// exists under both names.
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;

        let from_c = CString::new(from.as_os_str().as_bytes())?;
        let to_c = CString::new(to.as_os_str().as_bytes())?;
        // SAFETY: both paths are valid NUL-terminated strings that outlive the call; the
        // syscall reads them and touches no other memory of ours.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_renameat2,
                libc::AT_FDCWD,
                from_c.as_ptr(),
                libc::AT_FDCWD,
                to_c.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINVAL) | Some(libc::ENOSYS) => {
                log::debug!("renameat2(RENAME_NOREPLACE) unsupported ({err}); using link+unlink");
            }
            _ => return Err(err),
        }
    }
    link_then_unlink(from, to)
}

/// The portable half of [`rename_noreplace`]: `link(from, to)`, which fails with `EEXIST`
/// rather than replace or follow anything at `to`, then `unlink(from)`.
fn link_then_unlink(from: &Path, to: &Path) -> io::Result<()> {
    fs::hard_link(from, to)?;
    if let Err(e) = fs::remove_file(from) {
        log::warn!(
            "could not remove {} after linking it into place: {e}",
            from.display()
        );
    }
    Ok(())
}

/// Flushes the directory entry changes of `dir` to disk (`fsync` on the directory), so a
/// rename survives a crash. A no-op on platforms that cannot open directories.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Whether process `pid` exists (`kill(pid, 0)`: success, or `EPERM` for another user's
/// process). Where that cannot be asked, every process is taken to exist.
pub(crate) fn process_exists(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        if pid <= 0 {
            return false;
        }
        // SAFETY: kill(2) with signal 0 sends nothing; it only checks that `pid` exists.
        if unsafe { libc::kill(pid, 0) } == 0 {
            return true;
        }
        io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

/// `unlink(2)` of a NUL-terminated path, ignoring errors. Async-signal-safe.
///
/// # Safety
/// `path` must point to a NUL-terminated string that stays valid during the call.
pub(crate) unsafe fn unlink_raw(path: *const std::ffi::c_char) {
    #[cfg(unix)]
    // SAFETY: the caller guarantees a valid NUL-terminated path.
    unsafe {
        libc::unlink(path);
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both the renameat2 path and the link+unlink fallback refuse to replace a file.
    #[test]
    fn noreplace_refuses_existing_targets_on_both_paths() {
        let dir = std::env::temp_dir().join(format!("framing-sys-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let (a, b, c) = (dir.join("a"), dir.join("b"), dir.join("c"));
        fs::write(&a, b"a").unwrap();
        fs::write(&b, b"b").unwrap();
        for f in [rename_noreplace, link_then_unlink] {
            let err = f(&a, &b).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
            assert_eq!(fs::read(&b).unwrap(), b"b");
            f(&a, &c).unwrap();
            assert!(!a.exists());
            assert_eq!(fs::read(&c).unwrap(), b"a");
            fs::rename(&c, &a).unwrap();
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}

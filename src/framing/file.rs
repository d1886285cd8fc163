//! File transfer: sending a file as a frame or a JSON-header message, and receiving one
//! into a directory safely ([`FileReceiver`]).

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use md5::{Digest, Md5};

use super::body::BodyReader;
use super::frame::Framing;
use super::json::{BodyLen, FileHeader};
use super::name::{NameError, sanitize_file_name};
use super::{partial, sys};

/// The buffer file transfers copy through, on both sides: 64 KiB (see the benchmark in
/// `benches/framing.rs`: it beats `io::copy`'s 8 KiB in both directions).
pub const TRANSFER_BUF_LEN: usize = 64 * 1024;

/// The default [`FileReceiver::max_size`]: 2^31-1 bytes, the largest body a
/// `struct.pack('i', n)` frame can announce.
pub const DEFAULT_MAX_FILE_SIZE: u64 = i32::MAX as u64;

/// The MD5 of `bytes` as 32 lower-case hex digits, as Python's `hashlib.md5(b).hexdigest()`.
///
/// ```
/// assert_eq!(socketserver::framing::md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
/// ```
pub fn md5_hex(bytes: &[u8]) -> String {
    hex(&Md5::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// Opens `path` and returns it with its length, refusing anything but a regular file.
fn open_regular(path: &Path) -> io::Result<(File, u64)> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    Ok((file, meta.len()))
}

/// Writes `prefix` (a frame header, a JSON header frame) followed by exactly `len` bytes of
/// `file`, through one buffer of `prefix.len()` + up to [`TRANSFER_BUF_LEN`] bytes, so the
/// prefix leaves in the same `write` as the first chunk of the file.
///
/// Why not [`io::copy`]: std never uses `sendfile` from a `File` to a socket (a later change
/// to the file could still reach the peer), so for this pair it is a read/write loop through
/// an 8 KiB stack buffer; `benches/framing.rs` measures the 64 KiB loop faster.
fn send_with_prefix<W: Write + ?Sized>(
    w: &mut W,
    prefix: &[u8],
    mut file: File,
    len: u64,
) -> io::Result<u64> {
    let chunk = usize::try_from(len).map_or(TRANSFER_BUF_LEN, |l| l.min(TRANSFER_BUF_LEN));
    let mut buf = vec![0u8; prefix.len() + chunk];
    buf[..prefix.len()].copy_from_slice(prefix);
    let mut filled = prefix.len();
    let mut sent = 0u64;
    loop {
        if sent < len {
            let room = buf.len() - filled;
            let want = usize::try_from(len - sent).map_or(room, |l| l.min(room));
            match file.read(&mut buf[filled..filled + want]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("file shrank while being sent ({sent} of {len} bytes)"),
                    ));
                }
                Ok(n) => {
                    filled += n;
                    sent += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        w.write_all(&buf[..filled])?;
        filled = 0;
        if sent == len {
            return Ok(sent);
        }
    }
}

impl Framing {
    /// Sends the file at `path` as one frame: a header with its size, then its bytes,
    /// streamed through a 64 KiB buffer (the header leaves with the first chunk). Returns
    /// the file bytes sent. The limit
    /// ([`max_frame_len`](Framing::max_frame_len), 16 MiB by default) applies: raise it on
    /// a copy of the framing for large files.
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidInput`] if `path` is not a regular file or is over the limit
    /// (nothing is written); [`io::ErrorKind::UnexpectedEof`] if it shrinks while being
    /// sent; any error from reading the file or writing `w`.
    pub fn send_file<W: Write + ?Sized>(&self, w: &mut W, path: &Path) -> io::Result<u64> {
        let (file, len) = open_regular(path)?;
        let mut prefix = Vec::with_capacity(8);
        self.write_header(&mut prefix, len)?;
        send_with_prefix(w, &prefix, file, len)
    }

    /// Sends the file at `path` the tutorials' way: a [`FileHeader`]
    /// `{"file_name": file_name, "file_size": N}` as a JSON frame, then the N raw bytes.
    /// Returns the body bytes sent.
    ///
    /// # Errors
    /// As [`send_file`](Self::send_file), except that the size limit does not apply
    /// (the body is not a frame).
    pub fn send_file_message<W: Write + ?Sized>(
        &self,
        w: &mut W,
        path: &Path,
        file_name: &str,
    ) -> io::Result<u64> {
        let (file, len) = open_regular(path)?;
        let header = FileHeader {
            file_name: file_name.to_owned(),
            file_size: len,
        };
        let mut prefix = Vec::with_capacity(64 + file_name.len());
        self.write_json(&mut prefix, &header)?;
        send_with_prefix(w, &prefix, file, len)
    }
}

/// Why [`FileReceiver::receive`] stored nothing. Whatever the reason, no file, partial or
/// temporary, is left behind.
#[derive(Debug)]
pub enum ReceiveError {
    /// The peer's file name was refused by [`sanitize_file_name`].
    InvalidName(NameError),
    /// The announced size is over [`FileReceiver::max_size`]; nothing was read.
    TooLarge {
        /// The size the peer announced.
        size: u64,
        /// The receiver's limit.
        limit: u64,
    },
    /// A file already exists under that name and [`FileReceiver::overwrite`] is off.
    AlreadyExists(PathBuf),
    /// The expected checksum is not 32 hex digits; nothing was read.
    MalformedChecksum(String),
    /// The body's MD5 differs from the expected one; the received bytes were discarded.
    ChecksumMismatch {
        /// The MD5 the peer announced.
        expected: String,
        /// The MD5 of the bytes that arrived.
        actual: String,
    },
    /// An I/O error: the stream ended early ([`io::ErrorKind::UnexpectedEof`]), the disk is
    /// full (`ENOSPC`, `EFBIG`), permissions, ...
    Io(io::Error),
}

impl fmt::Display for ReceiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReceiveError::InvalidName(e) => write!(f, "refused file name: {e}"),
            ReceiveError::TooLarge { size, limit } => {
                write!(f, "file of {size} bytes exceeds the limit of {limit} bytes")
            }
            ReceiveError::AlreadyExists(p) => write!(f, "{} already exists", p.display()),
            ReceiveError::MalformedChecksum(s) => {
                write!(f, "expected MD5 {s:?} is not 32 hex digits")
            }
            ReceiveError::ChecksumMismatch { expected, actual } => {
                write!(f, "MD5 mismatch: expected {expected}, received {actual}")
            }
            ReceiveError::Io(e) => write!(f, "file transfer failed: {e}"),
        }
    }
}

impl std::error::Error for ReceiveError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReceiveError::InvalidName(e) => Some(e),
            ReceiveError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for ReceiveError {
    fn from(e: io::Error) -> Self {
        ReceiveError::Io(e)
    }
}

impl From<NameError> for ReceiveError {
    fn from(e: NameError) -> Self {
        ReceiveError::InvalidName(e)
    }
}

impl From<ReceiveError> for io::Error {
    /// `Io` gives back the inner error; `AlreadyExists` maps to
    /// [`io::ErrorKind::AlreadyExists`]; every other variant to
    /// [`io::ErrorKind::InvalidData`] with the same message.
    fn from(e: ReceiveError) -> Self {
        match e {
            ReceiveError::Io(e) => e,
            ReceiveError::AlreadyExists(_) => io::Error::new(io::ErrorKind::AlreadyExists, e),
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

/// A file [`FileReceiver::receive`] stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Where it is: the receiver's directory joined with the file name.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
}

/// Stores files sent by a peer in one directory, safely.
///
/// | knob | default | builder |
/// |---|---|---|
/// | size limit | [`DEFAULT_MAX_FILE_SIZE`] (2^31-1 bytes) | [`max_size`](Self::max_size) |
/// | replace an existing file | no | [`overwrite`](Self::overwrite) |
/// | `fsync` file and directory | yes | [`fsync`](Self::fsync) |
///
/// [`receive`](Self::receive) performs these steps:
/// 1. check the name with [`sanitize_file_name`], the size against the limit, the expected
///    MD5's form, and (unless overwriting) that no file of that name exists; each failure
///    returns before anything is read or created;
/// 2. create a temporary file `.<name-free unique tag>.part` in the same directory with
///    `O_CREAT | O_EXCL | O_NOFOLLOW`, so it is never an existing file or a symlink;
/// 3. copy exactly the announced number of bytes into it through a 64 KiB buffer, hashing
///    them if an MD5 is expected;
/// 4. `fsync` it, compare the MD5;
/// 5. rename it into place with `renameat2(RENAME_NOREPLACE)` (Linux; elsewhere
///    `link` + `unlink`), which fails rather than replace anything already there (with
///    [`overwrite`](Self::overwrite), a plain `rename`, which replaces a symlink itself,
///    never its target), then `fsync` the directory.
///
/// If any step fails (the stream ends early, the disk is full, the checksum differs, ...),
/// the temporary file is removed: nothing partial is ever visible under the final name, and
/// nothing is left behind. The stream is then out of sync: close the connection.
///
/// ```
/// use socketserver::framing::{FileReceiver, md5_hex};
///
/// let dir = std::env::temp_dir().join(format!("ss-doc-recv-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let rx = FileReceiver::new(&dir).max_size(1024);
///
/// let body = b"hello world";
/// let got = rx.receive("greeting.txt", &body[..], 11, Some(&md5_hex(body)))?;
/// assert_eq!(got.bytes, 11);
/// assert_eq!(std::fs::read(&got.path)?, body);
///
/// // A second file of the same name is refused, and the first is left alone.
/// assert!(rx.receive("greeting.txt", &b"other"[..], 5, None).is_err());
/// std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct FileReceiver {
    dir: PathBuf,
    max_size: u64,
    overwrite: bool,
    fsync: bool,
}

impl FileReceiver {
    /// A receiver storing into `dir`, which must exist, with the defaults above.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        partial::note_first_use();
        FileReceiver {
            dir: dir.into(),
            max_size: DEFAULT_MAX_FILE_SIZE,
            overwrite: false,
            fsync: true,
        }
    }

    /// Sets the largest file accepted, in bytes (default [`DEFAULT_MAX_FILE_SIZE`]).
    #[must_use]
    pub fn max_size(mut self, max: u64) -> Self {
        self.max_size = max;
        self
    }

    /// Whether an existing file of the same name is replaced (default `false`: the
    /// transfer fails with [`ReceiveError::AlreadyExists`]).
    #[must_use]
    pub fn overwrite(mut self, yes: bool) -> Self {
        self.overwrite = yes;
        self
    }

    /// Whether the file and the directory are `fsync`ed before `receive` returns (default
    /// `true`). Turning it off is faster and loses durability across a crash, not safety:
    /// the file still appears only complete.
    #[must_use]
    pub fn fsync(mut self, yes: bool) -> Self {
        self.fsync = yes;
        self
    }

    /// The directory files are stored in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Removes the temporary files that writers which are gone left in the directory:
    /// [`remove_stale_partial_files`](super::remove_stale_partial_files) on
    /// [`dir`](Self::dir). Call it at start, before receiving.
    ///
    /// # Errors
    /// Reading the directory.
    pub fn remove_stale_partial_files(&self) -> io::Result<Vec<PathBuf>> {
        super::remove_stale_partial_files(&self.dir)
    }

    /// Reads exactly `len` bytes from `body` and stores them as `name` in the directory,
    /// checking them against `md5` (32 hex digits, any case) if given. See the type's docs
    /// for the steps.
    ///
    /// # Errors
    /// A [`ReceiveError`]; in every case nothing is left in the directory.
    pub fn receive<R: Read>(
        &self,
        name: &str,
        body: R,
        len: u64,
        md5: Option<&str>,
    ) -> Result<Received, ReceiveError> {
        let name = sanitize_file_name(name)?;
        if len > self.max_size {
            return Err(ReceiveError::TooLarge {
                size: len,
                limit: self.max_size,
            });
        }
        if let Some(m) = md5
            && (m.len() != 32 || !m.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(ReceiveError::MalformedChecksum(m.to_owned()));
        }
        let target = self.dir.join(name);
        if !self.overwrite && fs::symlink_metadata(&target).is_ok() {
            return Err(ReceiveError::AlreadyExists(target));
        }

        let (file, mut temp) = TempFile::create(&self.dir)?;
        let bytes = self.copy_into(file, body, len, md5)?;

        let placed = if self.overwrite {
            fs::rename(&temp.path, &target)
        } else {
            sys::rename_noreplace(&temp.path, &target)
        };
        match placed {
            Ok(()) => temp.disarm(),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(ReceiveError::AlreadyExists(target));
            }
            Err(e) => return Err(e.into()),
        }
        if self.fsync
            && let Err(e) = sys::sync_dir(&self.dir)
        {
            log::warn!(
                "stored {} but could not fsync its directory: {e}",
                target.display()
            );
        }
        log::debug!("stored {} ({bytes} bytes)", target.display());
        Ok(Received {
            path: target,
            bytes,
        })
    }

    /// Copies `len` bytes of `body` into `file`, syncs it, checks the MD5.
    fn copy_into<R: Read>(
        &self,
        mut file: File,
        body: R,
        len: u64,
        md5: Option<&str>,
    ) -> Result<u64, ReceiveError> {
        let mut body = BodyReader::new(body, len);
        let mut hasher = md5.map(|_| Md5::new());
        let buf_len =
            usize::try_from(len).map_or(TRANSFER_BUF_LEN, |l| l.clamp(1, TRANSFER_BUF_LEN));
        let mut buf = vec![0u8; buf_len];
        let mut written = 0u64;
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            if let Some(h) = hasher.as_mut() {
                h.update(&buf[..n]);
            }
            file.write_all(&buf[..n])?;
            written += n as u64;
        }
        if self.fsync {
            file.sync_all()?;
        }
        if let (Some(h), Some(expected)) = (hasher, md5) {
            let actual = hex(&h.finalize());
            if !actual.eq_ignore_ascii_case(expected) {
                return Err(ReceiveError::ChecksumMismatch {
                    expected: expected.to_owned(),
                    actual,
                });
            }
        }
        Ok(written)
    }

    /// Reads a [`FileHeader`] message (`{"file_name", "file_size"}` then the raw bytes) from
    /// `r` and stores the file. `Ok(None)` on a clean end of stream before the header.
    ///
    /// # Errors
    /// As [`Framing::read_json`] (as [`ReceiveError::Io`]) and [`receive`](Self::receive).
    pub fn receive_message<R: Read + ?Sized>(
        &self,
        framing: &Framing,
        r: &mut R,
    ) -> Result<Option<Received>, ReceiveError> {
        let Some(header) = framing.read_json::<R, FileHeader>(r)? else {
            return Ok(None);
        };
        self.receive(&header.file_name, r, header.body_len(), None)
            .map(Some)
    }
}

/// A temporary file that is removed when dropped, unless disarmed; registered meanwhile
/// (see [`remove_partial_files`](super::remove_partial_files)).
struct TempFile {
    path: PathBuf,
    armed: bool,
    _registered: partial::Registered,
}

impl TempFile {
    /// Creates `<dir>/.socketserver-<pid>-<seq>-<nanos>.part` exclusively, trying a few
    /// tags if one is taken.
    fn create(dir: &Path) -> io::Result<(File, TempFile)> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let pid = std::process::id();
        let mut last_err = None;
        for _ in 0..16 {
            let seq = SEQ.fetch_add(1, Ordering::Relaxed);
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let path = dir.join(partial::temp_name(pid, seq, nanos));
            // Registered before it exists: a signal in between finds nothing to remove.
            let registered = partial::register(&path);
            match sys::create_exclusive(&path) {
                Ok(file) => {
                    let temp = TempFile {
                        path,
                        armed: true,
                        _registered: registered,
                    };
                    return Ok((file, temp));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("could not create a temporary file")))
    }

    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        // Removed before it is unregistered; `remove_partial_files` may have removed it
        // already (NotFound).
        if self.armed
            && let Err(e) = fs::remove_file(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            log::warn!(
                "could not remove temporary file {}: {e}",
                self.path.display()
            );
        }
    }
}

//! Upload: the tutorials' message-and-file protocol. Every item is two frames with a 4-byte
//! little-endian `i32` length (`struct.pack('i', n)`): a JSON header, then its payload.
//!
//!     frame({"msg_type": "msg"})                      + frame(UTF-8 text)
//!     frame({"msg_type": "file", "file_name": NAME})  + frame(the file's bytes)
//!     frame(close)          (the bare word; closing the socket ends the session too)
//!
//! The server sends nothing back: it logs each message and stores each file in `--dir`
//! through `FileReceiver` (checked name, streamed to a temporary file, fsync, atomic rename
//! that never replaces an existing file unless `--overwrite`, `--max-size` limit). Bad input
//! closes the connection with one log line and leaves nothing on disk. `--quota` follows
//! what is on disk (a replaced or deleted file stops counting). Temporary files of
//! transfers cut short are removed: by the transfer, by a forked child's SIGTERM handler,
//! at the end of `main`, and at start for writers that died (SIGKILL).
//!
//! How to run:
//!     cargo run --release --example upload -- server --dir uploads [--addr 127.0.0.1:9003] [--mode sync|threading|forking|evented] [--max-size BYTES] [--quota BYTES] [--overwrite] [--proxy-protocol]
//! How to poke it:
//!     printf 'msg|hello\nfile|Cargo.toml\nq\n' | cargo run --release --example upload -- client
//! You should see `upload: listening on 127.0.0.1:9003` on the server's stderr, then
//! `message: "hello"` and `stored "Cargo.toml" (N bytes)`, and `uploads/Cargo.toml`; the
//! client prints what it sent, with progress on stderr for files of 1 MiB or more.

mod common;

use std::fs;
use std::io::{self, BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use common::{Cmd, NoOptions, Settings};
use socketserver::framing::{
    FileReceiver, Framing, MessageFraming, UPLOAD_CLOSE, UploadHeader, from_json_header,
    remove_partial_files,
};
use socketserver::{BlockingStream, Channel, MessageHandler, Tcp};

const ADDR: &str = "127.0.0.1:9003";
/// Headers and messages; a file's body is streamed and limited by `--max-size` instead.
const FRAMING: Framing = Framing::python().max_frame_len(1024 * 1024);
/// A file's frame: anything `struct.pack('i', n)` can announce (2^31-1 bytes).
const FILE_FRAMING: Framing = Framing::python().max_frame_len(i32::MAX as u64);
/// A message's first characters are logged (escaped: no control characters reach the log).
const LOGGED_CHARS: usize = 200;
/// The client shows progress for files at least this large.
const PROGRESS_MIN: u64 = 1024 * 1024;

/// The server's own options.
#[derive(Args)]
struct Storage {
    /// Where files are stored (created if missing).
    #[arg(long, default_value = "uploads")]
    dir: PathBuf,
    /// Largest file accepted, in bytes (default 1 GiB; the protocol's limit is 2^31-1).
    #[arg(long, default_value_t = 1 << 30)]
    max_size: u64,
    /// Most bytes the directory may hold in all (default 10 GiB): a file that would
    /// pass it is refused before a byte is written. Counted from the directory itself at
    /// each file, plus the transfers in progress.
    #[arg(long, default_value_t = 10 << 30)]
    quota: u64,
    /// Replace a file that already exists (default: refuse it and log).
    #[arg(long)]
    overwrite: bool,
}

/// One connection, as a message handler (the same code in every mode): a header frame,
/// then its payload. A message's text is a frame like the header; a file's body is
/// streamed to disk in blocking mode (`Channel::take_over`), never held whole in memory.
/// Any error closes the connection (the stream is out of sync) and is logged with the peer
/// by the server's `handle_error`.
struct Uploader {
    store: Arc<Store>,
    /// What the next frame is.
    next: Next,
    messages: u32,
    files: u32,
}

/// Where files go, shared by every connection.
struct Store {
    rx: FileReceiver,
    quota: Quota,
}

enum Next {
    Header,
    Text,
    /// The file's body follows its header frame: read in `handle_blocking`.
    Body(String),
}

impl MessageHandler for Uploader {
    fn setup(&mut self, _ch: &mut Channel) -> io::Result<()> {
        remove_partial_files_on_termination_in_children(self.store.quota.server_pid);
        Ok(())
    }

    fn handle(&mut self, ch: &mut Channel, frame: &[u8]) -> io::Result<()> {
        let peer = ch.client_address();
        match std::mem::replace(&mut self.next, Next::Header) {
            Next::Header if frame == UPLOAD_CLOSE => ch.close_when_done(),
            Next::Header => {
                match from_json_header::<UploadHeader>(frame)
                    .map_err(|e| context("bad header", e))?
                {
                    UploadHeader::Msg => self.next = Next::Text,
                    UploadHeader::File { file_name } => {
                        self.next = Next::Body(file_name);
                        ch.take_over();
                    }
                }
            }
            Next::Text => {
                let text = String::from_utf8_lossy(frame);
                let shown: String = text.chars().take(LOGGED_CHARS).collect();
                let more = if shown.len() < text.len() { "..." } else { "" };
                log::info!("upload: {peer}: message: {shown:?}{more}");
                self.messages += 1;
            }
            Next::Body(name) => {
                return Err(io::Error::other(format!(
                    "the body of {name:?} was not read"
                )));
            }
        }
        Ok(())
    }

    fn handle_blocking(&mut self, ch: &mut Channel, body: &mut BlockingStream) -> io::Result<()> {
        let Next::Body(file_name) = std::mem::replace(&mut self.next, Next::Header) else {
            return Ok(());
        };
        let what = format!("file {file_name:?} not stored");
        let len = FILE_FRAMING
            .read_header(body)
            .map_err(|e| context(&what, e))?
            .ok_or_else(|| context(&what, io::ErrorKind::UnexpectedEof.into()))?;
        // Held until the file is in place (and counted on disk), or has failed.
        let _reserved = self
            .store
            .quota
            .reserve(len)
            .map_err(|e| context(&what, e))?;
        let got = self
            .store
            .rx
            .receive(&file_name, body, len, None)
            .map_err(|e| context(&what, e.into()))?;
        log::info!(
            "upload: {}: stored {file_name:?} ({} bytes) as {}",
            ch.client_address(),
            got.bytes,
            got.path.display()
        );
        self.files += 1;
        Ok(())
    }

    fn finish(&mut self, ch: &mut Channel) -> io::Result<()> {
        if let Next::Text = self.next {
            let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "stream ended");
            return Err(context("no message text", eof));
        }
        log::info!(
            "upload: {}: done: {} message(s), {} file(s)",
            ch.client_address(),
            self.messages,
            self.files
        );
        Ok(())
    }
}

/// `--quota`: the bytes the upload directory may hold in all: what is on disk, counted
/// again for each file (so a file replaced with `--overwrite`, or removed by hand, stops
/// counting), plus the files this process is receiving, reserved at their announced length
/// until they are in place or have failed.
///
/// In forking mode each child knows only its own reservation: the other children's
/// transfers count by their temporary files' size so far, so concurrent children may
/// overshoot by what they have yet to receive.
struct Quota {
    dir: PathBuf,
    limit: u64,
    reserved: parking_lot::Mutex<u64>,
    server_pid: u32,
}

impl Quota {
    fn new(dir: &Path, limit: u64) -> Quota {
        Quota {
            dir: dir.to_path_buf(),
            limit,
            reserved: parking_lot::Mutex::new(0),
            server_pid: std::process::id(),
        }
    }

    /// Reserves `len` bytes, or refuses if the directory would pass the quota. The lock is
    /// held while the directory is counted, so concurrent uploads never both fit.
    fn reserve(&self, len: u64) -> io::Result<Reservation<'_>> {
        let mut reserved = self.reserved.lock();
        let used = dir_usage(&self.dir)?.saturating_add(*reserved);
        if used.saturating_add(len) > self.limit {
            let msg = format!(
                "quota: {used} of {} bytes used, {len} more refused",
                self.limit
            );
            return Err(io::Error::new(io::ErrorKind::StorageFull, msg));
        }
        *reserved += len;
        Ok(Reservation { quota: self, len })
    }
}

/// Bytes reserved for one transfer; given back on drop.
struct Reservation<'a> {
    quota: &'a Quota,
    len: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut reserved = self.quota.reserved.lock();
        *reserved = reserved.saturating_sub(self.len);
    }
}

/// Bytes in the directory's files, except this process's own temporary files: those are
/// transfers in progress, already counted by their reservation.
fn dir_usage(dir: &Path) -> io::Result<u64> {
    let own = format!(".socketserver-{}-", std::process::id());
    let mut total = 0u64;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(meta) = entry.metadata() else {
            continue; // removed meanwhile
        };
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if meta.is_file() && !(name.starts_with(&own) && name.ends_with(".part")) {
            total = total.saturating_add(meta.len());
        }
    }
    Ok(total)
}

/// A forked child's SIGTERM/SIGHUP (the server's escalation after its grace period, or a
/// signal to the whole process group): remove the temporary files, then die of it.
extern "C" fn on_termination(sig: libc::c_int) {
    remove_partial_files();
    // SAFETY: signal(2) and raise(3) are async-signal-safe; the default action ends the
    // process once this handler returns.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// In a forked child (its pid is not the server's), SIGTERM and SIGHUP remove the file
/// being received before the child dies; the library leaves them at their default action.
fn remove_partial_files_on_termination_in_children(server_pid: u32) {
    if std::process::id() == server_pid {
        return; // the server itself: `main` removes them when the server has stopped
    }
    // SAFETY: installs an async-signal-safe handler (see `on_termination`).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_termination as *const () as usize;
        for sig in [libc::SIGTERM, libc::SIGHUP] {
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

fn context(what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}; closing the connection"))
}

fn main() -> ExitCode {
    let cli = common::parse::<Storage, NoOptions>(
        "upload",
        "Upload server and client: messages and files over one TCP connection",
        "Run the server: log messages, store files in --dir.",
        "Read `msg|TEXT`, `file|PATH` and `q` lines from stdin and send them.",
    );
    let mut settings = Settings::new("upload", ADDR);
    settings.framing = MessageFraming::Frames(FRAMING);
    // A session may carry many large files: an hour per connection (1 GiB at 300 KB/s),
    // and the idle timeout (60 s without a byte) still applies.
    settings.connection_deadline = Some(Duration::from_secs(3600));
    settings.log_in_children = true;
    match cli.cmd {
        Cmd::Server {
            args,
            opts:
                Storage {
                    dir,
                    max_size,
                    quota,
                    overwrite,
                },
        } => {
            let rx = FileReceiver::new(&dir)
                .max_size(max_size)
                .overwrite(overwrite);
            // Writers that died (SIGKILL, a crash) left their temporary files.
            let stale = fs::create_dir_all(&dir).and_then(|()| rx.remove_stale_partial_files());
            match stale {
                Ok(removed) => {
                    for path in removed {
                        log::info!("upload: removed stale temporary file {}", path.display());
                    }
                }
                Err(e) => {
                    log::error!("upload: cannot use {}: {e}", dir.display());
                    return ExitCode::FAILURE;
                }
            }
            let quota = Quota::new(&dir, quota);
            log::info!(
                "upload: storing files in {} (at most {max_size} bytes each, {} in all{})",
                dir.display(),
                quota.limit,
                if overwrite {
                    ", replacing existing files"
                } else {
                    ""
                }
            );
            let store = Arc::new(Store { rx, quota });
            let code = common::serve::<Tcp, _, _>(&settings, &args, move || Uploader {
                store: store.clone(),
                next: Next::Header,
                messages: 0,
                files: 0,
            });
            // Stragglers still receiving after the grace period end with the process, and
            // their destructors do not run: remove their temporary files.
            remove_partial_files();
            code
        }
        Cmd::Client { args, .. } => client(args.addr.as_deref().unwrap_or(ADDR), &args.tls)
            .map_or_else(
                |e| common::client_failed("upload", e),
                |()| ExitCode::SUCCESS,
            ),
    }
}

/// Sends each stdin line's item; `q` or end of input sends `close`. Then waits for the
/// server to close the connection, i.e. to have stored everything.
fn client(addr: &str, tls: &common::tls::TlsClientArgs) -> io::Result<()> {
    let mut conn = common::tls::connect(addr, tls)?;
    let gone = |e: io::Error| io::Error::new(e.kind(), format!("the server went away: {e}"));
    for line in io::stdin().lock().lines() {
        let line = line?;
        match line.split_once('|') {
            _ if line == "q" => break,
            _ if line.is_empty() => {}
            Some(("msg", text)) => {
                FRAMING
                    .write_json(&mut conn, &UploadHeader::Msg)
                    .map_err(gone)?;
                FRAMING
                    .write_frame(&mut conn, text.as_bytes())
                    .map_err(gone)?;
                println!("sent message ({} bytes)", text.len());
            }
            Some(("file", path)) => match checked_file(Path::new(path)) {
                Ok((file_name, len)) => {
                    let header = UploadHeader::File {
                        file_name: file_name.clone(),
                    };
                    FRAMING.write_json(&mut conn, &header).map_err(gone)?;
                    let mut w = Progress::new(&mut conn, file_name.clone(), len);
                    FILE_FRAMING
                        .send_file(&mut w, Path::new(path))
                        .map_err(gone)?;
                    println!("sent file {file_name:?} ({len} bytes)");
                }
                Err(e) => eprintln!("upload client: skipping {path:?}: {e}"),
            },
            _ => eprintln!("upload client: ignoring {line:?}: expected msg|TEXT, file|PATH or q"),
        }
    }
    FRAMING.write_frame(&mut conn, UPLOAD_CLOSE).map_err(gone)?;
    conn.shutdown_write()?;
    // The server sends nothing: end of stream means it has finished with our items.
    conn.set_read_timeout(Some(Duration::from_secs(120)))?;
    conn.read(&mut [0u8; 1]).map_err(gone)?;
    println!("done");
    Ok(())
}

/// The name to send (the path's last component) and the size, checked before the header
/// goes out, so a bad path never leaves the stream half-written.
fn checked_file(path: &Path) -> io::Result<(String, u64)> {
    let meta = fs::metadata(path)?;
    let name = path.file_name().and_then(|n| n.to_str());
    match name {
        _ if !meta.is_file() => Err(io::Error::other("not a regular file")),
        _ if meta.len() > FILE_FRAMING.get_max_frame_len() => {
            Err(io::Error::other("over the protocol's 2^31-1 byte limit"))
        }
        Some(n) => Ok((n.to_owned(), meta.len())),
        None => Err(io::Error::other("no UTF-8 file name")),
    }
}

/// A writer that reports every 10% of a large file on stderr.
struct Progress<W> {
    inner: W,
    name: String,
    total: u64,
    sent: u64,
    next: u64,
}

impl<W: Write> Progress<W> {
    fn new(inner: W, name: String, total: u64) -> Self {
        let next = if total >= PROGRESS_MIN {
            total / 10
        } else {
            u64::MAX
        };
        Progress {
            inner,
            name,
            total,
            sent: 0,
            next,
        }
    }
}

impl<W: Write> Write for Progress<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        // The frame header (4 bytes) is counted too: negligible.
        self.sent = (self.sent + n as u64).min(self.total);
        if self.sent >= self.next {
            let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
            eprintln!(
                "{}: {}% ({:.1} of {:.1} MiB)",
                self.name,
                self.sent * 100 / self.total,
                mib(self.sent),
                mib(self.total)
            );
            let step = self.total / 10;
            self.next = if self.sent == self.total {
                u64::MAX
            } else {
                ((self.sent / step + 1) * step).min(self.total)
            };
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

//! Remote command: the tutorials' remote shell, with the JSON-header reply that fixes the
//! naive version's sticky-packet bug. The client sends a command line as raw bytes in one
//! `send` (at most 1024, no framing); the server runs it with `sh -c` and replies
//!
//!     struct.pack('i', len(header)) + header + body
//!     header = {"filename": COMMAND, "total_size": N, "md5": MD5 of body}
//!     body   = the command's stdout, then its stderr (N bytes)
//!
//! One connection runs commands in a row until the client closes. It runs anything for
//! anyone who connects, so: loopback only unless `--allow-remote`, a `--timeout` per command
//! (the command's whole process group is killed), an output cap (`--max-output`; the rest is
//! cut, the command killed), both said in the output, and a log line per command. A
//! command's process group is killed whenever it ends: when `sh` exits (so a job it left in
//! the background, `sleep 95 >/dev/null 2>&1 &`, goes too), on its timeout, when the server
//! closes its connection, and when the server goes (the end of `main`; SIGTERM in a forked
//! child).
//!
//! How to run:
//!     cargo run --release --example remote_cmd -- server [--addr 127.0.0.1:9004] [--mode sync|threading|forking|evented] [--timeout 10] [--max-output BYTES] [--allow-remote] [--proxy-protocol]
//! How to poke it:
//!     printf 'echo hi\nls -l /\nsleep 1; date >&2\n' | cargo run --release --example remote_cmd -- client
//! You should see `remote_cmd: listening on 127.0.0.1:9004` on the server's stderr and one
//! line per command (peer, command, exit status, bytes); the client prints each output.

mod common;

use std::ffi::OsStr;
use std::io::{self, BufRead, Read, Write};
use std::net::ToSocketAddrs;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Args;
use common::{Cmd, NoOptions, Settings};
use md5::{Digest, Md5};
use socketserver::framing::{Framing, MessageFraming, TransferHeader};
use socketserver::{Channel, MessageHandler, Tcp};

const ADDR: &str = "127.0.0.1:9004";
/// The tutorials' `conn.recv(1024)`: one command per read.
const MAX_COMMAND: usize = 1024;
/// The largest `--timeout`: a day.
const MAX_TIMEOUT_SECS: f64 = 86_400.0;
/// The largest `--max-output`: 1 GiB (the output is held in memory before it is sent).
const MAX_OUTPUT_LIMIT: u64 = 1 << 30;

/// The server's own options.
#[derive(Args)]
struct ServerOptions {
    /// Seconds a command may run before its process group is killed (more than 0, at most
    /// 86400).
    #[arg(long, default_value = "10", value_parser = parse_timeout)]
    timeout: Duration,
    /// Most bytes of output (stdout + stderr) returned; beyond, cut and the command killed
    /// (at most 1 GiB).
    #[arg(long, default_value_t = 16 << 20, value_parser = clap::value_parser!(u64).range(0..=MAX_OUTPUT_LIMIT))]
    max_output: u64,
    /// Accept a non-loopback --addr: anyone who can connect runs commands as you.
    #[arg(long)]
    allow_remote: bool,
}

/// `--timeout`: a finite number of seconds, more than 0 and at most [`MAX_TIMEOUT_SECS`].
fn parse_timeout(arg: &str) -> Result<Duration, String> {
    let secs: f64 = arg
        .trim()
        .parse()
        .map_err(|_| format!("{arg:?} is not a number of seconds"))?;
    if !(secs > 0.0 && secs <= MAX_TIMEOUT_SECS) {
        return Err(format!(
            "{arg} is out of range: more than 0 and at most {MAX_TIMEOUT_SECS} seconds"
        ));
    }
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{arg}: {e}"))
}

#[derive(Clone, Copy)]
struct Limits {
    timeout: Duration,
    max_output: usize,
}

/// The process groups of the commands running now (0: a free slot), so that they can be
/// killed when the server goes. Atomics only: a signal handler reads them.
static RUNNING: [AtomicI32; RUNNING_SLOTS] = [const { AtomicI32::new(0) }; RUNNING_SLOTS];
/// One command per connection at a time, and at most 1024 connections at once.
const RUNNING_SLOTS: usize = 1024;
/// Set once the server is going: no command starts any more.
static CLOSING: AtomicBool = AtomicBool::new(false);

/// A slot of [`RUNNING`] holding one command's process group; freed on drop.
struct Running(usize);

impl Running {
    /// Claims a free slot, before the command starts.
    fn claim() -> io::Result<Running> {
        if CLOSING.load(Ordering::SeqCst) {
            return Err(io::Error::other("the server is shutting down"));
        }
        (0..RUNNING_SLOTS)
            .find(|&i| {
                RUNNING[i]
                    .compare_exchange(0, -1, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            })
            .map(Running)
            .ok_or_else(|| io::Error::other("too many commands running"))
    }

    /// Records the command's group. If the server started going meanwhile, it has missed
    /// the group: kill it here.
    fn set(&self, pgid: libc::pid_t) {
        RUNNING[self.0].store(pgid, Ordering::SeqCst);
        if CLOSING.load(Ordering::SeqCst) {
            kill_group(pgid);
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING[self.0].store(0, Ordering::SeqCst);
    }
}

/// Kills the process group of every running command. Async-signal-safe (atomics and
/// `killpg`): also called from the SIGTERM handler of a forked child.
fn kill_running_commands() {
    CLOSING.store(true, Ordering::SeqCst);
    for slot in &RUNNING {
        let pgid = slot.load(Ordering::SeqCst);
        if pgid > 0 {
            kill_group(pgid);
        }
    }
}

/// A forked child's SIGTERM/SIGHUP (the server's escalation after its grace period, or a
/// signal to the whole process group): kill the commands, then die of the signal.
extern "C" fn on_termination(sig: libc::c_int) {
    kill_running_commands();
    // SAFETY: signal(2) and raise(3) are async-signal-safe; the default action ends the
    // process once this handler returns.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// In a forked child (its pid is not the server's), SIGTERM and SIGHUP kill the running
/// commands before the child dies; the library leaves them at their default action there.
fn kill_commands_on_termination_in_children(server_pid: u32) {
    if std::process::id() == server_pid {
        return; // the server itself: `main` kills what runs when the server has stopped
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

/// One connection, as a message handler (the same code in every mode): each read of the
/// socket is a command (the tutorials' `conn.recv(1024)`), run while the handler holds its
/// thread — in evented mode the other connections keep being served meanwhile — and
/// answered with the JSON header and the output.
struct Commands {
    limits: Limits,
    server_pid: u32,
}

impl MessageHandler for Commands {
    fn setup(&mut self, ch: &mut Channel) -> io::Result<()> {
        // Behind a proxy, a header without the client's address (a health check, a client
        // the proxy could not describe) leaves the proxy's own address — loopback — in its
        // place: the loopback rule cannot judge it, so it is refused.
        if ch.proxy_header().is_some_and(|h| h.source().is_none()) {
            log::warn!(
                "remote_cmd: {}: refused: the PROXY header names no client",
                ch.client_address()
            );
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the PROXY header names no client",
            ));
        }
        kill_commands_on_termination_in_children(self.server_pid);
        Ok(())
    }

    fn handle(&mut self, ch: &mut Channel, data: &[u8]) -> io::Result<()> {
        for piece in data.chunks(MAX_COMMAND) {
            let command = piece.trim_ascii();
            let started = Instant::now();
            let (body, status) = run(command, self.limits, ch.as_raw_fd())?;
            let name = String::from_utf8_lossy(command);
            log::info!(
                "remote_cmd: {}: {name:?}: {status}, {} bytes in {:.2?}",
                ch.client_address(),
                body.len(),
                started.elapsed()
            );
            Framing::python().write_message(
                &mut *ch,
                &TransferHeader::for_bytes(name, &body),
                &body[..],
            )?;
        }
        Ok(())
    }
}

/// Runs `sh -c COMMAND` in its own process group; returns stdout + stderr (+ a note if it
/// was cut or timed out) and a description of how it ended. However it ends, its process
/// group is killed before `sh` is reaped (so the group id cannot have been reused).
/// `conn` is the connection: when the server shuts it (grace period over, deadline), the
/// command is killed rather than left running for nobody.
fn run(command: &[u8], limits: Limits, conn: RawFd) -> io::Result<(Vec<u8>, String)> {
    let slot = Running::claim()?;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(OsStr::from_bytes(command))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()?;
    let pgid = child.id() as libc::pid_t;
    slot.set(pgid);
    let (tx, rx) = mpsc::channel();
    capture(child.stdout.take(), 0, limits.max_output, pgid, tx.clone());
    capture(child.stderr.take(), 1, limits.max_output, pgid, tx);

    // Both pipes reach end of file when every process of the command that holds them has
    // exited. A timeout too large to add to `now` means no deadline.
    let deadline = Instant::now().checked_add(limits.timeout);
    let expired = || deadline.is_some_and(|d| Instant::now() >= d);
    let mut outputs: [Vec<u8>; 2] = Default::default();
    let (mut timed_out, mut abandoned) = (false, false);
    let mut open = 2;
    while open > 0 {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok((i, out)) => {
                outputs[i] = out;
                open -= 1;
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if !timed_out && !abandoned && (expired() || connection_shut(conn)) {
            timed_out = expired();
            abandoned = !timed_out;
            kill_group(pgid);
            // A process that left the group may still hold a pipe: give up on it.
            let give_up = Instant::now() + Duration::from_secs(1);
            while open > 0 {
                let left = give_up.saturating_duration_since(Instant::now());
                let Ok((i, out)) = rx.recv_timeout(left) else {
                    break;
                };
                outputs[i] = out;
                open -= 1;
            }
            break;
        }
    }
    // The pipes may also close early (`exec >&-`): wait for the shell within the deadline.
    loop {
        if has_exited(&child)? {
            break;
        }
        if expired() || connection_shut(conn) {
            timed_out |= expired();
            abandoned = !timed_out;
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // Whatever is left of the group (jobs sent to the background, or the command itself
    // after a timeout) goes now, while the unreaped shell still holds the group id.
    kill_group(pgid);
    drop(slot);
    let status = child.wait()?;
    let [mut body, stderr] = outputs;
    body.extend_from_slice(&stderr);
    let cut = body.len() > limits.max_output;
    body.truncate(limits.max_output);
    let mut how = status.to_string();
    if timed_out {
        how = format!("timed out after {:?}, process group killed", limits.timeout);
        body.extend_from_slice(format!("\n[remote_cmd: {how}]\n").as_bytes());
    } else if abandoned {
        how = "connection closed by the server, process group killed".to_string();
    } else if cut {
        how = format!("output over {} bytes, cut ({how})", limits.max_output);
        body.extend_from_slice(format!("\n[remote_cmd: {how}]\n").as_bytes());
    }
    Ok((body, how))
}

/// Whether the shell has exited, without reaping it (`waitid(WNOWAIT)`): until it is
/// reaped its pid, and so the command's process group id, cannot be reused.
fn has_exited(child: &std::process::Child) -> io::Result<bool> {
    // SAFETY: a zeroed siginfo_t is a valid out-parameter for waitid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid on our own unreaped child, with a valid siginfo_t pointer.
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            child.id() as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(e)
        };
    }
    // SAFETY: waitid filled `info` (si_pid stays 0 while the child runs, with WNOHANG).
    Ok(unsafe { info.si_pid() } != 0)
}

/// Whether the server has shut the connection down (`POLLHUP`: both directions closed,
/// which a forced close or an expired connection deadline does). A client that only
/// half-closes after sending its command still gets its output.
fn connection_shut(conn: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd: conn,
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no waiting.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & (libc::POLLHUP | libc::POLLNVAL) != 0
}

/// Reads pipe `i` on a thread, at most `max` + 1 bytes (one over the cap tells "cut" from
/// "exactly the cap"); over the cap, kills the command, which would otherwise block on the
/// full pipe until the timeout. Sends `(i, bytes)` when done.
fn capture<R: Read + Send + 'static>(
    pipe: Option<R>,
    i: usize,
    max: usize,
    pgid: libc::pid_t,
    tx: mpsc::Sender<(usize, Vec<u8>)>,
) {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        if let Some(p) = pipe {
            let _ = p.take((max as u64).saturating_add(1)).read_to_end(&mut out);
        }
        if out.len() > max {
            kill_group(pgid);
        }
        let _ = tx.send((i, out));
    });
}

fn kill_group(pgid: libc::pid_t) {
    // SAFETY: killpg(2) on the group of a child we have not reaped yet, so the id is ours.
    unsafe { libc::killpg(pgid, libc::SIGKILL) };
}

/// Every address `addr` names must be loopback, unless remote access was asked for.
fn check_addr(addr: &str, allow_remote: bool) -> Result<(), String> {
    let addrs: Vec<_> = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .collect();
    if addrs.iter().all(|a| a.ip().is_loopback()) {
        return Ok(());
    }
    if !allow_remote {
        return Err(format!(
            "refusing to listen on {addr}: not a loopback address, and anyone who can connect \
             runs commands as this user (pass --allow-remote if you really mean it)"
        ));
    }
    log::warn!(
        "remote_cmd: *** --allow-remote: ANYONE who can reach {addr} runs commands as this user ***"
    );
    log::warn!("remote_cmd: *** there is no authentication and no encryption: use a firewall ***");
    Ok(())
}

fn main() -> ExitCode {
    let cli = common::parse::<ServerOptions, NoOptions>(
        "remote_cmd",
        "Remote command server and client (runs shell commands: loopback only by default)",
        "Run the server.",
        "Send each line of stdin as a command, print each output.",
    );
    let mut settings = Settings::new("remote_cmd", ADDR);
    // An interactive session: 5 min idle allowed, an hour in all.
    settings.read_timeout = Some(Duration::from_secs(300));
    settings.connection_deadline = Some(Duration::from_secs(3600));
    settings.log_in_children = true;
    // Each read is a command.
    settings.framing = MessageFraming::Raw;
    match cli.cmd {
        Cmd::Server {
            args,
            opts:
                ServerOptions {
                    timeout,
                    max_output,
                    allow_remote,
                },
        } => {
            if let Err(e) = check_addr(args.addr.as_deref().unwrap_or(ADDR), allow_remote) {
                log::error!("remote_cmd: {e}");
                return ExitCode::FAILURE;
            }
            // The same rule for whoever connects: behind a proxy on this machine every
            // connection comes from 127.0.0.1, so the client the PROXY header names is
            // judged (`--proxy-protocol`), and a remote one refused.
            if !allow_remote {
                settings.allow = Some(|peer| peer.as_inet().is_none_or(|a| a.ip().is_loopback()));
            }
            let limits = Limits {
                timeout,
                // At most MAX_OUTPUT_LIMIT (clap checked), which fits a usize here.
                max_output: usize::try_from(max_output).unwrap_or(usize::MAX),
            };
            let server_pid = std::process::id();
            let code = common::serve::<Tcp, _, _>(&settings, &args, move || Commands {
                limits,
                server_pid,
            });
            // The server is gone (after its grace period, stragglers may still run a
            // command): no command outlives it.
            kill_running_commands();
            code
        }
        Cmd::Client { args, .. } => client(args.addr.as_deref().unwrap_or(ADDR), &args.tls)
            .map_or_else(
                |e| common::client_failed("remote_cmd", e),
                |()| ExitCode::SUCCESS,
            ),
    }
}

/// One command per stdin line; each reply streamed to stdout and checked against its MD5.
fn client(addr: &str, tls: &common::tls::TlsClientArgs) -> io::Result<()> {
    let mut conn = common::tls::connect(addr, tls)?;
    // The server's own --timeout bounds each command.
    conn.set_read_timeout(Some(Duration::from_secs(600)))?;
    let gone = |e: io::Error| io::Error::new(e.kind(), format!("the server went away: {e}"));
    let mut out = io::stdout().lock();
    for line in io::stdin().lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        if line.len() > MAX_COMMAND {
            eprintln!("remote_cmd client: skipping a command over {MAX_COMMAND} bytes");
            continue;
        }
        conn.write_all(line.as_bytes()).map_err(gone)?;
        let (header, mut body) = Framing::python()
            .read_message::<_, TransferHeader>(&mut conn)
            .map_err(gone)?
            .ok_or_else(|| gone(io::ErrorKind::UnexpectedEof.into()))?;
        let mut hasher = Md5::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = body.read(&mut chunk).map_err(gone)?;
            if n == 0 {
                break;
            }
            hasher.update(&chunk[..n]);
            out.write_all(&chunk[..n])?;
        }
        out.flush()?;
        let md5: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if md5 != header.md5 {
            return Err(io::Error::other(format!(
                "MD5 mismatch for {:?}: header says {}, received {md5}",
                header.filename, header.md5
            )));
        }
    }
    Ok(())
}

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
//! cut, the command killed), both said in the output, and a log line per command.
//!
//! How to run:
//!     cargo run --release --example remote_cmd -- server [--addr 127.0.0.1:9004] [--mode sync|threading|forking] [--timeout 10] [--max-output BYTES] [--allow-remote]
//! How to poke it:
//!     printf 'echo hi\nls -l /\nsleep 1; date >&2\n' | cargo run --release --example remote_cmd -- client
//! You should see `remote_cmd: listening on 127.0.0.1:9004` on the server's stderr and one
//! line per command (peer, command, exit status, bytes); the client prints each output.

mod common;

use std::ffi::OsStr;
use std::io::{self, BufRead, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Args;
use common::{Cmd, NoOptions, Settings};
use md5::{Digest, Md5};
use socketserver::framing::{Framing, TransferHeader};
use socketserver::{StreamRequest, Tcp};

const ADDR: &str = "127.0.0.1:9004";
/// The tutorials' `conn.recv(1024)`: one command per read.
const MAX_COMMAND: usize = 1024;

/// The server's own options.
#[derive(Args)]
struct ServerOptions {
    /// Seconds a command may run before its process group is killed.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Most bytes of output (stdout + stderr) returned; beyond, cut and the command killed.
    #[arg(long, default_value_t = 16 << 20)]
    max_output: usize,
    /// Accept a non-loopback --addr: anyone who can connect runs commands as you.
    #[arg(long)]
    allow_remote: bool,
}

#[derive(Clone, Copy)]
struct Limits {
    timeout: Duration,
    max_output: usize,
}

/// One connection: read a command, run it, reply; until the client closes.
fn serve_commands(req: &mut StreamRequest, limits: Limits) -> io::Result<()> {
    let peer = req.client_address().clone();
    let mut buf = [0u8; MAX_COMMAND];
    loop {
        let n = req.rfile.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        let command = buf[..n].trim_ascii();
        let started = Instant::now();
        let (body, status) = run(command, limits)?;
        let name = String::from_utf8_lossy(command);
        log::info!(
            "remote_cmd: {peer}: {name:?}: {status}, {} bytes in {:.2?}",
            body.len(),
            started.elapsed()
        );
        Framing::python().write_message(
            &mut req.wfile,
            &TransferHeader::for_bytes(name, &body),
            &body[..],
        )?;
    }
}

/// Runs `sh -c COMMAND` in its own process group; returns stdout + stderr (+ a note if it
/// was cut or timed out) and a description of how it ended.
fn run(command: &[u8], limits: Limits) -> io::Result<(Vec<u8>, String)> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(OsStr::from_bytes(command))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()?;
    let pgid = child.id() as libc::pid_t;
    let (tx, rx) = mpsc::channel();
    capture(child.stdout.take(), 0, limits.max_output, pgid, tx.clone());
    capture(child.stderr.take(), 1, limits.max_output, pgid, tx);

    // Both pipes reach end of file when every process of the command has exited.
    let deadline = Instant::now() + limits.timeout;
    let mut outputs: [Vec<u8>; 2] = Default::default();
    let mut timed_out = false;
    for _ in 0..2 {
        let wait = deadline.saturating_duration_since(Instant::now());
        let got = rx.recv_timeout(wait).or_else(|_| {
            timed_out = true;
            kill_group(pgid);
            // A process that left the group may still hold a pipe: give up on it.
            rx.recv_timeout(Duration::from_secs(1))
        });
        if let Ok((i, out)) = got {
            outputs[i] = out;
        }
    }
    // The pipes may also close early (`exec >&-`): wait for the shell within the deadline.
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            kill_group(pgid);
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let [mut body, stderr] = outputs;
    body.extend_from_slice(&stderr);
    let cut = body.len() > limits.max_output;
    body.truncate(limits.max_output);
    let mut how = status.to_string();
    if timed_out {
        how = format!("timed out after {:?}, process group killed", limits.timeout);
        body.extend_from_slice(format!("\n[remote_cmd: {how}]\n").as_bytes());
    } else if cut {
        how = format!("output over {} bytes, cut ({how})", limits.max_output);
        body.extend_from_slice(format!("\n[remote_cmd: {how}]\n").as_bytes());
    }
    Ok((body, how))
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
            let _ = p.take(max as u64 + 1).read_to_end(&mut out);
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
            let Ok(timeout) = Duration::try_from_secs_f64(timeout) else {
                log::error!("remote_cmd: --timeout {timeout}: not a number of seconds");
                return ExitCode::FAILURE;
            };
            if let Err(e) = check_addr(args.addr.as_deref().unwrap_or(ADDR), allow_remote) {
                log::error!("remote_cmd: {e}");
                return ExitCode::FAILURE;
            }
            let limits = Limits {
                timeout,
                max_output,
            };
            common::serve::<Tcp, _, _>(&settings, &args, move |req: &mut StreamRequest| {
                serve_commands(req, limits)
            })
        }
        Cmd::Client { args, .. } => client(args.addr.as_deref().unwrap_or(ADDR)).map_or_else(
            |e| common::client_failed("remote_cmd", e),
            |()| ExitCode::SUCCESS,
        ),
    }
}

/// One command per stdin line; each reply streamed to stdout and checked against its MD5.
fn client(addr: &str) -> io::Result<()> {
    let mut conn = TcpStream::connect(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot connect to {addr}: {e}")))?;
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

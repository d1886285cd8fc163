//! Shared helpers for the integration tests: loopback clients, bounded waits, servers on
//! background threads that are always stopped.
#![allow(dead_code)]

use std::io::{self, Read, Write};

pub mod tls;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socketserver::{Mode, Server, Transport};

/// Generous timeout for anything a test waits on: tests assert behaviour, not speed.
pub const LONG: Duration = Duration::from_secs(20);

/// A server serving on a background thread; stops and closes it on drop.
pub struct Running<T: Transport, M: Mode> {
    pub server: Arc<Server<T, M>>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl<T: Transport, M: Mode> Running<T, M> {
    pub fn start(server: Server<T, M>) -> Self {
        Self::start_arc(Arc::new(server))
    }

    /// [`start`](Self::start) for a server the test keeps a reference to.
    pub fn start_arc(server: Arc<Server<T, M>>) -> Self {
        let s = server.clone();
        let thread = thread::spawn(move || s.serve_forever());
        Running {
            server,
            thread: Some(thread),
        }
    }

    /// Stops the loop and returns what `serve_forever` returned.
    #[track_caller]
    pub fn stop(mut self) -> io::Result<()> {
        self.server.shutdown();
        self.thread
            .take()
            .unwrap()
            .join()
            .expect("serve_forever panicked")
    }
}

impl<T: Transport, M: Mode> Drop for Running<T, M> {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.server.shutdown();
            let _ = t.join();
        }
    }
}

/// Connects to `addr` with read/write timeouts set.
#[track_caller]
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, LONG).expect("connect");
    s.set_read_timeout(Some(LONG)).unwrap();
    s.set_write_timeout(Some(LONG)).unwrap();
    s
}

/// Sends `msg`, half-closes, reads the reply to EOF. A server that closes early (refusal,
/// failing handler) may reset the connection: what arrived before that is returned.
#[track_caller]
pub fn round_trip(addr: SocketAddr, msg: &[u8]) -> Vec<u8> {
    let mut s = connect(addr);
    let _ = s.write_all(msg);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("round_trip read: {e}"),
        }
    }
}

/// A UDP client socket on loopback with a timeout.
#[track_caller]
pub fn udp_client() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(LONG)).unwrap();
    s
}

/// Polls `cond` every millisecond until it holds or `LONG` passes. For conditions that have
/// no signal (counters updated by another thread); panics with `what` on time-out.
#[track_caller]
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + LONG;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

/// Open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Compile-time check that `T` is `Send + Sync`.
pub fn assert_send_sync<T: Send + Sync>() {}

/// Handler: echoes one line (CPython's suite handler).
pub fn echo_line(req: &mut socketserver::StreamRequest) -> io::Result<()> {
    use std::io::BufRead;
    let mut line = Vec::new();
    req.rfile.read_until(b'\n', &mut line)?;
    req.wfile.write_all(&line)
}

/// Handler: echoes lines until the client closes.
pub fn echo_lines(req: &mut socketserver::StreamRequest) -> io::Result<()> {
    use std::io::BufRead;
    let mut line = Vec::new();
    while req.rfile.read_until(b'\n', &mut line)? > 0 {
        req.wfile.write_all(&line)?;
        line.clear();
    }
    Ok(())
}

/// Handler: echoes the datagram.
pub fn echo_datagram(req: &mut socketserver::DatagramRequest) -> io::Result<()> {
    let mut data = Vec::new();
    req.rfile.read_to_end(&mut data)?;
    req.wfile.write_all(&data)
}

/// Logs to stderr (child processes whose log lines the parent test reads).
pub fn init_stderr_log() {
    simplelog::TermLogger::init(
        log::LevelFilter::Info,
        simplelog::Config::default(),
        simplelog::TerminalMode::Stderr,
        simplelog::ColorChoice::Never,
    )
    .unwrap();
}

/// Environment variable that turns a test function into a child-process body.
pub const CHILD_ENV: &str = "SOCKETSERVER_TEST_CHILD";

/// Is this process a child spawned by [`spawn_self`]?
pub fn is_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// A child process running one test of this test binary, killed and reaped on drop. Its
/// stdout and stderr lines arrive on channels.
pub struct ChildProc {
    pub child: std::process::Child,
    pub stdout: crossbeam_channel::Receiver<String>,
    pub stderr: crossbeam_channel::Receiver<String>,
}

/// Re-executes this test binary to run only `test` (which checks [`is_child`]).
pub fn spawn_self(test: &str) -> ChildProc {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1");
    ChildProc::spawn(cmd)
}

/// The binary of a bundled example. `cargo test` builds the examples beside the test
/// binaries (`target/<profile>/examples/`); a filtered run (`cargo test --test X`) does not,
/// hence the hint.
#[track_caller]
pub fn example_path(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test binary> -> target/<profile>/examples/<name>
    let path = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo test --all-features` (or `cargo build --examples --all-features`) first",
        path.display()
    );
    path
}

/// Starts the server of example `name` on a free loopback port with `args`, and waits for
/// its `listening on` line. Killed and reaped on drop.
#[track_caller]
pub fn spawn_example_server(name: &str, args: &[&str]) -> (ChildProc, SocketAddr) {
    spawn_example_server_with_env(name, args, &[])
}

/// [`spawn_example_server`] with extra environment variables for the server.
#[track_caller]
pub fn spawn_example_server_with_env(
    name: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (ChildProc, SocketAddr) {
    let mut cmd = std::process::Command::new(example_path(name));
    cmd.envs(env.iter().copied());
    spawn_example_server_cmd(cmd, args)
}

/// [`spawn_example_server`] in a process group of its own (its pid is the group id), so
/// that a test can signal the server and its children at once, as systemd or a terminal
/// does, without signalling itself.
#[track_caller]
pub fn spawn_example_server_in_own_group(name: &str, args: &[&str]) -> (ChildProc, SocketAddr) {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(example_path(name));
    cmd.process_group(0);
    spawn_example_server_cmd(cmd, args)
}

#[track_caller]
fn spawn_example_server_cmd(
    mut cmd: std::process::Command,
    args: &[&str],
) -> (ChildProc, SocketAddr) {
    cmd.arg("server").args(["--addr", "127.0.0.1:0"]).args(args);
    let proc = ChildProc::spawn(cmd);
    let line = ChildProc::expect_line(&proc.stderr, "listening on ");
    let addr = line["listening on ".len()..]
        .split_whitespace()
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    (proc, addr)
}

/// What a finished example client printed.
#[derive(Debug)]
pub struct ClientOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the client of example `name` against `addr` with `stdin` as its input; bounded
/// by [`LONG`] (then killed).
#[track_caller]
pub fn run_example_client(
    name: &str,
    addr: SocketAddr,
    args: &[&str],
    stdin: &[u8],
) -> ClientOutput {
    let mut cmd = std::process::Command::new(example_path(name));
    cmd.arg("client")
        .args(["--addr", &addr.to_string()])
        .args(args);
    let mut proc = ChildProc::spawn_with_stdin(cmd);
    let mut input = proc.child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    // A writer thread: the client may read replies before it has read all its input.
    let writer = thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let code = proc.wait_exit();
    let _ = writer.join();
    let drain = |rx: &crossbeam_channel::Receiver<String>| {
        let mut out = String::new();
        while let Ok(l) = rx.recv_timeout(Duration::from_secs(2)) {
            out.push_str(&l);
            out.push('\n');
        }
        out
    };
    ClientOutput {
        code,
        stdout: drain(&proc.stdout),
        stderr: drain(&proc.stderr),
    }
}

fn pump(r: impl Read + Send + 'static) -> crossbeam_channel::Receiver<String> {
    let (tx, rx) = crossbeam_channel::unbounded();
    thread::spawn(move || {
        use std::io::BufRead;
        for line in io::BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl ChildProc {
    /// Spawns `cmd` with stdin closed and stdout/stderr pumped into channels.
    pub fn spawn(cmd: std::process::Command) -> ChildProc {
        Self::spawn_stdin(cmd, std::process::Stdio::null())
    }

    /// Like [`spawn`](Self::spawn), with a pipe on stdin (`child.stdin`).
    pub fn spawn_with_stdin(cmd: std::process::Command) -> ChildProc {
        Self::spawn_stdin(cmd, std::process::Stdio::piped())
    }

    fn spawn_stdin(mut cmd: std::process::Command, stdin: std::process::Stdio) -> ChildProc {
        use std::process::Stdio;
        let mut child = cmd
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = pump(child.stdout.take().unwrap());
        let stderr = pump(child.stderr.take().unwrap());
        ChildProc {
            child,
            stdout,
            stderr,
        }
    }

    /// Waits for a line on `rx` containing `needle`; returns it.
    #[track_caller]
    pub fn expect_line(rx: &crossbeam_channel::Receiver<String>, needle: &str) -> String {
        let deadline = Instant::now() + LONG;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                // libtest may print "test name ... " in front of the child's own output.
                Ok(l) if l.contains(needle) => {
                    let at = l.find(needle).unwrap_or(0);
                    return l[at..].to_string();
                }
                Ok(_) => {}
                Err(_) => panic!("child never printed a line containing {needle:?}"),
            }
        }
    }

    /// The port from a `PORT n` line on stdout.
    #[track_caller]
    pub fn port(&self) -> u16 {
        let l = Self::expect_line(&self.stdout, "PORT ");
        l["PORT ".len()..].trim().parse().unwrap()
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
    }

    /// Stops an example server with SIGINT: it must exit 0 and log its summary line
    /// (`stopped: …`), which is returned.
    #[track_caller]
    pub fn stop_with_sigint(mut self) -> String {
        self.signal(libc::SIGINT);
        assert_eq!(self.wait_exit(), Some(0), "exit status after SIGINT");
        Self::expect_line(&self.stderr, "stopped:")
    }

    /// Waits (bounded) for the child to exit; returns its exit code.
    #[track_caller]
    pub fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + LONG;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            assert!(Instant::now() < deadline, "child did not exit");
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// CPU time (user + system) the child has used so far, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the ")" of the command name: state is field 3; utime 14, stime 15.
        let rest = stat.rsplit(')').next().unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let get = |i: usize| {
            f.get(i - 3)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        get(14) + get(15)
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback TCP address that was free a moment ago (bound, read, closed): nothing
/// listens there.
pub fn free_tcp_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Runs the client of `example` against `addr`, where no server is, and checks that it
/// fails the way the examples promise: exit status 1, `needle` on stderr, no panic.
#[track_caller]
pub fn assert_client_fails_cleanly(
    example: &str,
    addr: SocketAddr,
    args: &[&str],
    stdin: &[u8],
    needle: &str,
) {
    let out = run_example_client(example, addr, args, stdin);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains(needle), "{out:?}");
    assert!(!out.stderr.contains("panicked"), "{out:?}");
}

/// One captured log record: level and message.
#[derive(Debug, Clone)]
pub struct Captured {
    pub level: log::Level,
    pub message: String,
}

struct CaptureLogger(parking_lot::Mutex<Vec<Captured>>);

impl log::Log for CaptureLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        self.0.lock().push(Captured {
            level: record.level(),
            message: record.args().to_string(),
        });
    }
    fn flush(&self) {}
}

static CAPTURE: CaptureLogger = CaptureLogger(parking_lot::Mutex::new(Vec::new()));

/// Installs (once per test binary) a logger that keeps every record; returns what was
/// logged so far whose message contains `needle`. Tests of one binary share it: filter
/// on something unique to the test (a port, say).
pub fn captured_logs(needle: &str) -> Vec<Captured> {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let _ = log::set_logger(&CAPTURE);
        log::set_max_level(log::LevelFilter::Trace);
    });
    CAPTURE
        .0
        .lock()
        .iter()
        .filter(|c| c.message.contains(needle))
        .cloned()
        .collect()
}

/// Is `program` on `PATH`? A test that drives a real component (HAProxy, `openssl`,
/// `systemd-socket-activate`) calls this first: outside CI a missing program skips the test
/// with a line on stderr; under CI (`CI` set, as `.ci/run` does, which also installs them)
/// it fails the test, so a missing install step can never pass silently.
pub fn require_program(program: &str) -> bool {
    let found = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths)
            .any(|dir| std::fs::metadata(dir.join(program)).is_ok_and(|m| m.is_file()))
    });
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{program} is required by this test (.ci/run installs it) but is not on PATH"
        );
        eprintln!("skipped: {program} is not installed");
    }
    found
}

/// A loopback UDP address that was free a moment ago.
pub fn free_udp_addr() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Starts `program args` under the real `systemd-socket-activate` (call
/// [`require_program`] first), listening on `listen()` with its options `opts`
/// (`--datagram`…) and `env` passed with `-E`. `listen` picks a fresh free address on each
/// try: when the address was taken meanwhile (systemd-socket-activate exits), it retries,
/// five times at most. Returns the process (whose pid is the program's once a client has
/// come: systemd-socket-activate execs it on the first connection or datagram) and the
/// address. Killed and reaped on drop.
#[track_caller]
pub fn spawn_socket_activated(
    opts: &[&str],
    listen: impl Fn() -> String,
    env: &[(&str, &str)],
    program: &std::path::Path,
    args: &[&str],
) -> (ChildProc, String) {
    for _ in 0..5 {
        let addr = listen();
        let mut cmd = std::process::Command::new("systemd-socket-activate");
        cmd.args(opts).args(["-l", &addr]);
        for (k, v) in env {
            cmd.arg("-E").arg(format!("{k}={v}"));
        }
        cmd.arg(program).args(args);
        let mut proc = ChildProc::spawn(cmd);
        let deadline = Instant::now() + LONG;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match proc.stderr.recv_timeout(left) {
                Ok(l) if l.contains("Listening on") => return (proc, addr),
                Ok(_) => {}
                // It exited (the address was taken) before it listened: try another.
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    panic!("systemd-socket-activate never listened on {addr}")
                }
            }
        }
        let _ = proc.wait_exit();
    }
    panic!("systemd-socket-activate could not listen on a free address in 5 tries");
}

/// The environment variables of [`hold_idle_connections`]' child.
const IDLE_ADDR: &str = "SOCKETSERVER_TEST_IDLE_ADDR";
const IDLE_N: &str = "SOCKETSERVER_TEST_IDLE_N";
const IDLE_READY: &str = "SOCKETSERVER_TEST_IDLE_READY";

/// A child process of this test binary (running its test `child_test`, which calls
/// [`idle_connections_child`]) holding `n` idle connections to `addr` until its stdin
/// closes: for more connections than one process's descriptors, and so that the server's
/// process counts only its own threads. The child has connected them all when `ready`
/// exists (libtest captures a child's stdout: a file is the signal).
pub fn hold_idle_connections(
    child_test: &str,
    addr: SocketAddr,
    n: usize,
    ready: &std::path::Path,
) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", child_test, "--nocapture", "--test-threads", "1"])
        .env(IDLE_ADDR, addr.to_string())
        .env(IDLE_N, n.to_string())
        .env(IDLE_READY, ready)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn the client child")
}

/// The child half of [`hold_idle_connections`]; does nothing when not run as that child.
/// One round trip on one more connection (the server must echo `x\n`) proves that every
/// earlier one was accepted before `ready` is created: the server sees `n + 1`.
pub fn idle_connections_child() {
    let Ok(addr) = std::env::var(IDLE_ADDR) else {
        return; // run as a child only
    };
    let n: usize = std::env::var(IDLE_N).unwrap().parse().unwrap();
    let addr: SocketAddr = addr.parse().unwrap();
    let _ = socketserver::raise_fd_limit();
    let held: Vec<_> = (0..n)
        .map(|_| TcpStream::connect_timeout(&addr, LONG).expect("child connect"))
        .collect();
    let mut last = connect(addr);
    last.write_all(b"x\n").unwrap();
    last.read_exact(&mut [0u8; 2]).unwrap();
    std::fs::write(std::env::var(IDLE_READY).unwrap(), b"held").unwrap();
    let mut sink = String::new();
    let _ = io::stdin().read_line(&mut sink);
    drop((held, last));
}

/// A sync-mode example server gets SIGINT, then SIGTERM, while its handler (on the main
/// thread, where the kernel delivers a process-wide signal) waits in a read for the next
/// request of a keep-alive connection: the interrupted read is no error, the shutdown closes
/// the idle connection at once (the client reads end of file, as in the other modes), and
/// the server exits 0 having served it (`one`, answered by `f(word)`) without an error.
#[track_caller]
pub fn sync_mode_signal_closes_the_idle_connection_cleanly(example: &str, f: fn(&str) -> String) {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let (mut server, addr) = spawn_example_server(example, &["--mode", "sync"]);
        let mut c = connect(addr);
        let mut buf = [0u8; 4];
        c.write_all(b"one\n").unwrap();
        c.read_exact(&mut buf).unwrap();
        assert_eq!(buf, f("one\n").as_bytes());
        server.signal(sig);
        ChildProc::expect_line(&server.stderr, "shutting down");
        let mut rest = Vec::new();
        c.read_to_end(&mut rest)
            .unwrap_or_else(|e| panic!("signal {sig}: no end of file: {e}"));
        assert!(rest.is_empty(), "signal {sig}: {rest:?}");
        drop(c);
        assert_eq!(server.wait_exit(), Some(0), "signal {sig}");
        let summary = ChildProc::expect_line(&server.stderr, "stopped:");
        assert!(
            summary.contains("1 served, 0 errors"),
            "signal {sig}: {summary}"
        );
    }
}

//! Restarts that refuse nobody: [`Server::hand_over`] starts a successor process with this
//! server's socket, the way systemd passes sockets, and waits until it says it is ready.
//!
//! Why passing the socket rather than `SO_REUSEPORT` overlap: with `SO_REUSEPORT` each
//! process has its own listening socket and its own accept queue, and the kernel hashes
//! each new connection to one of them; when the old process closes its socket, the
//! connections still waiting in *its* queue are reset (the old process cannot hand them
//! over), so a restart under load refuses a few clients. With one socket shared by both
//! processes there is one queue: the old process's `close` only drops its reference, and
//! whatever waits in the queue is accepted by the successor. nginx (`SIGUSR2`), HAProxy
//! (`-x`, since 1.8) and Pingora (`--upgrade`) pass the socket for this reason.

use std::ffi::OsString;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::Server;
use crate::mode::Mode;
use crate::sys::activation::{Successor, spawn_with_fds};
use crate::transport::Transport;

impl<T: Transport, M: Mode> Server<T, M> {
    /// Starts `cmd` as this server's successor, passing it this server's socket, and
    /// waits (at most `ready_timeout`) until it reports `READY=1`. Then the caller stops
    /// this server ([`shutdown`](Self::shutdown), then [`server_close`](Self::server_close),
    /// which drains): both processes share one socket and one accept queue, so no client
    /// is refused and none waiting in the queue is lost. The steps:
    ///
    /// 1. bind a private notification socket (a Unix datagram socket in the temporary
    ///    directory, mode 0600);
    /// 2. start `cmd` (its program, arguments, environment changes and working directory;
    ///    stdin, stdout and stderr are inherited; the program is not searched on `PATH`)
    ///    with the socket as descriptor 3 and `LISTEN_FDS=1`, `LISTEN_PID=<its pid>`,
    ///    `LISTEN_FDNAMES=socketserver`, `NOTIFY_SOCKET=<the notification socket>` — the
    ///    systemd conventions, so a successor built on this crate adopts the socket with
    ///    [`Builder::from_systemd`](crate::Builder::from_systemd) and reports with
    ///    [`systemd::notify_ready`](crate::systemd::notify_ready);
    /// 3. wait for a datagram containing `READY=1`.
    ///
    /// Returns the successor's [`Child`]. If it exits, or is not ready within
    /// `ready_timeout`, it is killed (`SIGKILL`) and reaped, and this server goes on
    /// serving: the error ([`io::ErrorKind::TimedOut`], or `Other` naming the exit status)
    /// says which. This server is not stopped here.
    ///
    /// Under systemd, restart the service instead (`systemctl restart`): systemd holds the
    /// socket (`.socket` unit), so connections wait in its queue while the service
    /// restarts; a successor started here would not be systemd's main process.
    pub fn hand_over(&self, cmd: &Command, ready_timeout: Duration) -> io::Result<Child> {
        let socket = self.live_socket()?;
        let notify = NotifySocket::bind()?;
        let mut env: Vec<(OsString, Option<OsString>)> = cmd
            .get_envs()
            .map(|(k, v)| (k.to_owned(), v.map(|v| v.to_owned())))
            .collect();
        env.push(("NOTIFY_SOCKET".into(), Some(notify.path.clone().into())));
        let mut child = spawn_with_fds(Successor {
            program: cmd.get_program(),
            args: cmd.get_args().map(|a| a.to_owned()).collect(),
            env,
            cwd: cmd.get_current_dir(),
            fds: vec![(socket.as_raw_fd(), "socketserver".to_string())],
        })
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("hand-over: cannot start {:?}: {e}", cmd.get_program()),
            )
        })?;
        match notify.wait_ready(&mut child, ready_timeout) {
            Ok(()) => {
                log::info!(
                    "socketserver: hand-over: successor pid {} is ready",
                    child.id()
                );
                Ok(child)
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }
}

/// The private socket a successor reports `READY=1` to; its file is removed on drop.
struct NotifySocket {
    socket: UnixDatagram,
    path: std::path::PathBuf,
}

impl NotifySocket {
    fn bind() -> io::Result<NotifySocket> {
        use std::os::unix::fs::PermissionsExt;
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "socketserver-handover-{}-{seq}.sock",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("hand-over: notification socket {}: {e}", path.display()),
            )
        })?;
        let this = NotifySocket { socket, path };
        std::fs::set_permissions(&this.path, std::fs::Permissions::from_mode(0o600))?;
        Ok(this)
    }

    /// Waits for `READY=1`, checking every 50 ms that `child` still runs.
    fn wait_ready(&self, child: &mut Child, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        self.socket
            .set_read_timeout(Some(Duration::from_millis(50)))?;
        let mut buf = [0u8; 4096];
        loop {
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    let msg = String::from_utf8_lossy(&buf[..n]);
                    if msg.lines().any(|l| l == "READY=1") {
                        return Ok(());
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e),
            }
            if let Some(status) = child.try_wait()? {
                return Err(io::Error::other(format!(
                    "hand-over: the successor exited before it was ready ({status})"
                )));
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("hand-over: the successor was not ready within {timeout:?}"),
                ));
            }
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

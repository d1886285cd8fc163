//! Server processes: start one, read its `READY ip:port` line, sample its CPU time and memory
//! from `/proc`, stop it by pid (SIGTERM, then SIGKILL after 3 s).

use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running server process.
#[derive(Debug)]
pub struct ServerProc {
    child: Child,
    /// Its pid, for `/proc` and `kill(2)`.
    pub pid: u32,
    /// The address it is serving on.
    pub addr: SocketAddr,
}

/// Memory of a process, from `/proc/PID/status`, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mem {
    /// `VmRSS`: resident now.
    pub rss_kib: u64,
    /// `VmHWM`: the peak resident set since the process started.
    pub hwm_kib: u64,
    /// `Threads`.
    pub threads: u64,
}

impl ServerProc {
    /// Starts `cmd` and waits (up to 20 s) for its `READY ip:port` line.
    pub fn start(mut cmd: Command) -> io::Result<ServerProc> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn()?;
        let pid = child.id();
        let stdout = child.stdout.take().expect("piped stdout");
        // Read the line on a thread, so that a server that hangs before printing it cannot
        // hang the harness.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let r = BufReader::new(stdout).read_line(&mut line).map(|_| line);
            let _ = tx.send(r);
        });
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => return Err(kill_with(child, e.to_string())),
            Err(_) => return Err(kill_with(child, "no READY line within 20 s".into())),
        };
        let addr = line
            .strip_prefix("READY ")
            .and_then(|a| a.trim().parse().ok());
        let Some(addr) = addr else {
            return Err(kill_with(child, format!("unexpected first line {line:?}")));
        };
        Ok(ServerProc { child, pid, addr })
    }

    /// User + system CPU time of the whole process (all threads, live and exited).
    pub fn cpu(&self) -> Duration {
        cpu_of(&format!("/proc/{}/stat", self.pid))
    }

    /// `VmRSS`, `VmHWM` and the thread count now.
    pub fn mem(&self) -> Mem {
        mem_of(&format!("/proc/{}/status", self.pid))
    }

    /// Its `RLIMIT_NOFILE` (soft, hard), from `/proc/PID/limits` (0 for "unlimited" or
    /// unreadable).
    pub fn nofile(&self) -> (u64, u64) {
        let s = std::fs::read_to_string(format!("/proc/{}/limits", self.pid)).unwrap_or_default();
        s.lines()
            .find_map(|l| l.strip_prefix("Max open files"))
            .map_or((0, 0), |rest| {
                let mut it = rest.split_whitespace().map(|v| v.parse().unwrap_or(0));
                (it.next().unwrap_or(0), it.next().unwrap_or(0))
            })
    }

    /// SIGTERM, wait up to 3 s, then SIGKILL; always reaps the child.
    pub fn stop(mut self) {
        // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        // Only reached without `stop` on an error path: never leave a server running.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn kill_with(mut child: Child, msg: String) -> io::Error {
    let _ = child.kill();
    let _ = child.wait();
    io::Error::other(format!("server did not start: {msg}"))
}

/// CPUs online (not the affinity mask, which pinning narrows).
pub fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1)
}

/// Restricts the calling thread (and the threads it starts later) to one CPU.
pub fn pin_self(cpu: usize) -> io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET and sched_setaffinity get valid pointers.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Lets the calling thread run on every online CPU again.
pub fn unpin_self() -> io::Result<()> {
    // SAFETY: as in `pin_self`.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in 0..online_cpus() {
            libc::CPU_SET(cpu, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Makes `cmd`'s process run on `cpu` only (set in the child before `exec`).
pub fn pin_command(cmd: &mut Command, cpu: usize) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure only calls sched_setaffinity, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || pin_self(cpu));
    }
}

/// Clock ticks per second for `/proc/PID/stat`.
fn clk_tck() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// utime + stime from a `/proc/.../stat` file (fields 14 and 15).
pub fn cpu_of(path: &str) -> Duration {
    let Ok(s) = std::fs::read_to_string(path) else {
        return Duration::ZERO;
    };
    // The command name (field 2) may contain spaces: count from the last ')'.
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // After ')': state is field 3, so field n is at index n - 3.
    let total = ticks(14 - 3) + ticks(15 - 3);
    Duration::from_nanos(total * 1_000_000_000 / clk_tck())
}

/// CPU time of this process (the load generator and harness).
pub fn self_cpu() -> Duration {
    cpu_of("/proc/self/stat")
}

fn mem_of(path: &str) -> Mem {
    let mut m = Mem::default();
    let Ok(s) = std::fs::read_to_string(path) else {
        return m;
    };
    for line in s.lines() {
        let mut it = line.split_whitespace();
        let (Some(key), Some(val)) = (it.next(), it.next()) else {
            continue;
        };
        let v = val.parse().unwrap_or(0);
        match key {
            "VmRSS:" => m.rss_kib = v,
            "VmHWM:" => m.hwm_kib = v,
            "Threads:" => m.threads = v,
            _ => {}
        }
    }
    m
}

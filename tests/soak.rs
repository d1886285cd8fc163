//! A bounded soak: the echo, upload and chat example servers (real processes, threading
//! mode) under a steady mixed load with random faults for `SOAK_SECS` seconds (default 60).
//!
//! Faults injected: connections reset mid-request (`SO_LINGER` 0), half lines then FIN,
//! garbage bytes, hostile file names, negative frame lengths, uploads cut short, garbage
//! JSON headers, invalid UTF-8 and over-long chat lines, members that vanish.
//!
//! What must hold: every well-formed request succeeds (zero unexpected errors); exactly the
//! files uploaded whole are on disk, byte-identical, and nothing else (no partial or
//! temporary file); no server panics; every server exits 0 on SIGINT; and no growth in
//! descriptors, threads or RSS between the first and the last 10 s.

mod util;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use socketserver::framing::Framing;
use util::*;

/// xorshift64*: deterministic per thread, enough to pick sizes and faults.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.below(256) as u8).collect()
    }
    /// 1 to `max` random bytes.
    fn blob(&mut self, max: u64) -> Vec<u8> {
        let n = 1 + self.below(max) as usize;
        self.bytes(n)
    }
}

/// What the load did: operations, injected faults, unexpected failures.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    faults: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn record(&self, what: &str, r: std::io::Result<()>) {
        match r {
            Ok(()) => self.ok.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                self.failures.lock().push(format!("{what}: {e}"));
                0
            }
        };
    }
}

fn client(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, LONG)?;
    s.set_read_timeout(Some(LONG))?;
    s.set_write_timeout(Some(LONG))?;
    Ok(s)
}

fn reset(s: TcpStream) {
    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
}

fn echo_load(addr: SocketAddr, rng: &mut Rng, t: &Tally) {
    match rng.below(10) {
        0 => {
            t.faults.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut s) = client(addr) {
                let _ = s.write_all(&rng.blob(65_536));
                match rng.below(3) {
                    0 => reset(s),
                    1 => drop(s),
                    _ => {
                        let _ = s.shutdown(std::net::Shutdown::Write);
                        let _ = s.read_to_end(&mut Vec::new());
                    }
                }
            }
        }
        _ => t.record(
            "echo",
            (|| {
                let mut s = client(addr)?;
                for _ in 0..10 {
                    let msg = rng.blob(2000);
                    s.write_all(&msg)?;
                    let mut back = vec![0u8; msg.len()];
                    s.read_exact(&mut back)?;
                    if back != msg {
                        return Err(std::io::Error::other("echo reply differs"));
                    }
                }
                Ok(())
            })(),
        ),
    }
}

fn upload_load(
    addr: SocketAddr,
    id: u64,
    rng: &mut Rng,
    t: &Tally,
    stored: &Mutex<BTreeMap<String, Vec<u8>>>,
) {
    let f = Framing::python();
    let json = |v: String| v.into_bytes();
    if rng.below(7) == 0 {
        t.faults.fetch_add(1, Ordering::Relaxed);
        let Ok(mut s) = client(addr) else { return };
        let _ = match rng.below(4) {
            0 => f
                .write_frame(
                    &mut s,
                    &json(format!(
                        r#"{{"msg_type": "file", "file_name": "../evil{id}"}}"#
                    )),
                )
                .and_then(|()| f.write_frame(&mut s, b"escape")),
            1 => s.write_all(&(-5i32).to_le_bytes()),
            2 => {
                // Announces 100 000 bytes, sends 5 000, resets.
                let r = f.write_frame(
                    &mut s,
                    &json(format!(
                        r#"{{"msg_type": "file", "file_name": "cut{id}.bin"}}"#
                    )),
                );
                let r = r.and_then(|()| s.write_all(&100_000i32.to_le_bytes()));
                let r = r.and_then(|()| s.write_all(&rng.bytes(5_000)));
                reset(s);
                r
            }
            _ => f.write_frame(&mut s, b"{not json"),
        };
        return;
    }
    let name = format!("soak{id}.bin");
    let body = rng.blob(32 * 1024);
    t.record(
        "upload",
        (|| {
            let mut s = client(addr)?;
            f.write_frame(&mut s, br#"{"msg_type": "msg"}"#)?;
            f.write_frame(&mut s, format!("about to send {name}").as_bytes())?;
            f.write_frame(
                &mut s,
                &json(format!(r#"{{"msg_type": "file", "file_name": "{name}"}}"#)),
            )?;
            f.write_frame(&mut s, &body)?;
            f.write_frame(&mut s, b"close")?;
            // The server sends nothing back; it closes once done.
            s.read_to_end(&mut Vec::new())?;
            Ok(())
        })(),
    );
    stored.lock().insert(name, body);
}

fn read_until_line(r: &mut BufReader<TcpStream>, needle: &str) -> std::io::Result<()> {
    let mut line = String::new();
    for _ in 0..100_000 {
        line.clear();
        let n = r
            .read_line(&mut line)
            .map_err(|e| std::io::Error::new(e.kind(), format!("waiting for {needle:?}: {e}")))?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line.contains(needle) {
            return Ok(());
        }
    }
    Err(std::io::Error::other(format!("never saw {needle:?}")))
}

fn chat_load(addr: SocketAddr, id: u64, rng: &mut Rng, t: &Tally) {
    let fault = rng.below(5) == 0;
    if fault {
        t.faults.fetch_add(1, Ordering::Relaxed);
    }
    t.record(
        "chat",
        (|| {
            let (a, b) = (client(addr)?, client(addr)?);
            let (mut ar, mut br) = (
                BufReader::new(a.try_clone()?),
                BufReader::new(b.try_clone()?),
            );
            (&a).write_all(format!("a{id}\n").as_bytes())?;
            read_until_line(&mut ar, &format!("you are a{id}"))?;
            (&b).write_all(format!("b{id}\n").as_bytes())?;
            read_until_line(&mut br, &format!("you are b{id}"))?;
            if fault {
                match rng.below(2) {
                    0 => (&a).write_all(b"\xff\xfe bad utf-8")?,
                    _ => (&a).write_all(&[b'x'; 5000])?,
                }
                (&a).write_all(b"\n")?;
            }
            (&a).write_all(format!("hello from a{id}\n").as_bytes())?;
            read_until_line(&mut br, &format!("<a{id}> hello from a{id}"))?;
            if fault && rng.below(2) == 0 {
                // Vanishes without /quit: RST, once the reader's clone is closed too.
                drop(ar);
                reset(a);
            } else {
                (&a).write_all(b"/quit\n")?;
                read_until_line(&mut ar, "bye")?;
            }
            read_until_line(&mut br, &format!("a{id} "))?; // "left" or "disconnected"
            (&b).write_all(b"/quit\n")?;
            read_until_line(&mut br, "bye")
        })(),
    );
}

#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    fds: u64,
    threads: u64,
    rss_kib: u64,
}

fn sample(pid: u32) -> Sample {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    Sample {
        fds,
        threads: field("Threads:"),
        rss_kib: field("VmRSS:"),
    }
}

/// The median of each gauge over the samples taken in `[from, to)`: a window's level,
/// unmoved by a moment's burst of connections or pool growth.
fn window_median(samples: &[(Duration, Sample)], from: Duration, to: Duration) -> Sample {
    let window: Vec<Sample> = samples
        .iter()
        .filter(|(t, _)| *t >= from && *t < to)
        .map(|(_, s)| *s)
        .collect();
    let median = |f: fn(&Sample) -> u64| {
        let mut v: Vec<u64> = window.iter().map(f).collect();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    };
    Sample {
        fds: median(|s| s.fds),
        threads: median(|s| s.threads),
        rss_kib: median(|s| s.rss_kib),
    }
}

fn files_in(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_mixed_soak_with_faults_keeps_serving_and_holds_steady() {
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
        .max(21);
    let total = Duration::from_secs(secs);
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().to_str().unwrap();
    let mut servers = [
        ("echo", spawn_example_server("echo", &[])),
        (
            "upload",
            spawn_example_server("upload", &["--dir", dir_arg]),
        ),
        ("chat", spawn_example_server("chat", &[])),
    ];
    let addrs: Vec<SocketAddr> = servers.iter().map(|(_, (_, a))| *a).collect();
    let pids: Vec<u32> = servers.iter().map(|(_, (p, _))| p.child.id()).collect();
    let idle: Vec<Sample> = pids.iter().map(|p| sample(*p)).collect();

    let tally = Arc::new(Tally::default());
    let stored = Arc::new(Mutex::new(BTreeMap::new()));
    let next_id = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let loads: Vec<_> = (0..6u64)
        .map(|w| {
            let (tally, stored, next_id, addrs) = (
                tally.clone(),
                stored.clone(),
                next_id.clone(),
                addrs.clone(),
            );
            thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (w + 1));
                // Bounded by time and count.
                for _ in 0..1_000_000 {
                    if started.elapsed() >= total {
                        break;
                    }
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    match w % 3 {
                        0 => echo_load(addrs[0], &mut rng, &tally),
                        1 => upload_load(addrs[1], id, &mut rng, &tally, &stored),
                        _ => chat_load(addrs[2], id, &mut rng, &tally),
                    }
                }
            })
        })
        .collect();

    let mut samples: Vec<Vec<(Duration, Sample)>> = vec![Vec::new(); pids.len()];
    while started.elapsed() < total {
        for (i, pid) in pids.iter().enumerate() {
            samples[i].push((started.elapsed(), sample(*pid)));
        }
        thread::sleep(Duration::from_millis(500));
    }
    for l in loads {
        l.join().unwrap();
    }
    // The load is over: every connection is closed again, so each server is back to its
    // idle descriptors (listener, waker, stdio...): none leaked.
    for (i, (name, _)) in servers.iter().enumerate() {
        wait_until(
            &format!("{name} back to {} descriptors", idle[i].fds),
            || sample(pids[i]).fds <= idle[i].fds,
        );
    }

    // Every server drains and exits 0 on SIGINT, with no panic reported.
    for (name, (proc, _)) in &mut servers {
        proc.signal(libc::SIGINT);
        assert_eq!(proc.wait_exit(), Some(0), "{name} did not exit 0");
        let summary = ChildProc::expect_line(&proc.stderr, "stopped:");
        assert!(summary.contains(" 0 panics"), "{name}: {summary}");
        eprintln!("soak: {name}: {summary}");
    }

    let failures = tally.failures.lock();
    assert!(
        failures.is_empty(),
        "unexpected failures: {:?}",
        &failures[..failures.len().min(10)]
    );
    let ok = tally.ok.load(Ordering::Relaxed);
    let faults = tally.faults.load(Ordering::Relaxed);
    assert!(ok >= 100, "only {ok} operations in {secs} s");

    // Exactly the whole uploads, byte for byte; no partial, temporary or escaped file.
    let on_disk = files_in(dir.path());
    let expected = stored.lock();
    assert_eq!(on_disk.len(), expected.len(), "stray or missing files");
    assert!(
        on_disk == *expected,
        "an uploaded file differs from what was sent"
    );
    let escaped: Vec<_> = std::fs::read_dir(dir.path().parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("evil"))
        .collect();
    assert!(
        escaped.is_empty(),
        "a hostile name escaped the directory: {escaped:?}"
    );

    let ten = Duration::from_secs(10);
    for (i, (name, _)) in servers.iter().enumerate() {
        let first = window_median(&samples[i], Duration::ZERO, ten);
        let last = window_median(&samples[i], total - ten, total);
        eprintln!(
            "soak: {name}: idle {:?}; median of the first 10 s {first:?}, of the last 10 s {last:?}",
            idle[i]
        );
        assert!(
            last.fds <= first.fds + 4,
            "{name}: descriptors grew: {first:?} -> {last:?}"
        );
        assert!(
            last.threads <= first.threads + 4,
            "{name}: threads grew: {first:?} -> {last:?}"
        );
        assert!(
            last.rss_kib <= first.rss_kib + first.rss_kib / 4 + 4096,
            "{name}: RSS grew: {first:?} -> {last:?}"
        );
    }
    eprintln!(
        "soak: {secs} s: {ok} operations succeeded, {faults} faults injected, {} files stored",
        expected.len()
    );
}

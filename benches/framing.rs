//! Framing benchmarks.
//!
//! How to run (the full run takes about two minutes on 2 cores):
//!
//! ```text
//! cargo bench --bench framing                                  # 1 GiB file transfers
//! FRAMING_BENCH_FILE_SIZE=67108864 cargo bench --bench framing # quick mode: 64 MiB
//! ```
//!
//! Part 1 (criterion): frame encode/decode throughput for 64 B, 4 KiB and 1 MiB payloads.
//!
//! Part 2 (a timed harness, printed as a table): file transfers over loopback, each variant
//! run `FRAMING_BENCH_REPS` times (default 3) interleaved, median reported:
//! - receive: the crate's `Framing::send_file` + `FileReceiver::receive` (fsync on) against a
//!   plain `io::copy` socket -> file (+ fsync), and against reading into a 1 MiB buffer and
//!   discarding (the loopback ceiling). The ratio crate / plain `io::copy` is the figure to watch
//!   (target >= 0.95).
//! - send: the crate's `send_file` (a 64 KiB read/write loop) against `io::copy` (which
//!   std never turns into `sendfile` for file -> socket: an 8 KiB loop) and a 16 KiB loop,
//!   all into a receiver that discards.
//!
//! Under `cargo test --benches` (no `--bench` argument) part 2 runs once on 4 MiB.
//!
//! Recorded (`cargo bench --bench framing`, 2 cores, ext4, Rust 1.95; run time 64 s):
//!
//! ```text
//! frame encode   64 B 12.6 ns (4.7 GiB/s)   4 KiB 108 ns (35 GiB/s)   1 MiB 18.9 us (52 GiB/s)
//! frame decode   64 B 15.4 ns (3.9 GiB/s)   4 KiB  63 ns (61 GiB/s)   1 MiB 17.6 us (56 GiB/s)
//! 1 GiB over loopback, median of 3:
//!   recv: crate send_file + FileReceiver   1.328 s   771 MiB/s
//!   recv: plain io::copy -> file + fsync   2.452 s   418 MiB/s   crate/plain = 1.85x
//!   recv: discard (1 MiB reads)            0.635 s  1612 MiB/s
//!   send: crate send_file (64 KiB loop)    0.422 s  2427 MiB/s
//!   send: header + io::copy                0.760 s  1347 MiB/s   crate/io::copy = 1.80x
//!   send: 16 KiB buffer loop               0.478 s  2143 MiB/s
//! ```

use std::fs::{self, File};
use std::hint::black_box;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use socketserver::framing::{FileReceiver, Framing};

fn frames(c: &mut Criterion) {
    let framing = Framing::new();
    let mut group = c.benchmark_group("frame");
    for size in [64usize, 4096, 1 << 20] {
        let payload = vec![0xa5u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        let mut wire = Vec::with_capacity(size + 8);
        group.bench_with_input(BenchmarkId::new("encode", size), &payload, |b, p| {
            b.iter(|| {
                wire.clear();
                framing.write_frame(&mut wire, black_box(p)).unwrap();
                black_box(&wire);
            })
        });
        let mut encoded = Vec::new();
        framing.write_frame(&mut encoded, &payload).unwrap();
        let mut buf = Vec::new();
        group.bench_with_input(BenchmarkId::new("decode", size), &encoded, |b, e| {
            b.iter(|| {
                let mut r = black_box(&e[..]);
                framing.read_frame_into(&mut r, &mut buf).unwrap();
                black_box(&buf);
            })
        });
    }
    group.finish();
}

/// What the receiving thread does with one connection.
#[derive(Clone, Copy, Debug)]
enum Sink {
    /// `Framing::read_header` + `FileReceiver::receive` (fsync on).
    Crate,
    /// Read the header, `io::copy` into a new file, `sync_all`.
    File,
    /// Read the header, then read and discard through a 1 MiB buffer (the loopback ceiling).
    Discard,
}

/// How the sending side puts the file on the wire.
#[derive(Clone, Copy, Debug)]
enum Source {
    /// `Framing::send_file` (header with the first chunk, then a 64 KiB loop).
    Crate,
    /// Header, then `io::copy` from the file.
    IoCopy,
    /// Header, then a read/write loop with a buffer of this many bytes.
    Buffer(usize),
}

fn framing() -> Framing {
    Framing::new().max_frame_len(u64::MAX)
}

fn receive(stream: TcpStream, sink: Sink, dir: &Path) -> io::Result<u64> {
    let mut r = &stream;
    let len = framing()
        .read_header(&mut r)?
        .ok_or(io::ErrorKind::UnexpectedEof)?;
    let target = dir.join("received.bin");
    let n = match sink {
        Sink::Crate => {
            FileReceiver::new(dir)
                .max_size(u64::MAX)
                .receive("received.bin", &mut r, len, None)?
                .bytes
        }
        Sink::File => {
            let mut f = File::create(&target)?;
            let n = io::copy(&mut r.take(len), &mut f)?;
            f.sync_all()?;
            n
        }
        Sink::Discard => {
            // A large buffer, so that the receiver is not what limits the sender.
            let mut buf = vec![0u8; 1 << 20];
            let mut left = len;
            while left > 0 {
                let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let n = r.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                left -= n as u64;
            }
            len
        }
    };
    assert_eq!(n, len);
    Ok(n)
}

fn send(stream: &TcpStream, source: Source, src: &Path) -> io::Result<u64> {
    let mut w = stream;
    match source {
        Source::Crate => framing().send_file(&mut w, src),
        Source::IoCopy => {
            let mut f = File::open(src)?;
            framing().write_header(&mut w, f.metadata()?.len())?;
            io::copy(&mut f, &mut w)
        }
        Source::Buffer(size) => {
            let mut f = File::open(src)?;
            let len = f.metadata()?.len();
            framing().write_header(&mut w, len)?;
            let mut buf = vec![0u8; size];
            let mut total = 0;
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                w.write_all(&buf[..n])?;
                total += n as u64;
            }
            Ok(total)
        }
    }
}

/// One transfer over a fresh loopback connection; the time from connect to the receiver
/// having stored (or discarded) the last byte.
fn transfer(source: Source, sink: Sink, src: &Path, dir: &Path) -> Duration {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let dir_owned = dir.to_path_buf();
    let rx = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        receive(stream, sink, &dir_owned).unwrap();
        Instant::now()
    });
    let start = Instant::now();
    let stream = TcpStream::connect(addr).unwrap();
    send(&stream, source, src).unwrap();
    let done = rx.join().unwrap();
    drop(stream);
    let _ = fs::remove_file(dir.join("received.bin"));
    done - start
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn file_transfers(size: u64, reps: usize) {
    let dir = std::env::temp_dir().join(format!("framing-bench-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let src: PathBuf = dir.join("source.bin");
    {
        let mut f = File::create(&src).unwrap();
        let block: Vec<u8> = (0..1 << 20).map(|i| (i * 31 % 251) as u8).collect();
        let mut left = size;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            f.write_all(&block[..n]).unwrap();
            left -= n as u64;
        }
    }
    let rx_dir = dir.join("rx");
    fs::create_dir_all(&rx_dir).unwrap();

    use {Sink as K, Source as S};
    let variants: [(&str, Source, Sink); 6] = [
        ("recv: crate send_file + FileReceiver", S::Crate, K::Crate),
        ("recv: plain io::copy -> file + fsync", S::Crate, K::File),
        ("recv: discard (1 MiB reads)", S::Crate, K::Discard),
        ("send: crate send_file (64 KiB loop)", S::Crate, K::Discard),
        ("send: header + io::copy", S::IoCopy, K::Discard),
        ("send: 16 KiB buffer loop", S::Buffer(16 << 10), K::Discard),
    ];
    // Warm the page cache and the loopback path once.
    transfer(Source::Crate, Sink::Discard, &src, &rx_dir);
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); variants.len()];
    for _ in 0..reps {
        for (i, (_, source, sink)) in variants.iter().enumerate() {
            times[i].push(transfer(*source, *sink, &src, &rx_dir));
        }
    }
    let mib = size as f64 / (1024.0 * 1024.0);
    println!("\nfile transfer over loopback: {mib:.0} MiB, median of {reps}");
    let medians: Vec<Duration> = times.into_iter().map(median).collect();
    for ((name, _, _), t) in variants.iter().zip(&medians) {
        println!(
            "  {name:<40} {:>8.3} s {:>9.1} MiB/s",
            t.as_secs_f64(),
            mib / t.as_secs_f64()
        );
    }
    let ratio = |a: usize, b: usize| medians[b].as_secs_f64() / medians[a].as_secs_f64();
    let ratios = [
        (
            "crate receive / plain io::copy -> file",
            ratio(0, 1),
            " (target >= 0.95)",
        ),
        ("crate receive / discard", ratio(0, 2), ""),
        ("crate send / io::copy", ratio(3, 4), " (target >= 0.95)"),
        ("crate send / 16 KiB loop", ratio(3, 5), ""),
    ];
    for (name, r, note) in ratios {
        println!("  ratio {name:<38} {r:.3}x{note}");
    }
    fs::remove_dir_all(&dir).unwrap();
}

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    frames(&mut c);
    c.final_summary();

    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let (size, reps) = if bench_mode {
        (
            env("FRAMING_BENCH_FILE_SIZE").unwrap_or(1 << 30),
            env("FRAMING_BENCH_REPS").unwrap_or(3) as usize,
        )
    } else {
        (4 << 20, 1)
    };
    file_transfers(size, reps.max(1));
}

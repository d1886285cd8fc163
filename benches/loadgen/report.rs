//! The report: medians over repetitions, ratios (medians of per-repetition ratios), the
//! issue's target table with verdicts, the scaling series and every point's details, as
//! markdown.

use std::fmt::Write as _;
use std::time::Duration;

use crate::shutdown::ShutdownFigures;
use crate::{Config, Load, Point, Results, scenarios};

/// Server RSS growth per held connection, in bytes: (RSS with every connection held − RSS
/// before any) / connections held.
pub fn growth_per_conn(p: &Point) -> f64 {
    let held = p
        .outcome
        .background
        .saturating_sub(p.outcome.bg_failed)
        .max(1);
    (p.mem.rss_kib as f64 - p.mem_idle.rss_kib as f64) * 1024.0 / held as f64
}

/// Server CPU time per request, in microseconds.
pub fn cpu_per_req_us(p: &Point) -> f64 {
    p.server_cpu.as_secs_f64() * 1e6 / p.outcome.requests.max(1) as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// One server in one scenario, over its repetitions.
#[derive(Debug, Clone, Default)]
struct Agg {
    n: usize,
    rate: f64,
    rate_min: f64,
    rate_max: f64,
    mbps: f64,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
    cpu_us: f64,
    rss_mib: f64,
    idle_mib: f64,
    hwm_mib: f64,
    threads: u64,
    starved: usize,
    failed: usize,
    fewest: u64,
    conns: usize,
    bad: u64,
    errors: u64,
    lost: u64,
    sent: u64,
    gen_pct: f64,
    noise_pct: f64,
}

fn agg(points: &[Point]) -> Agg {
    let m = |f: &dyn Fn(&Point) -> f64| median(points.iter().map(f).collect());
    let rates: Vec<f64> = points.iter().map(|p| p.outcome.rate()).collect();
    Agg {
        n: points.len(),
        rate: median(rates.clone()),
        rate_min: rates.iter().copied().fold(f64::INFINITY, f64::min),
        rate_max: rates.iter().copied().fold(0.0, f64::max),
        mbps: m(&|p| p.outcome.mb_per_s()),
        p50_us: m(&|p| us(p.outcome.latency.p50)),
        p99_us: m(&|p| us(p.outcome.latency.p99)),
        max_us: points
            .iter()
            .map(|p| us(p.outcome.latency.max))
            .fold(0.0, f64::max),
        cpu_us: m(&|p| cpu_per_req_us(p)),
        rss_mib: m(&|p| p.mem.rss_kib as f64 / 1024.0),
        idle_mib: m(&|p| p.mem_idle.rss_kib as f64 / 1024.0),
        hwm_mib: points
            .iter()
            .map(|p| p.mem.hwm_kib as f64 / 1024.0)
            .fold(0.0, f64::max),
        threads: points
            .iter()
            .map(|p| p.mem.threads.max(p.threads_max))
            .max()
            .unwrap_or(0),
        starved: points.iter().map(|p| p.outcome.starved).max().unwrap_or(0),
        failed: points
            .iter()
            .map(|p| p.outcome.connect_failed)
            .max()
            .unwrap_or(0),
        fewest: points
            .iter()
            .map(|p| p.outcome.min_per_conn)
            .min()
            .unwrap_or(0),
        conns: points.iter().map(|p| p.outcome.conns).max().unwrap_or(0),
        bad: points.iter().map(|p| p.outcome.bad).sum(),
        errors: points.iter().map(|p| p.outcome.errors).sum(),
        lost: points.iter().map(|p| p.outcome.lost).sum(),
        sent: points.iter().map(|p| p.outcome.sent).sum(),
        gen_pct: m(&|p| {
            p.gen_cpu.as_secs_f64() / p.outcome.elapsed.as_secs_f64().max(1e-9) * 100.0
        }),
        noise_pct: m(&|p| p.noise_pct),
    }
}

struct View<'a> {
    r: &'a Results,
}

impl View<'_> {
    fn points(&self, sc: &str, server: &str) -> Option<&[Point]> {
        self.r
            .points
            .get(&(sc.to_string(), server.to_string()))
            .map(|v| &v[..])
            .filter(|v| !v.is_empty())
    }

    fn agg(&self, sc: &str, server: &str) -> Option<Agg> {
        self.points(sc, server).map(agg)
    }

    /// Median over repetitions of `metric(a) / metric(b)`, pairing points of the same rep.
    fn ratio_by(&self, sc: &str, a: &str, b: &str, metric: fn(&Point) -> f64) -> Option<f64> {
        let (pa, pb) = (self.points(sc, a)?, self.points(sc, b)?);
        let v: Vec<f64> = pa
            .iter()
            .filter_map(|x| {
                let y = pb.iter().find(|y| y.rep == x.rep)?;
                let d = metric(y);
                (d > 0.0).then(|| metric(x) / d)
            })
            .collect();
        (!v.is_empty()).then(|| median(v))
    }

    fn ratio(&self, sc: &str, a: &str, b: &str) -> Option<f64> {
        self.ratio_by(sc, a, b, |p| p.outcome.rate())
    }
}

fn fx(r: Option<f64>) -> String {
    r.map_or("n/a".into(), |r| format!("{r:.2}×"))
}

fn num(x: f64) -> String {
    if x.is_nan() {
        "n/a".into()
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let nproc = crate::procs::online_cpus();
    format!("{nproc} cores ({cpu}), Linux {kernel}")
}

fn verdict(ok: Option<bool>, missed: &[&str]) -> String {
    match ok {
        None => "n/a".into(),
        Some(true) => "met".into(),
        Some(false) => format!("**missed**: {}", missed.join(", ")),
    }
}

/// The target table of the issue, with what this run measured.
fn targets(v: &View<'_>, out: &mut String) {
    out.push_str("| scenario | target | measured | verdict |\n|---|---|---|---|\n");
    for (c, suffix, client) in [8usize, 64, 256].into_iter().flat_map(|c| {
        [
            (c, "", "poll client"),
            (c, "-thr", "thread-per-connection client"),
        ]
    }) {
        let sc = format!("echo-c{c}{suffix}");
        let (Some(ours), Some(tokio)) = (v.agg(&sc, "crate"), v.agg(&sc, "tokio")) else {
            continue;
        };
        let rt = v.ratio(&sc, "crate", "tokio");
        let rp = v.ratio(&sc, "crate", "python");
        let mut missed = Vec::new();
        if rt.is_some_and(|r| r < 1.0) {
            missed.push("req/s < tokio");
        }
        if ours.cpu_us > tokio.cpu_us {
            missed.push("CPU/req > tokio");
        }
        if ours.starved > 0 {
            missed.push("starved connections");
        }
        if c >= 64 && rp.is_some_and(|r| r < 2.5) {
            missed.push("< 2.5× Python");
        }
        let py = if c >= 64 {
            format!("; {} Python", fx(rp))
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "| TCP echo 64 B, C = {c}, {client} | ≥ 1.0× tokio, CPU/req ≤ tokio, none starved{} | {} tokio; CPU {} vs {} µs/req; starved {}{py} | {} |",
            if c >= 64 { ", ≥ 2.5× Python" } else { "" },
            fx(rt),
            num(ours.cpu_us),
            num(tokio.cpu_us),
            ours.starved,
            verdict(rt.map(|_| missed.is_empty()), &missed),
        );
    }
    if let Some(r) = v.ratio("echo-c1", "crate", "std") {
        let ok = r >= 0.95;
        let _ = writeln!(
            out,
            "| TCP echo 64 B, C = 1 | = std thread-per-connection (±5 %) | {} std | {} |",
            fx(Some(r)),
            verdict(Some(ok), &["slower than std"]),
        );
    }
    let sc = "connrate-c8";
    if let (Some(ours), Some(std)) = (v.agg(sc, "crate"), v.agg(sc, "std")) {
        let rt = v.ratio(sc, "crate", "tokio");
        let rp = v.ratio(sc, "crate", "python");
        let mut missed = Vec::new();
        if rt.is_some_and(|r| r < 1.0) {
            missed.push("< tokio");
        }
        if rp.is_some_and(|r| r < 3.0) {
            missed.push("< 3× Python");
        }
        if ours.p99_us > std.p99_us {
            missed.push("p99 > std's");
        }
        let _ = writeln!(
            out,
            "| connection rate, C = 8 | ≥ 1.0× tokio, ≥ 3× Python, p99 ≤ std's | {} tokio, {} Python; p99 {} vs std {} µs | {} |",
            fx(rt),
            fx(rp),
            num(ours.p99_us),
            num(std.p99_us),
            verdict(Some(missed.is_empty()), &missed),
        );
    }
    for (sc, client) in [("udp-c8", ""), ("udp-c8-poll", ", poll client")] {
        if let Some(ours) = v.agg(sc, "crate") {
            let rs = v.ratio(sc, "crate", "std");
            let rp = v.ratio(sc, "crate", "python");
            let mut missed = Vec::new();
            if rs.is_some_and(|r| r < 1.0) {
                missed.push("< std recv_from loop");
            }
            if rp.is_some_and(|r| r < 10.0) {
                missed.push("< 10× Python");
            }
            if ours.lost > 0 {
                missed.push("loss");
            }
            let _ = writeln!(
                out,
                "| UDP echo, 8 clients{client} | ≥ std `recv_from` loop, ≥ 10× Python, no loss | {} std, {} Python; lost {}/{} | {} |",
                fx(rs),
                fx(rp),
                ours.lost,
                ours.sent,
                verdict(rs.map(|_| missed.is_empty()), &missed),
            );
        }
        // Issue 16's targets: each datagram server against the std loop, CPU and p99 included.
        for (server, name, cpu_max) in [
            ("crate-sync", "UdpServer", 1.0),
            ("crate", "ThreadingUdpServer", 1.1),
        ] {
            let (Some(ours), Some(std)) = (v.agg(sc, server), v.agg(sc, "std")) else {
                continue;
            };
            let rs = v.ratio(sc, server, "std");
            // Per-repetition ratios (runs seconds apart), as for req/s.
            let cpu = v
                .ratio_by(sc, server, "std", cpu_per_req_us)
                .unwrap_or(f64::NAN);
            let p99 = v
                .ratio_by(sc, server, "std", |p| us(p.outcome.latency.p99))
                .unwrap_or(f64::NAN);
            let mut missed = Vec::new();
            if rs.is_some_and(|r| r < 1.0) {
                missed.push("req/s < std");
            }
            if cpu.is_nan() || cpu > cpu_max {
                missed.push("CPU/datagram above target");
            }
            if server == "crate" && (p99.is_nan() || p99 > 2.0) {
                missed.push("p99 > 2× std");
            }
            if ours.lost > 0 {
                missed.push("loss");
            }
            let p99_target = if server == "crate" {
                ", p99 ≤ 2× std"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "| UDP echo, 8 clients{client}, {name} (issue 16) | ≥ 1.0× std, CPU/datagram ≤ {cpu_max:.1}× std{p99_target}, no loss | {} std; CPU {} vs {} µs ({cpu:.2}×); p99 {} vs {} µs ({p99:.2}×); lost {}/{} | {} |",
                fx(rs),
                num(ours.cpu_us),
                num(std.cpu_us),
                num(ours.p99_us),
                num(std.p99_us),
                ours.lost,
                ours.sent,
                verdict(rs.map(|_| missed.is_empty()), &missed),
            );
        }
    }
    if let Some(r) = v.ratio_by("upload", "crate", "std", |p| p.outcome.mb_per_s()) {
        let mb = v.agg("upload", "crate").map_or(f64::NAN, |a| a.mbps);
        let _ = writeln!(
            out,
            "| upload | ≥ 0.98× a plain Rust `io::copy` sink | {} ({} MB/s) | {} |",
            fx(Some(r)),
            num(mb),
            verdict(Some(r >= 0.98), &["below 0.98×"]),
        );
    }
    if let Some(a) = v.agg("echo-c256", "crate") {
        let _ = writeln!(
            out,
            "| RSS with 256 connections | ≤ 6 MiB | VmRSS {} MiB with 256 open (idle {} MiB, so {} KiB per connection; peak {} MiB; {} threads) | {} |",
            num(a.rss_mib),
            num(a.idle_mib),
            num((a.rss_mib - a.idle_mib) * 1024.0 / 256.0),
            num(a.hwm_mib),
            a.threads,
            verdict(Some(a.rss_mib <= 6.0), &["above 6 MiB"]),
        );
    }
    evented_targets(v, out);
    // Every server measured, each against the target: a regression in one is not hidden
    // by the others.
    let py = v.r.shutdown_python.map_or(String::new(), |(m, x, n)| {
        format!(
            "; Python {} ms median, {} ms max ({n} reps)",
            num(m.as_secs_f64() * 1e3),
            num(x.as_secs_f64() * 1e3)
        )
    });
    for (name, f) in shutdown_servers(v.r) {
        let max_ms = f.to_return.max.as_secs_f64() * 1e3;
        let _ = writeln!(
            out,
            "| shutdown of an idle server, {name} | ≤ 5 ms `shutdown()` → `serve_forever()` returns | {} µs median, {} µs max ({} reps){} | {} |",
            num(us(f.to_return.median)),
            num(us(f.to_return.max)),
            f.to_return.n,
            if name == "ThreadingTcpServer" {
                py.as_str()
            } else {
                ""
            },
            verdict(Some(max_ms <= 5.0), &["max above 5 ms"]),
        );
    }
}

/// The servers whose shutdown was measured, with their figures.
fn shutdown_servers(r: &Results) -> impl Iterator<Item = (&'static str, &ShutdownFigures)> {
    [
        ("ThreadingTcpServer", &r.shutdown_tcp),
        ("ThreadingUdpServer", &r.shutdown_udp),
        ("UdpServer", &r.shutdown_udp_sync),
    ]
    .into_iter()
    .filter_map(|(name, f)| f.as_ref().map(|f| (name, f)))
}

/// The evented server's targets (`crate-evented`).
fn evented_targets(v: &View<'_>, out: &mut String) {
    const EV: &str = "crate-evented";
    for c in [64usize, 256] {
        let sc = format!("echo-c{c}");
        let (Some(ours), Some(tokio)) = (v.agg(&sc, EV), v.agg(&sc, "tokio")) else {
            continue;
        };
        let rt = v.ratio(&sc, EV, "tokio");
        let mut missed = Vec::new();
        if rt.is_some_and(|r| r < 1.0) {
            missed.push("req/s < tokio");
        }
        if ours.cpu_us > tokio.cpu_us {
            missed.push("CPU/req > tokio");
        }
        if ours.starved > 0 {
            missed.push("starved connections");
        }
        let _ = writeln!(
            out,
            "| evented: TCP echo 64 B, C = {c}, poll client | ≥ 1.0× tokio, CPU/req ≤ tokio | {} tokio; CPU {} vs {} µs/req; starved {} | {} |",
            fx(rt),
            num(ours.cpu_us),
            num(tokio.cpu_us),
            ours.starved,
            verdict(rt.map(|_| missed.is_empty()), &missed),
        );
    }
    if let Some(r) = v.ratio("echo-c1", EV, "std") {
        let _ = writeln!(
            out,
            "| evented: TCP echo 64 B, C = 1 | ≥ 0.95× std | {} std | {} |",
            fx(Some(r)),
            verdict(Some(r >= 0.95), &["below 0.95× std"]),
        );
    }
    for sc in ["echo-c256", "echo-c256-thr"] {
        let (Some(ours), Some(tokio)) = (v.agg(sc, EV), v.agg(sc, "tokio")) else {
            continue;
        };
        let d = ours.rss_mib - tokio.rss_mib;
        let _ = writeln!(
            out,
            "| evented: RSS with 256 active connections ({}) | within 1 MiB of tokio's | {} MiB vs tokio {} MiB ({:+.2} MiB) | {} |",
            if sc.ends_with("-thr") {
                "thread clients"
            } else {
                "poll client"
            },
            num(ours.rss_mib),
            num(tokio.rss_mib),
            d,
            verdict(Some(d <= 1.0), &["more than 1 MiB above tokio"]),
        );
    }
    if let Some(pts) = v.points("idle", EV) {
        let i = IdleAgg::of(pts);
        let mut missed = Vec::new();
        if i.probe.p99 > Duration::from_millis(5) {
            missed.push("probe p99 > 5 ms");
        }
        if i.failures() > 0 {
            missed.push("failures");
        }
        if i.threads_max > 16 {
            missed.push("threads > 16");
        }
        if i.growth_b > 512.0 {
            missed.push("RSS growth > 512 B/connection");
        }
        let _ = writeln!(
            out,
            "| evented: {} idle connections | probe p99 ≤ 5 ms, no failures, threads ≤ 16, RSS growth ≤ 512 B/connection | probe p99 {} ms ({} probes); failed: {} probes, {} messages, {} connects, {} dropped; {} threads at most; {} B/connection | {} |",
            i.held,
            num(i.probe.p99.as_secs_f64() * 1e3),
            i.probes,
            i.probe_failed,
            i.msg_failed,
            i.connect_failed,
            i.dropped,
            i.threads_max,
            num(i.growth_b),
            verdict(Some(missed.is_empty()), &missed),
        );
    }
    for server in [EV, "crate-evented-lines"] {
        let Some(l) = LorisAgg::of(v, server) else {
            continue;
        };
        let mut missed = Vec::new();
        if l.loris_threads_max > l.base_threads_max {
            missed.push("thread growth");
        }
        if l.p99_ratio.is_some_and(|r| r > 1.2) {
            missed.push("p99 > 1.2× the run without");
        }
        if l.dropped > 0 || l.bg_failed > 0 {
            missed.push("slow connections dropped or refused");
        }
        let _ = writeln!(
            out,
            "| evented (`{server}`): slow loris, {} connections | no thread growth, echo p99 ≤ 1.2× the run without | threads at most {} with vs {} without; p99 {} vs {} µs ({}); req/s {} of the run without | {} |",
            l.count,
            l.loris_threads_max,
            l.base_threads_max,
            num(l.with.p99_us),
            num(l.base.p99_us),
            fx(l.p99_ratio),
            fx(l.rate_ratio),
            verdict(Some(missed.is_empty()), &missed),
        );
    }
}

/// One server's idle points, over repetitions: latencies pooled, counts summed (failures) or
/// at their worst (threads), memory medians.
struct IdleAgg {
    n: usize,
    held: usize,
    connect_failed: usize,
    dropped: usize,
    setup_s: f64,
    probes: usize,
    probe_failed: u64,
    probe: crate::drive::Latency,
    msgs: u64,
    msg_failed: u64,
    msg: crate::drive::Latency,
    bad: u64,
    threads_idle: u64,
    threads_held: u64,
    threads_max: u64,
    idle_mib: f64,
    held_mib: f64,
    hwm_mib: f64,
    growth_b: f64,
    cpu_pct: f64,
    gen_pct: f64,
    noise_pct: f64,
    nofile: (u64, u64),
}

impl IdleAgg {
    fn of(points: &[Point]) -> IdleAgg {
        let m = |f: &dyn Fn(&Point) -> f64| median(points.iter().map(f).collect());
        let sum = |f: &dyn Fn(&Point) -> u64| points.iter().map(f).sum::<u64>();
        let max = |f: &dyn Fn(&Point) -> u64| points.iter().map(f).max().unwrap_or(0);
        let probes: Vec<u64> = points
            .iter()
            .flat_map(|p| p.outcome.samples.iter().copied())
            .collect();
        // Talkers' latencies are not kept per sample: the worst repetition's percentiles.
        let msg = crate::drive::Latency {
            p50: Duration::from_secs_f64(m(&|p| p.outcome.msg_latency.p50.as_secs_f64())),
            p99: points
                .iter()
                .map(|p| p.outcome.msg_latency.p99)
                .max()
                .unwrap_or_default(),
            max: points
                .iter()
                .map(|p| p.outcome.msg_latency.max)
                .max()
                .unwrap_or_default(),
        };
        IdleAgg {
            n: points.len(),
            held: points
                .iter()
                .map(|p| p.outcome.background)
                .max()
                .unwrap_or(0),
            connect_failed: max(&|p| p.outcome.bg_failed as u64) as usize,
            dropped: max(&|p| p.outcome.dropped as u64) as usize,
            setup_s: m(&|p| p.outcome.setup.as_secs_f64()),
            probes: probes.len(),
            probe_failed: sum(&|p| p.outcome.errors),
            probe: crate::drive::pooled(probes),
            msgs: sum(&|p| p.outcome.msgs),
            msg_failed: sum(&|p| p.outcome.msg_failed),
            msg,
            bad: sum(&|p| p.outcome.bad),
            threads_idle: max(&|p| p.mem_idle.threads),
            threads_held: max(&|p| p.mem_start.threads),
            threads_max: max(&|p| p.threads_max),
            idle_mib: m(&|p| p.mem_idle.rss_kib as f64 / 1024.0),
            held_mib: m(&|p| p.mem.rss_kib as f64 / 1024.0),
            hwm_mib: points
                .iter()
                .map(|p| p.mem.hwm_kib as f64 / 1024.0)
                .fold(0.0, f64::max),
            growth_b: m(&growth_per_conn),
            cpu_pct: m(&|p| {
                p.server_cpu.as_secs_f64() / p.outcome.elapsed.as_secs_f64().max(1e-9) * 100.0
            }),
            gen_pct: m(&|p| {
                p.gen_cpu.as_secs_f64() / p.outcome.elapsed.as_secs_f64().max(1e-9) * 100.0
            }),
            noise_pct: m(&|p| p.noise_pct),
            nofile: points.first().map_or((0, 0), |p| p.server_nofile),
        }
    }

    fn failures(&self) -> u64 {
        self.probe_failed
            + self.msg_failed
            + self.connect_failed as u64
            + self.dropped as u64
            + self.bad
    }
}

/// One server's slow-loris pair: the run with the slow connections against the run without.
struct LorisAgg {
    /// Slow connections.
    count: usize,
    base: Agg,
    with: Agg,
    /// Threads: before any connection, with the slow connections open (before the echo),
    /// the most during the echo window.
    base_threads_max: u64,
    loris_threads_before: u64,
    loris_threads_setup: u64,
    loris_threads_max: u64,
    rate_ratio: Option<f64>,
    p99_ratio: Option<f64>,
    dropped: usize,
    bg_failed: usize,
    trickled: u64,
    nofile: (u64, u64),
}

impl LorisAgg {
    fn of(v: &View<'_>, server: &str) -> Option<LorisAgg> {
        let (pb, pl) = (
            v.points("slowloris-base", server)?,
            v.points("slowloris", server)?,
        );
        let max = |pts: &[Point], f: &dyn Fn(&Point) -> u64| pts.iter().map(f).max().unwrap_or(0);
        // Ratios of the same repetition's pair (run back to back).
        let pair = |metric: fn(&Point) -> f64| -> Option<f64> {
            let r: Vec<f64> = pl
                .iter()
                .filter_map(|l| {
                    let b = pb.iter().find(|b| b.rep == l.rep)?;
                    let d = metric(b);
                    (d > 0.0).then(|| metric(l) / d)
                })
                .collect();
            (!r.is_empty()).then(|| median(r))
        };
        Some(LorisAgg {
            count: pl.iter().map(|p| p.outcome.background).max().unwrap_or(0),
            base: agg(pb),
            with: agg(pl),
            base_threads_max: max(pb, &|p| p.threads_max),
            loris_threads_before: max(pl, &|p| p.mem_idle.threads),
            loris_threads_setup: max(pl, &|p| p.mem_start.threads),
            loris_threads_max: max(pl, &|p| p.threads_max),
            rate_ratio: pair(|p| p.outcome.rate()),
            p99_ratio: pair(|p| us(p.outcome.latency.p99)),
            dropped: max(pl, &|p| p.outcome.dropped as u64) as usize,
            bg_failed: max(pl, &|p| p.outcome.bg_failed as u64) as usize,
            trickled: pl.iter().map(|p| p.outcome.sent).sum(),
            nofile: pl.first().map_or((0, 0), |p| p.server_nofile),
        })
    }
}

fn ms(d: Duration) -> String {
    num(d.as_secs_f64() * 1e3)
}

fn idle_section(v: &View<'_>, scs: &[crate::Scenario], out: &mut String) {
    let Some(sc) = scs.iter().find(|s| s.load == Load::Idle) else {
        return;
    };
    let _ = writeln!(out, "\n### Idle connections: {}\n", sc.title);
    out.push_str("Probe = connect + one 64 B echo + close, every 200 ms; latencies pooled over the repetitions (p99 of all probes). Threads: before any connection → with all held (before the window) → most seen during the window (sampled every 100 ms). RSS growth = (RSS with all held, end of window − RSS before any connection) / connections held. Failures are summed over the repetitions.\n\n");
    out.push_str("| server | held (failed to open) | opened in s | probe p50 / p99 / max ms | probes (failed) | talkers' messages (failed) | message p50 / p99 / max ms | dropped by server | bad | threads | RSS MiB idle → held | peak RSS MiB | RSS growth B/connection | server CPU % of a core | generator CPU % | others' CPU % | server nofile soft/hard | reps |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for server in &sc.servers {
        let Some(pts) = v.points(&sc.id, server) else {
            let _ = writeln!(out, "| {server} | failed |||||||||||||||| 0 |");
            continue;
        };
        let i = IdleAgg::of(pts);
        let _ = writeln!(
            out,
            "| {server} | {} ({}) | {} | {} / {} / {} | {} ({}) | {} ({}) | {} / {} / {} | {} | {} | {} → {} → {} | {} → {} | {} | {} | {} | {} | {} | {}/{} | {} |",
            i.held,
            i.connect_failed,
            num(i.setup_s),
            ms(i.probe.p50),
            ms(i.probe.p99),
            ms(i.probe.max),
            i.probes,
            i.probe_failed,
            i.msgs,
            i.msg_failed,
            ms(i.msg.p50),
            ms(i.msg.p99),
            ms(i.msg.max),
            i.dropped,
            i.bad,
            i.threads_idle,
            i.threads_held,
            i.threads_max,
            num(i.idle_mib),
            num(i.held_mib),
            num(i.hwm_mib),
            num(i.growth_b),
            num(i.cpu_pct),
            num(i.gen_pct),
            num(i.noise_pct),
            i.nofile.0,
            i.nofile.1,
            i.n,
        );
    }
}

fn loris_section(v: &View<'_>, scs: &[crate::Scenario], out: &mut String) {
    let Some(sc) = scs.iter().find(|s| s.id == "slowloris") else {
        return;
    };
    let _ = writeln!(out, "\n### Slow loris: {}\n", sc.title);
    out.push_str("Each pair (without / with the slow connections) is two fresh servers measured back to back in the same repetition; ratios are medians of the per-repetition ratios. Threads: before any connection → with the slow connections open (before the echo) → most seen during the echo window; \"without\" is the most seen in the run without.\n\n");
    out.push_str("| server | req/s without → with | with/without | p99 µs without → with | p99 with/without | server CPU µs/req without → with | threads without (max) | threads with: before → slow open → max | slow conns (failed, dropped) | bytes trickled | RSS MiB without → with | others' CPU % without / with | server nofile | reps |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for server in &sc.servers {
        let Some(l) = LorisAgg::of(v, server) else {
            let _ = writeln!(out, "| {server} | failed ||||||||||||| 0 |");
            continue;
        };
        let _ = writeln!(
            out,
            "| {server} | {} → {} | {} | {} → {} | {} | {} → {} | {} | {} → {} → {} | {} ({}, {}) | {} | {} → {} | {} / {} | {}/{} | {} |",
            num(l.base.rate),
            num(l.with.rate),
            fx(l.rate_ratio),
            num(l.base.p99_us),
            num(l.with.p99_us),
            fx(l.p99_ratio),
            num(l.base.cpu_us),
            num(l.with.cpu_us),
            l.base_threads_max,
            l.loris_threads_before,
            l.loris_threads_setup,
            l.loris_threads_max,
            l.count,
            l.bg_failed,
            l.dropped,
            l.trickled,
            num(l.base.rss_mib),
            num(l.with.rss_mib),
            num(l.base.noise_pct),
            num(l.with.noise_pct),
            l.nofile.0,
            l.nofile.1,
            l.with.n,
        );
    }
}

/// Renders the whole report.
pub fn render(cfg: &Config, r: &Results) -> String {
    let v = View { r };
    let mut out = String::new();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let _ = writeln!(out, "## socketserver load comparison ({} run)\n", cfg.label);
    let _ = writeln!(out, "- machine: {}", machine());
    let _ = writeln!(
        out,
        "- command: `cargo bench --bench loadgen{}{}`",
        if args.is_empty() { "" } else { " -- " },
        args.join(" ")
    );
    let _ = writeln!(
        out,
        "- {} repetitions interleaved, {:.1} s window after {:.1} s warm-up per point, a fresh server process per point, {}; {} points measured again because other processes used > 20 % of the machine; run took {:.0} s; load average before {}, after {}",
        cfg.reps,
        cfg.window.as_secs_f64(),
        cfg.warmup.as_secs_f64(),
        if cfg.pin {
            "the C = 1 echo pinned (server on CPU 1, client on CPU 0), the rest unpinned"
        } else {
            "nothing pinned"
        },
        r.retried,
        r.took.as_secs_f64(),
        r.load_before,
        r.load_after,
    );
    let _ = writeln!(
        out,
        "- servers: `crate` = ThreadingTcpServer/ThreadingUdpServer with default options; `crate-wide` = the same with `workers(4, 2048)`; `crate-sync` = UdpServer (no pool), replying through `wfile` (replies of a receive batch sent together, `sendmmsg`); `crate-sync-reply` = the same replying with `req.reply()` (one `sendto` each, at once); `crate-evented` = EventedTcpServer (default options) with a decoder that makes everything buffered one message (a byte-stream echo); `crate-evented-lines` = the same with the default line framing; `std` = thread per connection / one `recv_from` loop; `std-mmsg` = one `recvmmsg`/`sendmmsg` loop in plain libc, echoing in place (the ceiling of batching); `tokio` = multi-thread runtime, task per connection; `python` = Python 3 socketserver.ThreadingTCPServer/ThreadingUDPServer (backlog 1024)\n"
    );

    let _ = writeln!(
        out,
        "- RLIMIT_NOFILE: the generator's soft limit raised from {} to {} (hard {}); each server raises its own to its hard limit (shown per scenario below)\n",
        cfg.nofile.0, cfg.nofile.1, cfg.nofile.2
    );
    out.push_str("### Targets (same run, same load generator)\n\n");
    targets(&v, &mut out);

    let scs = scenarios(cfg);
    let echo: Vec<_> = scs.iter().filter(|s| s.load == Load::Echo).collect();
    if !echo.is_empty() {
        out.push_str("\n### Scaling: TCP echo 64 B, req/s and server RSS (MiB) by connections\n\n");
        let names = [
            "crate",
            "crate-wide",
            "crate-evented",
            "tokio",
            "std",
            "python",
        ];
        let cols: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| echo.iter().any(|s| s.servers.contains(n)))
            .collect();
        let evented = cols.contains(&"crate-evented");
        let _ = writeln!(
            out,
            "| C | {} | crate/tokio | crate/std | crate/python |{}",
            cols.join(" | "),
            if evented {
                " evented/tokio | evented/std |"
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            "|---|{}---|---|---|{}",
            "---|".repeat(cols.len()),
            if evented { "---|---|" } else { "" }
        );
        for scn in &echo {
            let sc = scn.id.clone();
            let c = format!(
                "{}{}",
                scn.conns,
                match (scn.conns, scn.driver) {
                    (1, _) => "",
                    (_, crate::Driver::Poll) => " (poll client)",
                    (_, crate::Driver::Threads) => " (thread clients)",
                }
            );
            let cells: Vec<String> = cols
                .iter()
                .map(|n| {
                    v.agg(&sc, n).map_or("–".into(), |a| {
                        let starved = if a.starved > 0 {
                            format!(", **{} starved**", a.starved)
                        } else {
                            String::new()
                        };
                        format!("{} /s · {} MiB{starved}", num(a.rate), num(a.rss_mib))
                    })
                })
                .collect();
            let ev = if evented {
                format!(
                    " {} | {} |",
                    fx(v.ratio(&sc, "crate-evented", "tokio")),
                    fx(v.ratio(&sc, "crate-evented", "std"))
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "| {c} | {} | {} | {} | {} |{ev}",
                cells.join(" | "),
                fx(v.ratio(&sc, "crate", "tokio")),
                fx(v.ratio(&sc, "crate", "std")),
                fx(v.ratio(&sc, "crate", "python")),
            );
        }
    }

    idle_section(&v, &scs, &mut out);
    loris_section(&v, &scs, &mut out);

    out.push_str("\n### Every point (medians; range = min–max req/s over repetitions)\n");
    for sc in scs.iter().filter(|s| s.load != Load::Idle) {
        let _ = writeln!(out, "\n**{}**\n", sc.title);
        out.push_str("| server | req/s | range | MB/s | p50 µs | p99 µs | max µs | server CPU µs/req | RSS MiB (idle → held) | peak RSS MiB | threads | starved / conns | fewest replies | bad · errors · lost/sent | generator CPU % | others' CPU % | reps |\n");
        out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        for server in &sc.servers {
            let Some(a) = v.agg(&sc.id, server) else {
                let _ = writeln!(out, "| {server} | failed |||||||||||||||| 0 |");
                continue;
            };
            let _ = writeln!(
                out,
                "| {server} | {} | {}–{} | {} | {} | {} | {} | {} | {} → {} | {} | {} | {} / {}{} | {} | {} · {} · {}/{} | {} | {} | {} |",
                num(a.rate),
                num(a.rate_min),
                num(a.rate_max),
                num(a.mbps),
                num(a.p50_us),
                num(a.p99_us),
                num(a.max_us),
                num(a.cpu_us),
                num(a.idle_mib),
                num(a.rss_mib),
                num(a.hwm_mib),
                a.threads,
                a.starved,
                a.conns,
                if a.failed > 0 {
                    format!(" ({} failed)", a.failed)
                } else {
                    String::new()
                },
                a.fewest,
                a.bad,
                a.errors,
                a.lost,
                a.sent,
                num(a.gen_pct),
                num(a.noise_pct),
                a.n,
            );
        }
        let peers: &[&str] = match sc.load {
            Load::Udp => &["crate-sync", "tokio", "std", "std-mmsg", "python"],
            Load::Upload => &["std", "tokio", "python"],
            _ => &["tokio", "std", "python"],
        };
        let metric: fn(&Point) -> f64 = if sc.load == Load::Upload {
            |p| p.outcome.mb_per_s()
        } else {
            |p| p.outcome.rate()
        };
        for ours in ["crate", "crate-evented", "crate-evented-lines"] {
            let ratios: Vec<String> = peers
                .iter()
                .filter_map(|p| {
                    v.ratio_by(&sc.id, ours, p, metric)
                        .map(|r| format!("{} {p}", fx(Some(r))))
                })
                .collect();
            if !ratios.is_empty() {
                let _ = writeln!(out, "\n{ours} = {}", ratios.join(", "));
            }
        }
    }

    if shutdown_servers(r).next().is_some() {
        out.push_str("\n### Shutdown (in-process)\n\n");
        out.push_str("| server | idle: `shutdown()` → `serve_forever()` returned, median / max | reps | right after a reply: median / max | reps | `server_close()` of an idle server: median / max | reps |\n|---|---|---|---|---|---|---|\n");
        for (name, f) in shutdown_servers(r) {
            let after = if f.after_reply.n > 0 {
                format!(
                    "{} µs / {} µs | {}",
                    num(us(f.after_reply.median)),
                    num(us(f.after_reply.max)),
                    f.after_reply.n
                )
            } else {
                "– | –".into()
            };
            let _ = writeln!(
                out,
                "| {name} | {} µs / {} µs | {} | {after} | {} µs / {} µs | {} |",
                num(us(f.to_return.median)),
                num(us(f.to_return.max)),
                f.to_return.n,
                num(us(f.close.median)),
                num(us(f.close.max)),
                f.close.n,
            );
        }
        if let Some((m, x, n)) = r.shutdown_python {
            let _ = writeln!(
                out,
                "| Python ThreadingTCPServer | {} ms / {} ms | {n} | – | – | – | – |",
                num(m.as_secs_f64() * 1e3),
                num(x.as_secs_f64() * 1e3),
            );
        }
    }
    out
}

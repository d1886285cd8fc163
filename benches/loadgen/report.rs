//! The report: medians over repetitions, ratios (medians of per-repetition ratios), the
//! issue's target table with verdicts, the scaling series and every point's details, as
//! markdown.

use std::fmt::Write as _;
use std::time::Duration;

use crate::{Config, Load, Point, Results, scenarios};

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
        threads: points.iter().map(|p| p.mem.threads).max().unwrap_or(0),
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
    let sc = "udp-c8";
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
            "| UDP echo, 8 clients | ≥ std `recv_from` loop, ≥ 10× Python, no loss | {} std, {} Python; lost {}/{} | {} |",
            fx(rs),
            fx(rp),
            ours.lost,
            ours.sent,
            verdict(rs.map(|_| missed.is_empty()), &missed),
        );
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
    if let Some(f) = &v.r.shutdown_tcp {
        let py = v.r.shutdown_python.map_or(String::new(), |(m, x, n)| {
            format!(
                "; Python {} ms median, {} ms max ({n} reps)",
                num(m.as_secs_f64() * 1e3),
                num(x.as_secs_f64() * 1e3)
            )
        });
        let max_ms = f.to_return.max.as_secs_f64() * 1e3;
        let _ = writeln!(
            out,
            "| shutdown of an idle server | ≤ 5 ms `shutdown()` → `serve_forever()` returns | {} µs median, {} µs max ({} reps){py} | {} |",
            num(us(f.to_return.median)),
            num(us(f.to_return.max)),
            f.to_return.n,
            verdict(Some(max_ms <= 5.0), &["max above 5 ms"]),
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
        "- servers: `crate` = ThreadingTcpServer/ThreadingUdpServer with default options; `crate-wide` = the same with `workers(4, 2048)`; `crate-sync` = UdpServer (no pool); `std` = thread per connection / one `recv_from` loop; `tokio` = multi-thread runtime, task per connection; `python` = Python 3 socketserver.ThreadingTCPServer/ThreadingUDPServer (backlog 1024)\n"
    );

    out.push_str("### Targets (same run, same load generator)\n\n");
    targets(&v, &mut out);

    let scs = scenarios(cfg);
    let echo: Vec<_> = scs.iter().filter(|s| s.load == Load::Echo).collect();
    if !echo.is_empty() {
        out.push_str("\n### Scaling: TCP echo 64 B, req/s and server RSS (MiB) by connections\n\n");
        let names = ["crate", "crate-wide", "tokio", "std", "python"];
        let cols: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| echo.iter().any(|s| s.servers.contains(n)))
            .collect();
        let _ = writeln!(
            out,
            "| C | {} | crate/tokio | crate/std | crate/python |",
            cols.join(" | ")
        );
        let _ = writeln!(out, "|---|{}---|---|---|", "---|".repeat(cols.len()));
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
            let _ = writeln!(
                out,
                "| {c} | {} | {} | {} | {} |",
                cells.join(" | "),
                fx(v.ratio(&sc, "crate", "tokio")),
                fx(v.ratio(&sc, "crate", "std")),
                fx(v.ratio(&sc, "crate", "python")),
            );
        }
    }

    out.push_str("\n### Every point (medians; range = min–max req/s over repetitions)\n");
    for sc in &scs {
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
            Load::Udp => &["crate-sync", "tokio", "std", "python"],
            Load::Upload => &["std", "tokio", "python"],
            _ => &["tokio", "std", "python"],
        };
        let metric: fn(&Point) -> f64 = if sc.load == Load::Upload {
            |p| p.outcome.mb_per_s()
        } else {
            |p| p.outcome.rate()
        };
        let ratios: Vec<String> = peers
            .iter()
            .filter_map(|p| {
                v.ratio_by(&sc.id, "crate", p, metric)
                    .map(|r| format!("{} {p}", fx(Some(r))))
            })
            .collect();
        if !ratios.is_empty() {
            let _ = writeln!(out, "\ncrate = {}", ratios.join(", "));
        }
    }

    if r.shutdown_tcp.is_some() || r.shutdown_udp.is_some() {
        out.push_str("\n### Shutdown of an idle server (in-process)\n\n");
        out.push_str("| server | `shutdown()` → `serve_forever()` returned: median / max | reps | `server_close()` of an idle server: median / max | reps |\n|---|---|---|---|---|\n");
        for (name, f) in [
            ("ThreadingTcpServer", &r.shutdown_tcp),
            ("ThreadingUdpServer", &r.shutdown_udp),
        ] {
            if let Some(f) = f {
                let _ = writeln!(
                    out,
                    "| {name} | {} µs / {} µs | {} | {} µs / {} µs | {} |",
                    num(us(f.to_return.median)),
                    num(us(f.to_return.max)),
                    f.to_return.n,
                    num(us(f.close.median)),
                    num(us(f.close.max)),
                    f.close.n,
                );
            }
        }
        if let Some((m, x, n)) = r.shutdown_python {
            let _ = writeln!(
                out,
                "| Python ThreadingTCPServer | {} ms / {} ms | {n} | – | – |",
                num(m.as_secs_f64() * 1e3),
                num(x.as_secs_f64() * 1e3),
            );
        }
    }
    out
}

#!/bin/bash
# Where one loadgen UDP echo server spends its CPU, from `perf record -g -e cpu-clock` on the
# server process (software clock: no hardware counters needed; run as root or with
# perf_event_paranoid <= 1). One 3 s window, 8 clients, 64 B, as loadgen's udp scenario.
# A profile, not the loadgen harness: sampling at 20 kHz with call graphs slows every
# server, so read the shares, not the rate.
#
# How to run: cargo bench --bench loadgen --no-run && bash benches/udp_profile.sh std crate-sync crate
# (servers: crate, crate-sync, crate-sync-reply, std, std-mmsg, tokio)
#
# Columns (shares of the server's samples; "incl." counts a function with what it calls):
#   kernel / user     samples in the kernel / in the server's own code and libc
#   send / recv       incl. under the send (sendto, sendmmsg) / receive (recvfrom, recvmmsg)
#                     system calls
#   loopback          incl. under do_softirq: the loopback delivery of the reply, which the
#                     kernel runs in the sender's context, up to queueing it on the client
#   wake              incl. under sock_def_readable: waking the client thread the reply is for
#   sched             incl. under __schedule: the server switched out (and back in)
#   samples/dgram     samples per datagram answered (at 20 kHz one sample is 50 us)
cd "$(dirname "$0")/.." || exit 1
. benches/udp_serve.sh
[ $# -gt 0 ] || { echo "usage: $0 SERVER..." >&2; exit 2; }
command -v perf >/dev/null || { echo "needs perf (linux-perf / linux-tools)" >&2; exit 2; }
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
printf '%-17s %7s %6s %6s %6s %9s %6s %6s %14s\n' server kernel user send recv loopback wake sched samples/dgram
for S in "$@"; do
    udp_serve "$S" "$D/out" || continue
    perf record -q -g -e cpu-clock -F 20000 -p $P -o "$D/perf.data" 2>/dev/null & R=$!
    out=$($LG drive --addr "$A" --load udp -c 8 -s 64 --secs 3 2>/dev/null)
    kill -INT $R; wait $R; kill $P; wait $P 2>/dev/null
    n=$(echo "$out" | grep -oE 'lost [0-9]+/[0-9]+' | cut -d/ -f2)
    perf report -i "$D/perf.data" --children --sort sym -q --stdio -g none 2>/dev/null > "$D/children"
    perf report -i "$D/perf.data" --no-children --sort dso -q --stdio -g none 2>/dev/null > "$D/dso"
    total=$(perf script -i "$D/perf.data" -F period 2>/dev/null | wc -l)
    python3 - "$S" "$n" "$total" "$D/children" "$D/dso" <<'PY'
import re, sys
name, n, total, children, dso = sys.argv[1], int(sys.argv[2] or 0), int(sys.argv[3]), sys.argv[4], sys.argv[5]
incl = {}
for line in open(children):
    m = re.match(r"\s*([\d.]+)%\s+([\d.]+)%\s+\[.\]\s+(\S+)", line)
    if m:
        incl[m.group(3)] = float(m.group(1))
kernel = user = 0.0
for line in open(dso):
    m = re.match(r"\s*([\d.]+)%\s+(\S+)", line)
    if m:
        if m.group(2) == "[kernel.kallsyms]":
            kernel += float(m.group(1))
        elif m.group(2).startswith(("loadgen", "libc")):
            user += float(m.group(1))
g = lambda *ks: sum(incl.get(k, 0.0) for k in ks)
send = g("__x64_sys_sendto", "__x64_sys_sendmmsg", "__x64_sys_sendmsg")
recv = g("__x64_sys_recvfrom", "__x64_sys_recvmmsg", "__x64_sys_recvmsg")
per = f"{total / n:.3f}" if n else "n/a"
print(f"{name:17} {kernel:6.1f}% {user:5.1f}% {send:5.1f}% {recv:5.1f}% {g('do_softirq.part.0'):8.1f}% "
      f"{g('sock_def_readable'):5.1f}% {g('__schedule'):5.1f}% {per:>14}")
PY
done

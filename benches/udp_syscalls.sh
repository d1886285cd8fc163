#!/bin/bash
# Syscalls, context switches and CPU per datagram of one loadgen UDP echo server, from
# perf's software events and syscall tracepoints (no hardware counters needed; run as root
# or with perf_event_paranoid <= 1). One 3 s window, 8 clients, 64 B: a profile, not the
# loadgen harness (counts include the 0.3 s warm-up).
#
# How to run: cargo bench --bench loadgen --no-run && bash benches/udp_syscalls.sh crate-sync
# (servers: crate, crate-sync, crate-sync-reply, std, std-mmsg)
cd "$(dirname "$0")/.." || exit 1
. benches/udp_serve.sh
[ -n "$1" ] || { echo "usage: $0 SERVER" >&2; exit 2; }
udp_serve "$1" /tmp/udp_syscalls.$1.out || exit 1
perf stat -x, -p $P -e task-clock,context-switches,raw_syscalls:sys_enter,syscalls:sys_enter_recvfrom,syscalls:sys_enter_recvmmsg,syscalls:sys_enter_sendto,syscalls:sys_enter_sendmmsg,syscalls:sys_enter_poll,syscalls:sys_enter_epoll_wait -o /tmp/udp_syscalls.$1.csv &
S=$!
out=$($LG drive --addr $A --load udp -c 8 -s 64 --secs 3 2>/dev/null)
kill -INT $S; wait $S; kill $P; wait $P 2>/dev/null
rm -f /tmp/udp_syscalls.$1.out
n=$(echo "$out" | grep -oE 'lost [0-9]+/[0-9]+' | cut -d/ -f2)
rate=$(echo "$out" | grep -oE '[0-9]+ req/s')
python3 - "$1" "$n" "$rate" /tmp/udp_syscalls.$1.csv <<'PY'
import sys
name, n, rate, f = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
v = {}
for line in open(f):
    p = line.strip().split(",")
    if len(p) > 2 and p[0] and p[0][0].isdigit():
        v[p[2].split(":")[-1].replace("sys_enter_", "")] = float(p[0])
print(f"{name:17} {rate:>12}  CPU {v['task-clock']*1000/n:.2f} us/dgram  ctx {v['context-switches']/n:.2f}  syscalls {v['sys_enter']/n:.2f}/dgram: " +
      " ".join(f"{k} {v[k]/n:.2f}" for k in ["recvfrom","recvmmsg","sendto","sendmmsg","poll","epoll_wait"] if v.get(k)))
PY
rm -f /tmp/udp_syscalls.$1.csv

#!/bin/bash
# UDP echo with the server and the poll client pinned to a core each (server on CPU 1,
# client on CPU 0, `taskset`): each server's datagrams per second and CPU per datagram, and
# per-repetition ratios against the first server named, servers interleaved in every
# repetition. Pinning keeps the scheduler from moving either side onto the other's core, a
# source of spread in the loadgen harness's unpinned UDP points. 8 clients, 64 B, one 3 s
# window per point (CPU is the server's utime + stime over the whole drive, warm-up
# included, so read the ratios, not the absolute figures).
#
# How to run: cargo bench --bench loadgen --no-run && bash benches/udp_pinned.sh 8 std crate-sync std-mmsg
# (REPS then servers: crate, crate-sync, crate-sync-reply, std, std-mmsg; needs 2 cores)
cd "$(dirname "$0")/.." || exit 1
. benches/udp_serve.sh
[ $# -ge 3 ] || { echo "usage: $0 REPS BASELINE SERVER..." >&2; exit 2; }
reps=$1; shift
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
hz=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for r in $(seq "$reps"); do
    for S in "$@"; do
        WRAP="taskset -c 1" udp_serve "$S" "$D/out" || exit 1
        t0=$(cpu $P)
        out=$(taskset -c 0 "$LG" drive --addr "$A" --load udp -c 8 -s 64 --secs 3 2>/dev/null)
        t1=$(cpu $P)
        kill $P; wait $P 2>/dev/null
        echo "$r $S $(echo "$out" | grep -oE '[0-9]+ req/s' | cut -d' ' -f1) $t0 $t1 $(echo "$out" | grep -oE 'lost [0-9]+/[0-9]+' | cut -d' ' -f2)" >> "$D/points"
    done
done
python3 - "$hz" "$D/points" "$@" <<'PY'
import statistics as st, sys
hz, points, names = float(sys.argv[1]), sys.argv[2], sys.argv[3:]
runs = {}
for line in open(points):
    r, name, rate, t0, t1, lost = line.split()
    got, sent = map(int, lost.split("/"))
    runs.setdefault(int(r), {})[name] = (float(rate), (float(t1) - float(t0)) / hz * 1e6 / sent, got, sent)
base = names[0]
print(f"{'server':17} {'req/s':>9} {'CPU us/dgram':>13} {'lost':>14}   per-repetition ratios to {base}: req/s; CPU")
for n in names:
    rate = st.median(p[n][0] for p in runs.values())
    cpu = st.median(p[n][1] for p in runs.values())
    lost = f"{sum(p[n][2] for p in runs.values())}/{sum(p[n][3] for p in runs.values())}"
    line = f"{n:17} {rate:9.0f} {cpu:13.2f} {lost:>14}"
    if n != base:
        rr = [p[n][0] / p[base][0] for p in runs.values()]
        cr = [p[n][1] / p[base][1] for p in runs.values()]
        line += (f"   {st.median(rr):.2f}x ({min(rr):.2f}-{max(rr):.2f}); "
                 f"{st.median(cr):.2f}x ({min(cr):.2f}-{max(cr):.2f})")
    print(line)
PY

#!/bin/bash
# How to run: cargo build --release --example echo && cargo bench --bench loadgen --no-run && bash benches/evented_quick.sh
# One 3 s window per point (no repetitions): a first look, not the loadgen harness.
# Quick same-run comparison: echo 64 B, poll client; server CPU from /proc/PID/stat.
LG=$(ls target/release/deps/loadgen-* | grep -v '\.d$' | head -1)
HZ=$(getconf CLK_TCK)
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
run() { # name pid addr conns
  local c0=$(cpu $2); local out=$($LG drive --addr $3 --load echo -c $4 -s 64 --secs 3 2>&1); local c1=$(cpu $2)
  local rss=$(grep VmRSS /proc/$2/status | awk '{print $2}'); local th=$(ls /proc/$2/task | wc -l)
  echo "$1 C=$4: $(echo "$out" | grep -oE '[0-9.]+ req/s|req/s[^,]*' | head -1) | $(echo "$out" | tr '\n' ' ' | cut -c1-160) | server CPU ticks $((c1-c0)) (HZ $HZ) RSS ${rss}kB threads $th"
}
for mode in evented threading; do
  target/release/examples/echo server --addr 127.0.0.1:0 --mode $mode --log-level warn 2>/tmp/echo_$mode.err &
  P=$!; sleep 0.5
  A=$(grep -oE '127.0.0.1:[0-9]+' /tmp/echo_$mode.err | head -1)
  if [ -z "$A" ]; then target/release/examples/echo server --addr 127.0.0.1:0 --mode $mode 2>/tmp/e2 & P2=$!; sleep 0.5; A=$(grep -oE '127.0.0.1:[0-9]+' /tmp/e2|head -1); kill $P; P=$P2; fi
  for c in 1 64 256; do run "crate-$mode" $P $A $c; done
  kill -TERM $P; wait $P 2>/dev/null
done
$LG serve --server tokio --service tcp-echo > /tmp/tok.out 2>&1 & P=$!; sleep 0.5
A=$(grep -oE '127.0.0.1:[0-9]+' /tmp/tok.out | head -1)
for c in 1 64 256; do run tokio $P $A $c; done
kill $P
$LG serve --server std --service tcp-echo > /tmp/std.out 2>&1 & P=$!; sleep 0.5
A=$(grep -oE '127.0.0.1:[0-9]+' /tmp/std.out | head -1)
for c in 1 64 256; do run std $P $A $c; done
kill $P

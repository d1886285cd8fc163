#!/usr/bin/env python3
"""User-space instructions per datagram of the UDP echo servers, counted by callgrind.

How to run (needs valgrind; about a minute per server):

    cargo bench --bench loadgen --no-run
    python3 benches/udp_cost.py                       # crate-sync, crate, std
    python3 benches/udp_cost.py --servers crate-sync,std --small 2000 --large 10000

Why: `perf` has no hardware counters on the shared build machine, and CPU seconds there
depend on what the other builders do. Callgrind counts the instructions the server executes
in user space (not the kernel's: count syscalls with `strace -c -f`), the same on every
run, whatever the load.

How: each server (`loadgen serve --server NAME --service udp-echo`, the loadgen bench's own
servers) runs under `valgrind --tool=callgrind` twice: once for `--small` datagrams, once for
`--large`, each time from start to SIGTERM (callgrind writes its totals then). Per datagram
is (Ir(large) - Ir(small)) / (large - small): start-up and exit cancel out. The clients
(`--clients` threads, one socket each, this script, not under valgrind) send one 64-byte
datagram and wait for its echo before the next, as loadgen's udp scenario does; a datagram
that is not echoed within 2 s is counted lost (and reported: there should be none).
"""

import argparse
import glob
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading


def loadgen():
    exes = [
        p
        for p in glob.glob("target/release/deps/loadgen-*")
        if os.access(p, os.X_OK) and not p.endswith(".d")
    ]
    if not exes:
        sys.exit("no loadgen binary: run `cargo bench --bench loadgen --no-run` first")
    return max(exes, key=os.path.getmtime)


def drive(addr, total, clients, size):
    """`total` datagrams over `clients` sockets, lock-step; returns the number lost."""
    lost = [0] * clients

    def client(i, n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(addr)
        s.settimeout(2.0)
        for seq in range(n):
            out = seq.to_bytes(8, "little") + bytes([i]) * (size - 8)
            s.send(out)
            while True:
                try:
                    back = s.recv(65536)
                except socket.timeout:
                    lost[i] += 1
                    break
                if back[:8] == out[:8]:
                    break
        s.close()

    per = [total // clients + (1 if i < total % clients else 0) for i in range(clients)]
    ts = [threading.Thread(target=client, args=(i, n)) for i, n in enumerate(per)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(lost)


def run(exe, server, total, clients, size):
    """Instructions (Ir) of one server run that echoes `total` datagrams, and losses."""
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "callgrind.out")
        p = subprocess.Popen(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                exe,
                "serve",
                "--server",
                server,
                "--service",
                "udp-echo",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            line = p.stdout.readline()
            m = re.match(r"READY ([\d.]+):(\d+)", line)
            if not m:
                raise RuntimeError(f"{server}: no READY line: {line!r}")
            addr = (m.group(1), int(m.group(2)))
            lost = drive(addr, total, clients, size)
        finally:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        with open(out) as f:
            for line in f:
                if line.startswith("totals:") or line.startswith("summary:"):
                    return int(line.split()[1]), lost
        raise RuntimeError(f"{server}: no totals in the callgrind output")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--servers", default="crate-sync,crate,std")
    ap.add_argument("--small", type=int, default=2000)
    ap.add_argument("--large", type=int, default=10000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--size", type=int, default=64)
    a = ap.parse_args()
    exe = loadgen()
    rows = {}
    for server in a.servers.split(","):
        small, lost_s = run(exe, server, a.small, a.clients, a.size)
        large, lost_l = run(exe, server, a.large, a.clients, a.size)
        per = (large - small) / (a.large - a.small)
        rows[server] = per
        print(
            f"{server:<12} {per:10.0f} instructions/datagram  "
            f"(Ir {small} for {a.small}, {large} for {a.large}; lost {lost_s + lost_l})",
            flush=True,
        )
    if "std" in rows:
        for server, per in rows.items():
            if server != "std":
                print(f"{server:<12} {per / rows['std']:.2f}x std's instructions per datagram")


if __name__ == "__main__":
    main()

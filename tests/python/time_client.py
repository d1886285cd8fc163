#!/usr/bin/env python3
"""Python client for tests/example_timeserver.rs, written the tutorials' way: the plain
`socket` module, `socket.SOCK_DGRAM`, `sendto` and `recvfrom(1024)`. Stdlib only.

Usage: time_client.py PORT
Checks that `%Y` is the current year, that an empty datagram and `%F %X` both get a
`YYYY-MM-DD HH:MM:SS` reply, and that the server's strftime agrees with Python's
`time.strftime` (both are C's strftime) on names, zone and non-ASCII text. The server runs
on this machine with the same `TZ`, so its local time is ours; the test sets an unusual one
(`TST-5:30`), so a server that answered in UTC would disagree.
Exit status 0 on success; otherwise a message on stderr and status 1.
"""

import re
import socket
import sys
import time

HOST = "127.0.0.1"
TIMEOUT = 10.0
SHAPE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
# Fields that change at most once a minute, so a retry absorbs a boundary.
SAME_AS_PYTHON = [
    "%Y",
    "%Y-%m-%d %H:%M",
    "%a %A %b %B %j %U %W %V %G %u %w %y %C %e %D",
    "%Z %z",
    "%% literal text %%",
    "%Y\u5e74%m\u6708%d\u65e5 \u00e9t\u00e9",
    # glibc's extensions and malformed conversions: whatever C does, both must do.
    "%-d %_m %^a %#b %010Y %Ey %Od %n%t",
    "%Q %5 100%",
]


def ask(s, port, fmt):
    s.sendto(fmt, (HOST, port))
    data, addr = s.recvfrom(1024)
    if addr != (HOST, port):
        sys.exit("reply from %r, not from the server" % (addr,))
    return data.decode("utf-8")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    port = int(sys.argv[1])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(TIMEOUT)

    for fmt in SAME_AS_PYTHON:
        for attempt in range(3):
            before = time.strftime(fmt)
            got = ask(s, port, fmt.encode("utf-8"))
            after = time.strftime(fmt)
            if got in (before, after):
                break
            if before == after:
                sys.exit("format %r: server said %r, Python says %r" % (fmt, got, before))
        else:
            sys.exit("format %r: server said %r, Python %r" % (fmt, got, before))

    for fmt in (b"", b"%F %X", b"%Y-%m-%d %H:%M:%S"):
        got = ask(s, port, fmt)
        if not SHAPE.match(got):
            sys.exit("format %r: %r is not YYYY-MM-DD HH:MM:SS" % (fmt, got))

    got = ask(s, port, b"%99999Y")
    if not got.startswith("error:"):
        sys.exit("a huge output must be refused, got %r" % got[:80])
    s.close()
    print("ok")


if __name__ == "__main__":
    main()

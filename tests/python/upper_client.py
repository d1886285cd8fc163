#!/usr/bin/env python3
"""Python client for tests/example_upper.rs, written the tutorials' way: the plain `socket`
module, `s.send(...)` / `s.recv(1024)` over TCP, `sendto` / `recvfrom(1024)` over UDP.
Stdlib only.

Usage: upper_client.py tcp|udp PORT
  tcp  one connection, several round trips (ASCII, UTF-8, digits and punctuation), then close
  udp  one datagram per message, including an empty one
Exit status 0 when every reply is the message upper-cased; otherwise a message on stderr
and status 1.
"""

import socket
import sys

HOST = "127.0.0.1"
TIMEOUT = 10.0
MESSAGES = [
    b"hello world",
    "h\u00e9llo w\u00f6rld, \u4f60\u597d".encode("utf-8"),
    b"MiXeD 123 !?~",
]


def expect(got, want, what):
    if got != want:
        sys.exit("upper %s: sent %r, want %r, got %r" % (what[0], what[1], want, got))


def tcp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    s.connect((HOST, port))
    for msg in MESSAGES:
        s.send(msg)
        # The server replies per read, so the reply is as long as the message; a short
        # recv is allowed by TCP, hence the loop around recv(1024).
        data = b""
        while len(data) < len(msg):
            chunk = s.recv(1024)
            if not chunk:
                sys.exit("upper tcp: server closed the connection after %r" % data)
            data += chunk
        expect(data, msg.upper(), ("tcp", msg))
        # Python's bytes.upper() is ASCII-only too: the text must still decode.
        data.decode("utf-8")
    s.close()


def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(TIMEOUT)
    for msg in MESSAGES + [b""]:
        s.sendto(msg, (HOST, port))
        data, addr = s.recvfrom(1024)
        expect(addr, (HOST, port), ("udp sender", msg))
        expect(data, msg.upper(), ("udp", msg))
    s.close()


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("tcp", "udp"):
        sys.exit(__doc__)
    {"tcp": tcp, "udp": udp}[sys.argv[1]](int(sys.argv[2]))
    print("ok")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Python peer for tests/framing_python.rs: speaks the tutorials' wire formats exactly as
the tutorials write them (struct.pack('i', n), json.dumps, hashlib.md5), stdlib only.

Usage: framing_peer.py MODE PORT
  send     Python -> Rust: frames, a JSON-header upload, the upload protocol (msg, file,
           close); then waits for the server's one-byte verdict.
  receive  Rust -> Python: sends a command line raw, reads the remote-command reply
           ({"filename", "total_size", "md5"} + body), frames, a JSON-header file and a
           framed file, checking every byte and that Rust's JSON headers are byte-identical
           to what json.dumps would write.
Exit status 0 on success; on failure a message on stderr and status 1.
"""

import hashlib
import json
import socket
import struct
import sys

TIMEOUT = 10.0


def pattern(n, seed):
    """Deterministic bytes, mirrored by `pattern` in framing_python.rs."""
    return bytes((i * 7 + seed) % 251 for i in range(n))


def recv_exact(conn, n):
    chunks = []
    while n:
        chunk = conn.recv(min(n, 65536))
        if not chunk:
            raise EOFError("connection closed with %d bytes still expected" % n)
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def send_data(conn, data):
    """The tutorials' send_data: header and payload in two sends."""
    conn.send(struct.pack('i', len(data)))
    conn.sendall(data)


def recv_data(conn):
    (n,) = struct.unpack('i', recv_exact(conn, 4))
    return recv_exact(conn, n)


def recv_json_header(conn):
    raw = recv_data(conn)
    header = json.loads(raw.decode('utf-8'))
    if json.dumps(header).encode() != raw:
        raise AssertionError("header %r is not what json.dumps writes: %r"
                             % (raw, json.dumps(header)))
    return header


def send_mode(conn):
    # 1. Plain frames, the tutorials' way, then several coalesced into one sendall
    #    (a sticky packet on purpose).
    for data in [b"hello", b"", "你好, world".encode('utf-8'), pattern(100000, 1)]:
        send_data(conn, data)
    sticky = b"".join(struct.pack('i', len(d)) + d for d in [b"one", b"two", b"three"])
    conn.sendall(sticky)

    # 2. JSON-header upload: {"file_name", "file_size"} then the raw body.
    body = pattern(300000, 2)
    header = json.dumps({"file_name": "上传.bin", "file_size": len(body)}).encode('utf-8')
    conn.send(struct.pack('i', len(header)))
    conn.send(header)
    for i in range(0, len(body), 8192):
        conn.send(body[i:i + 8192])

    # 3. The upload protocol: a message, a file, close.
    send_data(conn, json.dumps({"msg_type": "msg"}).encode('utf-8'))
    send_data(conn, "你好 from Python".encode('utf-8'))
    send_data(conn, json.dumps({"msg_type": "file", "file_name": "proto.bin"}).encode('utf-8'))
    send_data(conn, pattern(70000, 3))
    send_data(conn, b'close')

    verdict = recv_exact(conn, 1)
    if verdict != b'K':
        raise AssertionError("server verdict %r" % verdict)


def receive_mode(conn):
    # 1. The remote-command exchange: raw command line in one send, JSON-header reply.
    conn.send("ls -l".encode('utf-8'))
    header = recv_json_header(conn)
    body = recv_exact(conn, header["total_size"])
    if header["filename"] != "ls -l":
        raise AssertionError("filename %r" % header["filename"])
    if hashlib.md5(body).hexdigest() != header["md5"]:
        raise AssertionError("md5 mismatch")
    if body != pattern(200000, 4):
        raise AssertionError("command output differs")

    # 2. Frames written by Rust (Framing::python()).
    expected = [b"hello", b"", "你好".encode('utf-8'), pattern(50000, 5)]
    for want in expected:
        got = recv_data(conn)
        if got != want:
            raise AssertionError("frame %r... differs from %r..." % (got[:20], want[:20]))

    # 3. A file as a JSON-header message ({"file_name", "file_size"} + raw bytes).
    header = recv_json_header(conn)
    if header["file_name"] != "数据.bin":
        raise AssertionError("file_name %r" % header["file_name"])
    data = recv_exact(conn, header["file_size"])
    if data != pattern(123457, 6):
        raise AssertionError("file body differs")

    # 4. The same file as one frame.
    if recv_data(conn) != data:
        raise AssertionError("framed file differs")

    # 5. Clean close: the server sends nothing more.
    if conn.recv(1) != b"":
        raise AssertionError("unexpected bytes after the last frame")


def main():
    mode, port = sys.argv[1], int(sys.argv[2])
    conn = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    conn.settimeout(TIMEOUT)
    try:
        {"send": send_mode, "receive": receive_mode}[mode](conn)
    finally:
        conn.close()
    print("python peer: %s ok" % mode)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # report and fail; the Rust test shows stderr
        print("python peer failed: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        sys.exit(1)

#!/usr/bin/env python3
"""The tutorials' remote-command client, for tests/example_remote_cmd.rs: the command goes
out raw in one send; the reply is struct.pack('i', len(header)) + a JSON header
{"filename", "total_size", "md5"} + total_size bytes (stdout then stderr). stdlib only.

Usage: remote_cmd_client.py PORT      (prints "ok" when every reply checks out)
"""

import hashlib
import json
import socket
import struct
import sys

CASES = [
    ("echo hi", b"hi\n"),
    ("echo out; echo err >&2", b"out\nerr\n"),
    ("printf '%s' 你好", "你好".encode('utf-8')),
    ("head -c 200000 /dev/zero", bytes(200000)),
]


def main():
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.settimeout(10)
    client.connect(('127.0.0.1', int(sys.argv[1])))
    for cmd, want in CASES:
        client.send(cmd.encode('utf-8'))

        header_len = struct.unpack('i', client.recv(4))[0]
        header = json.loads(client.recv(header_len).decode('utf-8'))
        total_size = header['total_size']

        recv_size = 0
        data = b''
        while recv_size < total_size:
            res = client.recv(1024)
            if not res:
                sys.exit("connection closed early")
            data += res
            recv_size += len(res)

        if hashlib.md5(data).hexdigest() != header['md5']:
            sys.exit("md5 mismatch for %r" % cmd)
        if data != want or header['filename'] != cmd:
            sys.exit("%r: got %r (header %r)" % (cmd, data[:100], header))
        print(data.decode('utf-8')[:40])
    client.close()
    print("ok")


if __name__ == '__main__':
    main()

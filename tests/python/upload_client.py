#!/usr/bin/env python3
"""The tutorials' upload client, for tests/example_upload.rs: a message, a file, `close`,
each item a JSON header frame then its payload frame, framed with struct.pack('i', n).
stdlib only.

Usage: upload_client.py PORT FILE
"""

import json
import os
import socket
import struct
import sys


def send_data(conn, data):
    conn.send(struct.pack('i', len(data)))
    conn.sendall(data)


def main():
    port, path = int(sys.argv[1]), sys.argv[2]
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.settimeout(10)
    client.connect(('127.0.0.1', port))

    send_data(client, json.dumps({"msg_type": "msg"}).encode('utf-8'))
    send_data(client, "你好 from Python".encode('utf-8'))

    file_name = os.path.basename(path)
    send_data(client, json.dumps({"msg_type": "file", "file_name": file_name}).encode('utf-8'))
    with open(path, 'rb') as f:
        data = f.read()
    send_data(client, data)

    send_data(client, b'close')
    # The server sends nothing; it closes once it has stored the file.
    if client.recv(1) != b'':
        sys.exit("the server sent something")
    client.close()
    print("ok")


if __name__ == '__main__':
    main()

#!/usr/bin/env python3
"""Runs a client script of this folder unchanged, with every TCP socket it connects wrapped
by Python's `ssl` module (`SSLContext.wrap_socket`), trusting the CA bundle given: what a
Python user does to talk to a TLS server. stdlib only.

Usage: tls_wrap.py CA_FILE SCRIPT [ARGS...]
"""

import runpy
import socket
import ssl
import sys

_socket = socket.socket


class WrappedSocket:
    """A socket.socket stand-in: connect() connects, then runs the TLS handshake."""

    def __init__(self, *args, **kwargs):
        self._sock = _socket(*args, **kwargs)

    def connect(self, address):
        self._sock.connect(address)
        self._sock = CONTEXT.wrap_socket(self._sock, server_hostname="localhost")

    def close(self):
        self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __getattr__(self, name):
        return getattr(self._sock, name)


def main():
    global CONTEXT
    ca, script = sys.argv[1], sys.argv[2]
    CONTEXT = ssl.create_default_context(cafile=ca)
    socket.socket = WrappedSocket
    sys.argv = [script] + sys.argv[3:]
    runpy.run_path(script, run_name="__main__")


if __name__ == '__main__':
    main()

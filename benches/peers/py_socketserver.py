#!/usr/bin/env python3
"""Python's socketserver as a peer server for benches/loadgen (the Rust harness starts it).

    python3 benches/peers/py_socketserver.py serve tcp-echo|tcp-sink|udp-echo [--backlog N]
    python3 benches/peers/py_socketserver.py shutdown-latency N

`serve` binds 127.0.0.1:0, prints `READY 127.0.0.1:PORT` on stdout and serves until killed
(the harness sends SIGTERM). The handlers are what the Python tutorials write:

- tcp-echo: ThreadingTCPServer, `recv(65536)` / `sendall` until EOF;
- tcp-sink: ThreadingTCPServer, `recv(65536)` until EOF, then the byte count (8 bytes,
  little-endian) is sent back so the client can time the whole upload;
- udp-echo: ThreadingUDPServer, `sendto(data, client_address)`.

`request_queue_size` is raised from Python's 5 to 1024 (the crate's default backlog; the Rust
peers get 1024 too), so that the comparison measures the servers, not SYN drops in a full
accept queue. `--backlog 5` gives Python's default.

`shutdown-latency N` measures N times, on an idle ThreadingTCPServer, the time from
`shutdown()` being called to `serve_forever()` returning, and prints
`SHUTDOWN median_ms max_ms`. Python polls its shutdown flag every `poll_interval` (0.5 s).
"""

import socketserver
import statistics
import struct
import sys
import threading
import time


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        while True:
            data = sock.recv(65536)
            if not data:
                return
            sock.sendall(data)


class Sink(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        n = 0
        while True:
            data = sock.recv(65536)
            if not data:
                break
            n += len(data)
        sock.sendall(struct.pack("<Q", n))


class UdpEcho(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        sock.sendto(data, self.client_address)


def serve(service, backlog):
    if service == "udp-echo":
        cls, handler = socketserver.ThreadingUDPServer, UdpEcho
    elif service == "tcp-echo":
        cls, handler = socketserver.ThreadingTCPServer, Echo
    elif service == "tcp-sink":
        cls, handler = socketserver.ThreadingTCPServer, Sink
    else:
        sys.exit(f"unknown service {service!r}")

    class Server(cls):
        allow_reuse_address = True
        daemon_threads = True
        request_queue_size = backlog

        def handle_error(self, request, client_address):
            # Resets when the load generator closes its connections are expected; print
            # anything else, as socketserver does.
            if not isinstance(sys.exc_info()[1], ConnectionError):
                super().handle_error(request, client_address)

    server = Server(("127.0.0.1", 0), handler)
    host, port = server.server_address[:2]
    print(f"READY {host}:{port}", flush=True)
    server.serve_forever()


def shutdown_latency(reps):
    samples = []
    for _ in range(reps):
        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
        returned = []

        def run():
            server.serve_forever()
            returned.append(time.perf_counter())

        t = threading.Thread(target=run)
        t.start()
        time.sleep(0.02)  # idle, inside select()
        start = time.perf_counter()
        server.shutdown()
        t.join()
        samples.append((returned[0] - start) * 1000.0)
        server.server_close()
    print(f"SHUTDOWN {statistics.median(samples):.3f} {max(samples):.3f}", flush=True)


def main():
    args = sys.argv[1:]
    if len(args) >= 2 and args[0] == "serve":
        backlog = 1024
        if "--backlog" in args:
            backlog = int(args[args.index("--backlog") + 1])
        serve(args[1], backlog)
    elif len(args) == 2 and args[0] == "shutdown-latency":
        shutdown_latency(int(args[1]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass

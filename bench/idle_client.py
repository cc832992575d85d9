#!/usr/bin/env python3
"""Opens N TLS connections to 127.0.0.1:PORT, sends one small GET on each (so each is a real
HTTP/1.1 keep-alive connection, not a half-open handshake), and then holds them all idle.

Protocol with bench/run, one line each on stdout:
    OPEN <opened> <failed> <seconds>   once every connection has had its answer
then it waits for a line (or EOF) on stdin, and prints
    ALIVE <n>                          connections the server had not closed meanwhile
and exits. Full handshakes only: no session is reused.

Blocking sockets in a few threads rather than asyncio: the handshake and the waits release the
GIL, and the per-connection Python cost is a third of asyncio's, so 10k connections open in a few
seconds on one core instead of twenty.

Usage: idle_client.py PORT N [THREADS]
"""

import os
import resource
import select
import socket
import ssl
import sys
import threading
import time

REQUEST = b"GET /v2/bench/manifests/latest HTTP/1.1\r\nHost: localhost\r\n\r\n"


def open_one(port, ctx):
    raw = socket.create_connection(("127.0.0.1", port), timeout=30)
    conn = ctx.wrap_socket(raw, server_hostname="localhost")
    conn.sendall(REQUEST)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the body")
        body += chunk
    return conn


def is_alive(conn):
    """Idle and open: nothing to read, or only TLS records that carry no data (session tickets)."""
    poller = select.poll()  # select() cannot take descriptors above 1023
    poller.register(conn, select.POLLIN)
    if not poller.poll(0) and not conn.pending():
        return True
    conn.setblocking(False)
    try:
        return conn.recv(1) != b""
    except ssl.SSLWantReadError:
        return True
    except OSError:
        return False


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    port, n = int(sys.argv[1]), int(sys.argv[2])
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 8

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the handshake is what is measured, not our trust store
    ctx.set_alpn_protocols(["http/1.1"])

    conns, errors, lock = [], [], threading.Lock()

    def worker(count):
        for _ in range(count):
            try:
                conn = open_one(port, ctx)
                with lock:
                    conns.append(conn)
            except (OSError, ValueError) as err:
                with lock:
                    errors.append(type(err).__name__)

    started = time.monotonic()
    share = [n // threads + (1 if i < n % threads else 0) for i in range(threads)]
    pool = [threading.Thread(target=worker, args=(c,)) for c in share]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    print(f"OPEN {len(conns)} {len(errors)} {time.monotonic() - started:.2f}", flush=True)
    if errors:
        print(f"# errors: {', '.join(sorted(set(errors)))}", file=sys.stderr, flush=True)

    sys.stdin.readline()
    alive = sum(1 for c in conns if is_alive(c))
    print(f"ALIVE {alive}", flush=True)
    # Closing 10k TLS sessions one by one measures nothing; the kernel closes them.
    os._exit(0)


if __name__ == "__main__":
    main()

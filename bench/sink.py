#!/usr/bin/env python3
"""An upload sink for the benchmark: an HTTP/1.1 server that reads every request body to its end,
throws it away, and only then answers `201 Created`.

Why not nginx `return 201`: nginx answers before it has read the body and discards the rest behind
the response, so a proxy in front sees its upstream finish early and the figure would no longer be
"bytes carried to the upstream". This sink answers after the last byte, like a registry does.

It reads with `recv_into` into one 1 MiB buffer, so a body costs one copy out of the kernel and
no Python objects per byte; chunked bodies are parsed without copying the data. `bench/run` measures
it directly (the `direct` row of the upload workloads) to show it is not the bottleneck.

Usage: sink.py PORT   (listens on 127.0.0.1 only; one thread per connection; keep-alive)
"""

import socket
import sys
import threading

BUF = 1 << 20


class Conn:
    """A buffered reader over one client socket: `line()` for heads and chunk sizes,
    `skip(n)` for body bytes."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray(BUF)
        self.view = memoryview(self.buf)
        self.start = 0
        self.end = 0

    def fill(self):
        if self.start == self.end:
            self.start = self.end = 0
        elif self.end == len(self.buf):
            # Keep the unread tail (a partial line) and read after it.
            tail = self.end - self.start
            self.buf[:tail] = self.buf[self.start:self.end]
            self.start, self.end = 0, tail
        n = self.sock.recv_into(self.view[self.end:])
        if n == 0:
            raise EOFError
        self.end += n

    def line(self):
        while True:
            i = self.buf.find(b"\n", self.start, self.end)
            if i >= 0:
                out = bytes(self.buf[self.start:i + 1])
                self.start = i + 1
                return out
            if self.end - self.start > 64 * 1024:
                raise ValueError("line too long")
            self.fill()

    def skip(self, n):
        while n > 0:
            if self.start == self.end:
                self.start = self.end = 0
                got = self.sock.recv_into(self.view, min(n, BUF))
                if got == 0:
                    raise EOFError
                n -= got
                continue
            take = min(n, self.end - self.start)
            self.start += take
            n -= take


def serve(sock):
    conn = Conn(sock)
    try:
        while True:
            request = conn.line()
            if not request.strip():
                continue
            headers = {}
            while True:
                h = conn.line()
                if h in (b"\r\n", b"\n"):
                    break
                name, _, value = h.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            if headers.get("expect", "").lower() == "100-continue":
                sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            if "chunked" in headers.get("transfer-encoding", "").lower():
                while True:
                    size = int(conn.line().split(b";")[0].strip(), 16)
                    if size == 0:
                        while conn.line() not in (b"\r\n", b"\n"):  # trailers
                            pass
                        break
                    conn.skip(size + 2)  # data and its CRLF
            else:
                conn.skip(int(headers.get("content-length", "0")))
            close = headers.get("connection", "").lower() == "close"
            sock.sendall(
                b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n"
                b"Docker-Distribution-Api-Version: registry/2.0\r\n"
                + (b"Connection: close\r\n" if close else b"")
                + b"\r\n"
            )
            if close:
                break
    except (EOFError, ConnectionError, ValueError):
        pass
    finally:
        sock.close()


def main():
    port = int(sys.argv[1])
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(1024)
    while True:
        sock, _ = listener.accept()
        threading.Thread(target=serve, args=(sock,), daemon=True).start()


if __name__ == "__main__":
    main()

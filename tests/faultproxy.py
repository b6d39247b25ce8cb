"""A reverse HTTP proxy on 127.0.0.1 that breaks a share of the requests passing through.

    with FaultProxy("http://127.0.0.1:<moto port>", rate=0.3, seed=1) as proxy:
        ... COLDVAULT_S3_ENDPOINT=proxy.endpoint ...
        proxy.injected        # Counter: how many faults of each kind were injected

Each request is forwarded to `upstream` (one fresh upstream connection per request) and its
answer relayed with a Content-Length. With probability `rate` (a seeded RNG: the same seed,
the same choices for the same order of requests) one fault from `kinds` is injected instead:

    reset-request   the client's connection is reset before its request body is read (send)
    503             a SlowDown error; the request never reaches upstream
    500             an InternalError, after upstream did the work (a lost reply)
    reset-body      headers and part of the body, then a TCP reset
    truncate        headers promising the full Content-Length, part of the body, then close
                    (without a body: part of the status code, then close)
    stall           part of the answer, a pause of `stall` seconds, then the rest (the client
                    may give up first: a read timeout)

For an answer without a body (HEAD, PUT, DELETE), "part of the body" is part of the headers.
A broken connection is closed; others are kept alive as HTTP/1.1 clients expect.
"""

from __future__ import annotations

import collections
import http.client
import random
import socket
import struct
import threading
import time
import urllib.parse

KINDS = ("reset-request", "503", "500", "reset-body", "truncate", "stall")

_ERROR_BODY = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Error><Code>{code}</Code><Message>injected by faultproxy</Message>"
    "<RequestId>faultproxy</RequestId></Error>"
)
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection", "te", "upgrade"}


class _Broken(Exception):
    """The client connection is unusable: stop serving it."""


class FaultProxy:
    def __init__(self, upstream: str, rate: float = 0.3, seed: int = 0, kinds=KINDS, stall: float = 1.5):
        parts = urllib.parse.urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.rate = rate
        self.kinds = tuple(kinds)
        self.stall = stall
        self.injected: collections.Counter = collections.Counter()
        self.requests = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.endpoint = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._clients: set[socket.socket] = set()

    # --- lifetime ---------------------------------------------------------------------

    def __enter__(self) -> FaultProxy:
        thread = threading.Thread(target=self._accept_loop, name="faultproxy-accept", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc) -> None:
        self._stopping.set()
        self._listener.close()
        with self._lock:
            clients = list(self._clients)
        for conn in clients:
            _close(conn)
        for thread in list(self._threads):
            thread.join(timeout=10)

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            conn.settimeout(30)
            with self._lock:
                self._clients.add(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), name="faultproxy-conn", daemon=True)
            thread.start()
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]

    # --- one client connection --------------------------------------------------------

    def _decide(self) -> str | None:
        with self._lock:
            self.requests += 1
            if self._rng.random() >= self.rate:
                return None
            kind = self._rng.choice(self.kinds)
            self.injected[kind] += 1
            return kind

    def _serve(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        try:
            while not self._stopping.is_set():
                head = _read_head(reader)
                if head is None:
                    return
                method, target, headers = head
                fault = self._decide()
                if fault == "reset-request":
                    _reset(conn)
                    return
                if headers.get("expect", "").lower() == "100-continue":
                    conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                body = _read_body(reader, headers)
                if fault == "503":
                    self._send_error(conn, 503, "SlowDown")
                    return
                status, reason, out_headers, out_body, length = self._forward(method, target, headers, body)
                if fault == "500":
                    self._send_error(conn, 500, "InternalError")
                    return
                answer = _render(status, reason, out_headers, out_body, length)
                self._send_answer(conn, answer, fault)
                if fault in ("reset-body", "truncate"):
                    return
        except (_Broken, OSError, http.client.HTTPException):
            return
        finally:
            reader.close()
            _close(conn)
            with self._lock:
                self._clients.discard(conn)

    def _forward(self, method, target, headers, body):
        upstream = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            upstream.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in headers.items():
                if name not in _HOP_BY_HOP and name != "content-length":
                    upstream.putheader(name, value)
            upstream.putheader("Content-Length", str(len(body)))
            upstream.endheaders(body)
            response = upstream.getresponse()
            data = response.read()
            out = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP | {"content-length"}]
            # A HEAD answer announces the length of the body a GET would have.
            length = response.getheader("content-length") if method == "HEAD" else len(data)
            return response.status, response.reason, out, data, length
        finally:
            upstream.close()

    def _send_error(self, conn, status: int, code: str) -> None:
        body = _ERROR_BODY.format(code=code).encode()
        reason = {500: "Internal Server Error", 503: "Service Unavailable"}[status]
        conn.sendall(_render(status, reason, [("Content-Type", "application/xml"), ("Connection", "close")],
                             body, len(body)))

    def _send_answer(self, conn, answer: bytes, fault: str | None) -> None:
        if fault is None:
            conn.sendall(answer)
            return
        head_length = answer.index(b"\r\n\r\n") + 4
        with self._lock:
            if fault == "truncate":
                # http.client takes headers, even a status line, cut off by a clean close
                # for whole ones: cut in the body, or, in an answer without one, before
                # the status code is complete ("HTTP/1.1 20").
                if head_length < len(answer):
                    cut = self._rng.randrange(head_length, len(answer))
                else:
                    cut = self._rng.randrange(1, len("HTTP/1.1 200"))
            else:
                cut = self._rng.randrange(1, len(answer))
        conn.sendall(answer[:cut])
        if fault == "reset-body":
            _reset(conn)
        elif fault == "truncate":
            conn.shutdown(socket.SHUT_RDWR)
        elif fault == "stall":
            if self._stopping.wait(self.stall):
                raise _Broken()
            conn.sendall(answer[cut:])


def _read_head(reader):
    """(method, target, headers with lower-case names) of the next request; None at EOF."""
    line = reader.readline(65537)
    if not line:
        return None
    parts = line.decode("latin-1").split()
    if len(parts) != 3:
        raise _Broken()
    headers = {}
    while True:
        line = reader.readline(65537)
        if not line:
            raise _Broken()
        if line in (b"\r\n", b"\n"):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return parts[0], parts[1], headers


def _read_body(reader, headers) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(reader.readline().split(b";")[0], 16)
            data = reader.read(size + 2)[:size]  # the chunk and its CRLF
            if size == 0:
                while reader.readline() not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                return b"".join(chunks)
            chunks.append(data)
    length = int(headers.get("content-length", "0"))
    body = reader.read(length)
    if len(body) != length:
        raise _Broken()
    return body


def _render(status, reason, headers, body: bytes, length: int | None) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{k}: {v}" for k, v in headers]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _reset(conn: socket.socket) -> None:
    """Close with a TCP RST instead of a FIN: the peer sees 'connection reset by peer'."""
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    _close(conn)


def _close(conn: socket.socket) -> None:
    try:
        conn.close()
    except OSError:
        pass

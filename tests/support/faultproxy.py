"""A small fault-injecting TCP proxy for tests: boto3 -> proxy -> moto's S3 server.

Written by hand because the tools that do this (toxiproxy, mitmproxy) are outside servers
or heavy dependencies; this one is a few threads on loopback that a test starts and stops.

It reads HTTP/1.1 requests from the client (heads, then bodies by Content-Length or chunked
encoding) so faults apply per *request*, not per connection: boto3 keeps connections alive,
and a per-connection plan would stop injecting after the first pooled connection. Responses
are relayed as raw bytes. Each request takes the next fault from the plan, or passes:

- `reset`: close the client's socket with SO_LINGER 0, so the client sees ECONNRESET;
- `stall`: read the request and never answer, so the client's read timeout fires;
- `http_500` / `http_503`: answer a canned S3 XML error (InternalError / SlowDown) and close.

`injected` counts what was done, so a test can assert that faults really happened.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable
from types import TracebackType
from urllib.parse import urlparse

FAULTS = ("reset", "stall", "http_500", "http_503")
_MAX_HEAD = 64 * 1024
_MAX_CONNECTIONS = 64

_CANNED = {
    "http_500": (
        500,
        "Internal Server Error",
        "InternalError",
        "We encountered an internal error.",
    ),
    "http_503": (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
}


def _canned_response(fault: str) -> bytes:
    status, reason, code, message = _CANNED[fault]
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        "<RequestId>faultproxy</RequestId></Error>"
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    return head + body


class _Reader:
    """Buffered reads off a socket: the next line, exactly n bytes, or the request head."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buf += chunk
        return bool(chunk)

    def until(self, marker: bytes, limit: int = _MAX_HEAD) -> bytes | None:
        while marker not in self.buf:
            if len(self.buf) > limit or not self._fill():
                return None
        end = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:end], self.buf[end:]
        return out

    def exactly(self, n: int) -> Iterable[bytes]:
        while n > 0:
            if not self.buf and not self._fill():
                raise ConnectionError("client closed inside a request body")
            out, self.buf = self.buf[:n], self.buf[n:]
            n -= len(out)
            yield out


def _request_body(reader: _Reader, head: bytes) -> Iterable[bytes]:
    """The request's body in pieces, as framed by its head (Content-Length or chunked)."""
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        while True:
            size_line = reader.until(b"\r\n")
            if size_line is None:
                raise ConnectionError("bad chunk")
            yield size_line
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                while (line := reader.until(b"\r\n")) not in (None, b"\r\n"):
                    yield line  # a trailer
                if line is None:
                    raise ConnectionError("bad trailer")
                yield line
                return
            yield from reader.exactly(size + 2)
    else:
        yield from reader.exactly(int(headers.get(b"content-length", b"0")))


class FaultProxy:
    """`with FaultProxy(moto_url) as proxy:` then point boto3 at `proxy.url`.

    `proxy.plan("reset", "http_500")` queues faults for the next requests (optionally only
    those `match(method, path)` accepts); `proxy.every(n, kinds)` injects into every n-th
    request from then on, cycling through `kinds`."""

    def __init__(self, upstream_url: str) -> None:
        parsed = urlparse(upstream_url)
        if parsed.hostname not in ("127.0.0.1", "localhost"):
            raise ValueError("the fault proxy only forwards to loopback")
        self.upstream = ("127.0.0.1", parsed.port or 80)
        self.injected: Counter[str] = Counter()
        self.requests = 0
        self._planned: deque[str] = deque()
        self._match: Callable[[str, str], bool] = lambda method, path: True
        self._every: tuple[int, tuple[str, ...]] | None = None
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(_MAX_CONNECTIONS)
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stopped = threading.Event()
        self._slots = threading.BoundedSemaphore(_MAX_CONNECTIONS)

    # ----------------------------------------------------------------------------- the plan

    def plan(self, *faults: str, match: Callable[[str, str], bool] | None = None) -> None:
        unknown = set(faults) - set(FAULTS) - {"pass"}
        if unknown:
            raise ValueError(f"unknown fault(s) {sorted(unknown)}")
        with self._lock:
            self._planned.extend(faults)
            self._match = match or (lambda method, path: True)

    def every(self, n: int, kinds: Iterable[str]) -> None:
        kinds = tuple(kinds)
        if n < 1 or not kinds or set(kinds) - set(FAULTS):
            raise ValueError("every(n >= 1, known fault kinds)")
        with self._lock:
            self._every = (n, kinds)

    def clear(self) -> None:
        with self._lock:
            self._planned.clear()
            self._every = None

    def _next_fault(self, method: str, path: str) -> str | None:
        with self._lock:
            self.requests += 1
            fault: str | None = None
            if self._planned and self._match(method, path):
                fault = self._planned.popleft()
            elif self._every is not None:
                n, kinds = self._every
                if self.requests % n == 0:
                    fault = kinds[(self.requests // n - 1) % len(kinds)]
            if fault == "pass":
                fault = None
            if fault is not None:
                self.injected[fault] += 1
            return fault

    @property
    def total_injected(self) -> int:
        with self._lock:
            return sum(self.injected.values())

    # ---------------------------------------------------------------------------- the server

    def __enter__(self) -> FaultProxy:
        threading.Thread(target=self._accept, name="faultproxy-accept", daemon=True).start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        self._stopped.set()
        self._listener.close()
        with self._lock:
            sockets, self._sockets = list(self._sockets), set()
        for sock in sockets:
            _close(sock)

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._slots.acquire(timeout=5):
                _reset(client)
                continue
            self._track(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            reader = _Reader(client)
            while not self._stopped.is_set():
                head = reader.until(b"\r\n\r\n")
                if head is None:
                    return
                method, path = [*head.split(b" ", 2), b"", b""][:2]
                fault = self._next_fault(method.decode("latin-1"), path.decode("latin-1"))
                if fault == "reset":
                    _reset(client)
                    return
                if fault in _CANNED:
                    client.sendall(_canned_response(fault))
                    return
                if fault == "stall":
                    for _ in _request_body(reader, head):
                        pass
                    while client.recv(65536):  # answer nothing until the client gives up
                        pass
                    return
                if upstream is None:
                    upstream = socket.create_connection(self.upstream, timeout=30)
                    upstream.settimeout(None)
                    self._track(upstream)
                    threading.Thread(target=_relay, args=(upstream, client), daemon=True).start()
                upstream.sendall(head)
                for piece in _request_body(reader, head):
                    upstream.sendall(piece)
        except (OSError, ValueError, ConnectionError):
            return
        finally:
            _close(client)
            if upstream is not None:
                _close(upstream)
            self._slots.release()


def _relay(src: socket.socket, dst: socket.socket) -> None:
    try:
        while chunk := src.recv(65536):
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        _close(dst)


def _reset(sock: socket.socket) -> None:
    """Close so the peer gets RST (ECONNRESET), not an orderly FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    _close(sock)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()

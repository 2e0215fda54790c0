"""A raw HTTP/1.1 client for hostile-input tests: it sends exactly the bytes it is given.

`requests` refuses to send a NUL in a header, a non-UTF-8 path or a malformed chunk; a server
must still answer them well, so these tests write the request themselves::

    answer = RawHTTP("127.0.0.1", port).send("GET", "/healthz", headers={"X-A": "b"})
    answer.status, answer.headers["content-type"], answer.json()
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from dataclasses import dataclass
from typing import Any

TIMEOUT = 15.0


@dataclass
class RawAnswer:
    """A parsed HTTP response: status, lower-cased headers, body bytes."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """Return the body parsed as JSON."""
        return json.loads(self.body)


def chunked(body: bytes, *, size: int = 8192) -> bytes:
    """Return `body` framed with Transfer-Encoding: chunked."""
    parts = [b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size]) for i in range(0, len(body), size)]
    return b"".join(parts) + b"0\r\n\r\n"


class RawHTTP:
    """Send one request per connection (Connection: close) and read the whole answer."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    def send(self, method: str | bytes, target: str | bytes, *, headers: dict[str, Any] | None = None,
             body: bytes = b"", framing: str = "length") -> RawAnswer:
        """Send a request; `framing` is "length" (Content-Length), "chunked" or "none"."""
        lines = [_bytes(method) + b" " + _bytes(target) + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
        lines += [_bytes(k) + b": " + _bytes(v) for k, v in (headers or {}).items()]
        if framing == "length":
            lines.append(b"Content-Length: %d" % len(body))
        elif framing == "chunked":
            lines.append(b"Transfer-Encoding: chunked")
            body = chunked(body)
        return self.send_bytes(b"\r\n".join(lines) + b"\r\n\r\n" + body)

    def send_bytes(self, data: bytes) -> RawAnswer:
        """Send raw bytes from a thread (a server may answer before it has read them all) and parse the answer."""
        with socket.create_connection((self.host, self.port), timeout=TIMEOUT) as sock:
            writer = threading.Thread(target=_send_quietly, args=(sock, data), daemon=True)
            writer.start()
            received = _read_all(sock)
            writer.join(timeout=TIMEOUT)
        return parse(received)


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    # The server may answer and close before reading everything: expected for refusals.
    with contextlib.suppress(OSError):
        sock.sendall(data)


def _read_all(sock: socket.socket) -> bytes:
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass  # a reset after the answer arrived: the server closed with our bytes unread
    return received


def parse(raw: bytes) -> RawAnswer:
    """Parse an HTTP/1.1 response that ends at connection close (or has a Content-Length)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    while head.startswith(b"HTTP/1.1 1"):  # an interim answer (100 Continue): the real one follows
        head, _, body = body.partition(b"\r\n\r\n")
    if not head:
        raise AssertionError("the server closed the connection without an answer")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = body[:int(headers["content-length"])]
    return RawAnswer(int(status_line.split()[1]), headers, body)


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


__all__ = ["RawAnswer", "RawHTTP", "chunked", "parse"]

"""A small in-thread HTTP server on 127.0.0.1 for fake exporters and webhook receivers."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple, Self

from werkzeug.serving import make_server

from tests.support.services import _Managed


@contextmanager
def serve_app(app: Callable[..., Any]) -> Iterator[str]:
    """Serve a WSGI app on a free loopback port from a thread; yield its base URL, then stop it."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="test-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class RecordedRequest(NamedTuple):
    """One request seen by a ``LoopbackHTTPServer``."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Responder = Callable[[RecordedRequest], tuple[int, str, bytes]]


class LoopbackHTTPServer(_Managed):
    """An in-thread HTTP server on a free 127.0.0.1 port that records every request.

    ``respond(request) -> (status, content_type, body)`` builds each answer (default: 200 ``{}``).
    """

    def __init__(self, respond: Responder | None = None) -> None:
        self.requests: list[RecordedRequest] = []
        self.respond = respond or (lambda request: (200, "application/json", b"{}"))
        self._server: ThreadingHTTPServer | None = None

    @property
    def target(self) -> str:
        """``127.0.0.1:PORT``, as a Prometheus scrape target."""
        assert self._server is not None, "start() first"
        return f"127.0.0.1:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        """Base URL, ``http://127.0.0.1:PORT``."""
        return f"http://{self.target}"

    def start(self) -> Self:
        """Bind and serve from a daemon thread."""
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()  # returns once serve_forever has left its loop
            self._server.server_close()
            self._server = None


def _handler_for(owner: LoopbackHTTPServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            request = RecordedRequest(self.command, self.path, dict(self.headers), body)
            owner.requests.append(request)
            status, content_type, answer = owner.respond(request)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        do_GET = do_POST = do_PUT = _serve

        def log_message(self, format: str, *args: Any) -> None:  # keeps pytest output clean
            pass

    return Handler

"""A local HTTP server for the secret-store tests: stdlib ``ThreadingHTTPServer`` on 127.0.0.1,
answering what a test's ``route`` function returns and recording every request it received."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

__all__ = ["Request", "RestServer", "rest_server"]


@dataclass
class Request:
    method: str
    path: str  # without the query
    query: str
    headers: dict[str, str]
    body: bytes


# A route gets the request and returns (status, JSON body).
Route = Callable[[Request], tuple[int, object]]


@dataclass
class RestServer:
    url: str
    requests: list[Request] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        parts = urlsplit(self.path)
        request = Request(self.command, parts.path, parts.query, {k.lower(): v for k, v in self.headers.items()},
                          self.rfile.read(length) if length else b"")
        state: RestServer = self.server.state  # type: ignore[attr-defined]
        state.requests.append(request)
        status, body = self.server.route(request)  # type: ignore[attr-defined]
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_LIST = _answer

    def log_message(self, format: str, *args: object) -> None:  # quiet: nothing on stderr
        pass


@contextmanager
def rest_server(route: Route) -> Iterator[RestServer]:
    """Serve ``route`` on 127.0.0.1 (a free port) until the block ends."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    state = RestServer(f"http://127.0.0.1:{httpd.server_address[1]}")
    httpd.state = state  # type: ignore[attr-defined]
    httpd.route = route  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)

"""A small real HTTP server for tests: records every request and answers from a script."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class WebhookServer:
    """Answers each request with the next scripted (status, body) for its path, else 200 {}."""

    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    script: dict[str, list[tuple[int, dict]]] = field(default_factory=dict)

    def answer(self, path: str, *responses: tuple[int, dict]) -> None:
        self.script.setdefault(path, []).extend(responses)

    def calls(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        return [
            r for r in self.requests
            if (method is None or r.method == method) and (path is None or r.path == path)
        ]


@contextmanager
def webhook_server() -> Iterator[WebhookServer]:
    state = WebhookServer()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with lock:
                state.requests.append(Recorded(self.command, self.path, dict(self.headers), body))
                queue = state.script.get(self.path) or []
                status, payload = queue.pop(0) if queue else (200, {"ok": True})
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()

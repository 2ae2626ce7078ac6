"""The alert receiver's FastAPI app on a real uvicorn in a thread of the test process: the real
receiver path (signature check, parser, queue, worker, store, run start) in about a second, for
tests that need a filled store rather than the whole `siaga up` stack."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import uvicorn

API_TOKEN = "siaga-api-token-for-tests"
"""The read API's token (``SIAGA_API_TOKEN``) every test receiver is given (`stack.clean_env`)."""
API = {"Authorization": f"Bearer {API_TOKEN}"}
"""The headers that read ``GET /incidents``."""


def read(url: str, path: str = "/incidents", **params: str) -> Any:
    """A read API answer (``GET /incidents``, ``GET /incidents/<id>``) as JSON, with the token."""
    answer = httpx.get(f"{url}{path}", params=params, headers=API, timeout=10)
    answer.raise_for_status()
    return answer.json()


@contextlib.contextmanager
def serve(app: Any, port: int) -> Iterator[str]:
    """Serve `app` on 127.0.0.1:`port` until the block ends; yield its URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def settle(url: str, timeout: float = 60) -> None:
    """Wait until the receiver's worker has done everything posted so far, runs started included."""
    deadline = time.monotonic() + timeout
    while True:
        health = httpx.get(f"{url}/healthz", timeout=5).json()
        if health["queued"] == 0 and not health["busy"]:
            opened = read(url, state="open")
            if all(i["flow_run_id"] or i["run_error"] for i in opened):
                return
        assert time.monotonic() < deadline, health
        time.sleep(0.1)

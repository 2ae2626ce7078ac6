"""`siaga receiver` as a real process on loopback (started, stopped, killed, restarted), for tests
that need a receiver to outlive or not outlive something: a restart, a kill -9."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx

from siaga.flows.server import free_port

from .stack import clean_env


def signed_headers(secret: str, body: bytes, at: float | None = None) -> dict[str, str]:
    """What `http.request` (and so another Siaga) sends to a generic source."""
    stamp = str(int(time.time() if at is None else at))
    digest = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"X-Siaga-Timestamp": stamp, "X-Siaga-Signature": f"sha256={digest}", "Content-Type": "application/json"}


class ReceiverProcess:
    """One `siaga receiver` on a port of its own; `start()` again after `stop()` or `kill()`
    restarts it on the same port, home and database."""

    def __init__(self, home: Path, runbooks: Path, env: Mapping[str, str]) -> None:
        self.home, self.runbooks = home, runbooks
        self.env = {**clean_env(home), **env}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 60) -> None:
        self.starts += 1
        log = (self.home / f"receiver-{self.starts}.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "siaga.cli", "receiver", "--port", str(self.port), "--runbooks", str(self.runbooks)],
            env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while True:
            assert self.process.poll() is None, f"the receiver exited: {self.output()[-2000:]}"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            assert time.monotonic() < deadline, f"the receiver did not start: {self.output()[-2000:]}"
            time.sleep(0.1)

    def output(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.home.glob("receiver-*.log")))

    def stop(self) -> None:
        """Stop it as a service manager would (SIGTERM)."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """kill -9: no shutdown code runs."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def post(self, source: str, body: bytes, headers: Mapping[str, str]) -> httpx.Response:
        return httpx.post(f"{self.url}/hooks/{source}", content=body, headers=dict(headers), timeout=10)


@contextlib.contextmanager
def receiver_process(home: Path, runbooks: Path, env: Mapping[str, str]) -> Iterator[ReceiverProcess]:
    receiver = ReceiverProcess(home, runbooks, env)
    try:
        yield receiver
    finally:
        receiver.stop()

"""Debian's Alertmanager on loopback, for tests that need real webhooks: started on a config of
the test's own, and alerts posted to its v2 API as Prometheus posts them; `ready_process` runs any
daemon that serves ``/-/ready`` (Prometheus too)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from siaga.flows.server import free_port

from ..conftest import missing

ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


@contextlib.contextmanager
def ready_process(command: list[str], log_path: Path, url: str) -> Iterator[str]:
    """Run `command` (output to `log_path`) until the block ends, once `url`/-/ready answers 200
    (Prometheus and Alertmanager both serve it); yields `url`."""
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log_path.read_text()
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def alertmanager_process(folder: Path, config: str) -> Iterator[str]:
    """Alertmanager with `config` (its alertmanager.yml) in `folder`, until the block ends; yields
    its URL. Skips (fails in CI) without the binary."""
    if ALERTMANAGER is None:
        missing("Alertmanager binary", "apt-get install -y prometheus-alertmanager")
    (folder / "alertmanager.yml").write_text(config)
    port = free_port()
    command = [ALERTMANAGER, f"--config.file={folder / 'alertmanager.yml'}", f"--storage.path={folder / 'data'}",
               f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="]
    with ready_process(command, folder / "alertmanager.log", f"http://127.0.0.1:{port}") as url:
        yield url


def post_alerts(url: str, alerts: list[dict[str, Any]]) -> None:
    """Post `alerts` to Alertmanager's v2 API at `url`, as Prometheus does."""
    answer = httpx.post(f"{url}/api/v2/alerts", json=alerts, timeout=10)
    assert answer.status_code == 200, answer.text

"""`siaga worker` stops the way a machine being taken out of service needs: the first SIGTERM makes it
take no new runs, it stays until the step in flight has ended and its run completed, then exits 0;
a run created meanwhile waits for another worker. Through a real Prefect server and process pool."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prefect import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from siaga.flows.deployments import DEPLOYMENT, LIVE_QUEUE, deploy_to_pool
from siaga.integrations import default_registry
from siaga.runbook import load_runbook

pytestmark = pytest.mark.timeout(240)

POOL = "drain-test"
STEP_SECONDS = 6.0
RUNBOOK = """
runbook: worker-drain
title: A step in flight while its worker is told to stop
severity: sev3
roles: {ops: [eko]}
inputs:
  key: {type: string, default: none}
steps:
  - id: slow
    action: http.request
    with: {url: "URL/slow", json: {key: "{{ inputs.key }}"}}
"""


class SlowProvider:
    """Answers each call after `STEP_SECONDS`; notes when each key's call came and was answered."""

    def __init__(self) -> None:
        self.called: dict[str, float] = {}
        self.answered: dict[str, float] = {}
        self.changed = threading.Condition()

    def __enter__(self) -> SlowProvider:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                key = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))["key"]
                with provider.changed:
                    provider.called[key] = time.time()
                    provider.changed.notify_all()
                time.sleep(STEP_SECONDS)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")
                provider.answered[key] = time.time()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def wait_called(self, key: str, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: key in self.called, timeout)


@pytest.fixture
def provider() -> Iterator[SlowProvider]:
    with SlowProvider() as provider:
        yield provider


async def _create_run(api: str, key: str) -> str:
    with temporary_settings({PREFECT_API_URL: api}):
        async with get_client() as client:
            deployment = await client.read_deployment_by_name(f"worker-drain/{DEPLOYMENT}")
            return str((await client.create_flow_run_from_deployment(deployment.id, parameters={"key": key})).id)


async def _state(api: str, run_id: str) -> str:
    with temporary_settings({PREFECT_API_URL: api}):
        async with get_client() as client:
            run = await client.read_flow_run(run_id)
            return run.state.name if run.state else "-"


def test_sigterm_drains_the_worker_after_its_step_in_flight(
    prefect_api: str, provider: SlowProvider, tmp_path: Path
) -> None:
    folder = tmp_path / "runbooks"
    folder.mkdir()
    (folder / "worker-drain.yaml").write_text(RUNBOOK.replace("URL", provider.url))
    runbook = load_runbook(folder / "worker-drain.yaml", default_registry())
    with temporary_settings({PREFECT_API_URL: prefect_api}):
        asyncio.run(deploy_to_pool([runbook], pool=POOL))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_API_URL=prefect_api, PREFECT_HOME=str(tmp_path / "prefect"), SIAGA_HOME=str(tmp_path / "home"),
               SIAGA_RUNBOOKS=str(folder), PREFECT_WORKER_QUERY_SECONDS="1")
    log = (tmp_path / "worker.log").open("w+")
    worker = subprocess.Popen(
        [sys.executable, "-m", "siaga.cli", "worker", "--pool", POOL, "--queue", LIVE_QUEUE, "--drain", "120"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        first = asyncio.run(_create_run(prefect_api, "first"))
        assert provider.wait_called("first", timeout=90), "the worker started the run and its step"
        worker.send_signal(signal.SIGTERM)
        told_to_stop = time.time()
        second = asyncio.run(_create_run(prefect_api, "second"))
        assert worker.wait(timeout=90) == 0
        stopped = time.time()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    log.seek(0)
    output = log.read()
    assert "worker draining" in output, output
    assert provider.answered["first"] <= stopped, "the worker stayed until its step in flight had ended"
    assert stopped - told_to_stop >= STEP_SECONDS - (told_to_stop - provider.called["first"]) - 0.5
    assert asyncio.run(_state(prefect_api, first)) == "Completed", output
    time.sleep(2)  # a worker still polling would have claimed it by now
    assert asyncio.run(_state(prefect_api, second)) == "Scheduled", output
    assert "second" not in provider.called

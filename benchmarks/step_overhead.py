"""Siaga's cost per step: a 20-step runbook against a hand-written Prefect flow making the same
20 HTTP calls, on the same Prefect server. Prints both wall times and their ratio (target <= 1.15).
    python benchmarks/step_overhead.py
"""

from __future__ import annotations

import asyncio
import os
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from siaga.home import prepare_prefect_environment
from siaga.settings import Settings

prepare_prefect_environment(Settings.from_environ(os.environ).home)  # Prefect's data under the Siaga home, before Prefect is imported

import httpx
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.testing.utilities import prefect_test_harness
from siaga.flows import compile_runbook
from siaga.integrations import default_registry

from siaga.runbook import parse_runbook

STEPS = 20
ROUNDS = 7


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def runbook_text(url: str) -> str:
    steps = "\n".join(
        f"  - id: call-{i}\n    action: http.request\n    with: {{url: \"{url}/{i}\", json: {{step: {i}}}}}"
        for i in range(STEPS)
    )
    return f"runbook: overhead\ntitle: Overhead\nseverity: sev3\nsteps:\n{steps}\n"


def hand_written(url: str):
    """What an engineer would write by hand: one task per call, one HTTP client for the flow."""

    @task(cache_policy=NO_CACHE, persist_result=False)
    async def call(client: httpx.AsyncClient, i: int) -> dict:
        response = await client.post(f"{url}/{i}", json={"step": i}, headers={"Idempotency-Key": f"run:{i}"})
        response.raise_for_status()
        return {"status": response.status_code, "body": response.json()}

    @flow(name="hand-written", persist_result=False)
    async def hand() -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            for i in range(STEPS):
                await call.with_options(name=f"call-{i}")(client, i)

    return hand


async def timed(run) -> float:
    started = time.perf_counter()
    state = await run(return_state=True)
    elapsed = time.perf_counter() - started
    assert state.is_completed(), state
    return elapsed


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    siaga_flow = compile_runbook(parse_runbook(runbook_text(url), default_registry()))
    hand_flow = hand_written(url)
    with prefect_test_harness(server_startup_timeout=120):

        async def measure() -> tuple[list[float], list[float]]:
            await timed(siaga_flow)
            await timed(hand_flow)
            ours, theirs = [], []
            for _ in range(ROUNDS):
                ours.append(await timed(siaga_flow))
                theirs.append(await timed(hand_flow))
            return ours, theirs

        ours, theirs = asyncio.run(measure())
    server.shutdown()
    siaga_s, hand_s = statistics.median(ours), statistics.median(theirs)
    print(f"{STEPS} steps, {ROUNDS} runs each after one warm-up, same Prefect server:")
    print(f"  siaga runbook:       median {siaga_s:6.3f} s  (runs: {', '.join(f'{t:.3f}' for t in ours)})")
    print(f"  hand-written flow:   median {hand_s:6.3f} s  (runs: {', '.join(f'{t:.3f}' for t in theirs)})")
    print(f"  ratio siaga / hand:  {siaga_s / hand_s:.3f}  (target <= 1.15)")


if __name__ == "__main__":
    main()

"""`siaga up` as a user starts and stops it, for the tests that run one: its environment, a clean
stop, the running stack and the runs created on it as the UI would."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from siaga.flows.server import free_port

from .gate_driver import code_for
from .live_receiver import API_TOKEN
from .prefect_db import seed_prefect_home


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SIAGA_"))}
    env["SIAGA_HOME"] = str(home)
    env["SIAGA_API_TOKEN"] = API_TOKEN  # the receiver's read API answers to it (`live_receiver.read`)
    return env


def stop(process: subprocess.Popen[str], home: Path | None = None) -> None:
    """Stop `siaga up` as a person would (Ctrl-C), so that it stops its Prefect server too; if it
    had to be killed, stop the server its stack.json names."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    noted = home / "stack.json" if home else None
    if noted and noted.exists():
        server = json.loads(noted.read_text()).get("server_pid")
        for signum in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(server, signum) if server else None
            except ProcessLookupError:
                break
            time.sleep(3)


class Stack:
    def __init__(self, process: subprocess.Popen[str], output: Path, api: str, env: dict[str, str]) -> None:
        self.process, self.output, self.api, self.env = process, output, api, env

    def siaga(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "siaga.cli", *args], capture_output=True, text=True, timeout=180, env=self.env
        )

    def approve_gates_until_done(self, running: subprocess.Popen[str], timeout: float = 300) -> list[str]:
        """Answer every gate `siaga approvals` lists with `siaga approve`, as each person asked
        would with the code they found in their channel (the outbox here), until `running` ends."""
        home = Path(self.env["SIAGA_HOME"])
        said: list[str] = []
        deadline = time.monotonic() + timeout
        while running.poll() is None:
            assert time.monotonic() < deadline, "the run did not finish"
            listed = self.siaga("approvals", "--json")
            assert listed.returncode == 0, listed.stderr
            for gate in json.loads(listed.stdout):
                if not gate["may_approve"]:
                    continue
                person = gate["may_approve"][0]
                code = code_for(home, person, gate["run_id"], gate["step"])
                done = self.siaga("approve", gate["run_id"], gate["step"], "--as", person, "--code", code)
                assert done.returncode == 0, done.stdout + done.stderr
                said.append(done.stdout)
            time.sleep(0.5)
        return said


@contextlib.contextmanager
def running_stack(home: Path, runbooks: Path, *options: str, env: Mapping[str, str] | None = None,
                  prefect_db: Path | None = None) -> Iterator[Stack]:
    """`siaga up` on `home` serving `runbooks` (with `options`, and `env` set: tokens...), until the
    block ends: stopped as a person would stop it. With `prefect_db` (the `prefect_db` fixture), the
    home starts with that migrated Prefect database, as a restarted stack's does."""
    if prefect_db is not None:
        seed_prefect_home(home, prefect_db)
    port = free_port()
    env = {**clean_env(home), **(env or {})}
    output = home / "up.log"
    with output.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "siaga.cli", "up", "--port", str(port), "--runbooks", str(runbooks), *options],
            stdout=log, stderr=subprocess.STDOUT, text=True, env=env,
        )
    try:
        deadline = time.monotonic() + 180
        while "Siaga is up" not in output.read_text():
            assert process.poll() is None, output.read_text()
            assert time.monotonic() < deadline, output.read_text()
            time.sleep(0.5)
        yield Stack(process, output, f"http://127.0.0.1:{port}/api", env)
    finally:
        stop(process, home)


def create_flow_run(api: str, deployment_id: str, parameters: dict | None = None, **body: Any) -> dict:
    """A run of the deployment, created as the UI would (SQLite answers 503 "database is locked"
    while the server is busy: ask again)."""
    for _ in range(10):
        created = httpx.post(f"{api}/deployments/{deployment_id}/create_flow_run",
                             json={"parameters": parameters or {}, **body}, timeout=30)
        if created.status_code != 503:
            break
        time.sleep(1)
    assert created.status_code == 201, created.text
    return created.json()

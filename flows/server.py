"""A Prefect server of Siaga's own: `prefect server start` (API and UI) in a process group of its
own, its data under the Siaga home, stopped when the block that started it ends. `siaga up` runs
one on its port; `siaga run --local` with no stack runs one on a free port for the length of the
run, so that the links it prints open the run in a UI while the run goes on."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from siaga.errors import StackUnavailable
from siaga.home import prefect_answers


@dataclass(frozen=True)
class Started:
    """A server `prefect_server` started."""

    api_url: str
    pid: int
    log: Path
    prefect_home: str  # where its SQLite database is

    @property
    def ui_url(self) -> str:
        return self.api_url.removesuffix("/api")


@contextlib.contextmanager
def prefect_server(host: str, port: int, home: Path, *, timeout: float = 120) -> Iterator[Started]:
    """Start a Prefect server on `host`:`port` (logs in ``<home>/logs/prefect-server.log``) and
    wait until it answers; stop it when the block ends. Raise StackUnavailable if it cannot start."""
    api_url = f"http://{host}:{port}/api"
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / "prefect-server.log"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.setdefault("PREFECT_HOME", str(home / "prefect"))
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["PREFECT_UI_API_URL"] = api_url
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)]
    with log_path.open("ab") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not prefect_answers(api_url):
            if server.poll() is not None:
                tail = log_path.read_text(errors="replace").splitlines()[-15:]
                raise StackUnavailable(
                    f"the Prefect server stopped while starting (exit {server.returncode}); "
                    f"the end of {log_path}:\n" + "\n".join(tail)
                )
            if time.monotonic() > deadline:
                raise StackUnavailable(f"the Prefect server did not answer within {timeout:.0f} s; see {log_path}")
            time.sleep(0.3)
        yield Started(api_url, server.pid, log_path, env["PREFECT_HOME"])
    finally:
        _stop(server)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody uses now, below the kernel's ephemeral range. The kernel hands ephemeral ports
    to outgoing connections, so a free one picked there can be taken by a client (a connection to
    the database, say) before the server it was picked for listens on it."""
    ceiling = _ephemeral_floor()
    for port in random.sample(range(max(1024, ceiling - 16384), ceiling), 64):
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # the range below is crowded: any port the kernel has free
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default; other systems start theirs at 49152


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

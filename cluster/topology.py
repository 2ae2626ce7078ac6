"""Siaga on Prefect's own distributed deployment, started on loopback from Debian's packages.

What `cluster/up` starts, each part a process of its own (logs under ``<folder>/logs``):

* **PostgreSQL** (Debian's ``postgresql``): one cluster, two databases, ``prefect`` (Prefect's
  server) and ``siaga`` (Siaga's store);
* **Redis** (Debian's ``redis-server``): Prefect's messaging broker and cache, its causal
  ordering, its concurrency leases (``prefect-redis``) and Docket, which keeps the background
  services' periodic work to once;
* **Prefect**: two API servers (``prefect server start --no-services``) and one background
  services process (``prefect server services start``), as Prefect's self-hosting guide sets them
  up for more than one replica; the schema is migrated once before they start;
* **haproxy** (Debian's): one front for the two API servers (``PREFECT_API_URL`` of everything
  else) and one for the two Siaga receivers (where alerts are sent);
* **Siaga**: the store migrated once and the deployments applied onto the process work pool
  ``siaga`` (queue ``live``, and ``drill`` for drills); two nodes (``siaga node``: receiver, and the
  singletons under a PostgreSQL lease); two live workers and one drill worker (``siaga worker``,
  Prefect's process worker starting runs from a warm process), only the drill worker holding the
  drill sandbox's credentials.

`Topology` starts it all (`up`) and stops everything it started, by process id (`down`); a test
kills and restarts single parts (`kill`, `start`). ``python -m cluster.topology`` (what
``cluster/up`` runs) starts it and waits for Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from siaga.flows.server import free_port

__all__ = ["POSTGRES_BIN", "DRILL_QUEUE", "LIVE_QUEUE", "POOL", "Ports", "Topology", "TopologyError", "free_port", "running"]

POOL = "siaga"
"""The process work pool every runbook deployment goes to."""
LIVE_QUEUE, DRILL_QUEUE = "live", "drill"

POSTGRES_BIN = next(
    (p for p in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True) if (p / "initdb").exists()), None
)


class TopologyError(RuntimeError):
    """A part of the topology could not start; the message names it and its log."""


@dataclass(frozen=True)
class Ports:
    postgres: int
    redis: int
    prefect: tuple[int, int]
    prefect_front: int
    receivers: tuple[int, int]
    receiver_front: int

    @classmethod
    def free(cls) -> Ports:
        return cls(free_port(), free_port(), (free_port(), free_port()), free_port(), (free_port(), free_port()), free_port())

    @classmethod
    def default(cls) -> Ports:
        """The ports `cluster/up` uses: the Prefect UI on 4200 and the receivers on 8787, as `siaga up`."""
        return cls(54329, 63790, (4201, 4202), 4200, (8788, 8789), 8787)


@dataclass
class Part:
    """One process of the topology."""

    name: str
    command: list[str]
    env: dict[str, str]
    ready: Callable[[], bool] | None = None
    process: subprocess.Popen[bytes] | None = None


@dataclass
class Topology:
    folder: Path
    runbooks: Path
    ports: Ports = field(default_factory=Ports.free)
    python: str = sys.executable
    secrets: Mapping[str, str] = field(default_factory=dict)
    """The receivers' webhook credentials (``SIAGA_ALERTMANAGER_TOKEN``...), for the nodes only."""
    drill_secrets: Mapping[str, str] = field(default_factory=dict)
    """The drill sandbox's credentials: given to the drill worker and nobody else."""
    live_secrets: Mapping[str, str] = field(default_factory=dict)
    """The live providers' credentials: given to the live workers."""
    extra_env: Mapping[str, str] = field(default_factory=dict)
    """Given to every Siaga process (nodes and workers), e.g. a provider stand-in's URL."""
    workers: int = 2
    start_workers: bool = True
    """False: no worker starts (runs are created and wait in the pool), to measure run creation alone."""
    inbox_stale: float = 30.0
    """How old a webhook a dead receiver accepted must be before the surviving node records it (s)."""
    echo: Callable[[str], None] = print
    parts: dict[str, Part] = field(default_factory=dict)
    _postgres_home: Path | None = None

    # ---- addresses

    @property
    def prefect_api(self) -> str:
        return f"http://127.0.0.1:{self.ports.prefect_front}/api"

    @property
    def receiver_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.receiver_front}"

    def receiver(self, n: int) -> str:
        """Node `n`'s receiver (1 or 2), past the load balancer."""
        return f"http://127.0.0.1:{self.ports.receivers[n - 1]}"

    def database(self, name: str, driver: str = "psycopg") -> str:
        return f"postgresql+{driver}://siaga@127.0.0.1:{self.ports.postgres}/{name}"

    @property
    def store_url(self) -> str:
        """Siaga's store (``SIAGA_DATABASE_URL``)."""
        return self.database("siaga")

    @property
    def logs(self) -> Path:
        return self.folder / "logs"

    # ---- environments

    def prefect_server_env(self) -> dict[str, str]:
        """Prefect's server settings for more than one replica (its self-hosting guide)."""
        redis = f"redis://127.0.0.1:{self.ports.redis}"
        return {
            "PREFECT_HOME": str(self.folder / "prefect-home"),
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": self.database("prefect", "asyncpg"),
            "PREFECT_SERVER_DATABASE_MIGRATE_ON_START": "false",
            "PREFECT_SERVER_EVENTS_MESSAGING_BROKER": "prefect_redis.messaging",
            "PREFECT_SERVER_EVENTS_MESSAGING_CACHE": "prefect_redis.messaging",
            "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
            "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
            "PREFECT_REDIS_MESSAGING_HOST": "127.0.0.1",
            "PREFECT_REDIS_MESSAGING_PORT": str(self.ports.redis),
            "PREFECT_REDIS_MESSAGING_DB": "0",
            "PREFECT_SERVER_DOCKET_URL": f"{redis}/1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_API_URL": self.prefect_api,
            "PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE": "10",
            "PREFECT_SERVER_DATABASE_SQLALCHEMY_MAX_OVERFLOW": "10",
        }

    def siaga_env(self, home: str) -> dict[str, str]:
        """What every Siaga process (node, worker, the `siaga` commands) is given."""
        return {
            "PREFECT_API_URL": self.prefect_api,
            "PREFECT_HOME": str(self.folder / home / "prefect"),
            "SIAGA_HOME": str(self.folder / home),
            "SIAGA_DATABASE_URL": self.store_url,
            "SIAGA_RUNBOOKS": str(self.runbooks),
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
            **self.extra_env,
        }

    def client_env(self) -> dict[str, str]:
        """For `siaga` commands run against the topology (``siaga audit verify``, ``siaga approve``)."""
        return self.siaga_env("client")

    # ---- the whole

    def up(self) -> None:
        """Start every part, in order; stop what started if one cannot."""
        if POSTGRES_BIN is None:
            raise TopologyError("PostgreSQL's server is not installed: apt-get install -y postgresql")
        for binary in ("redis-server", "haproxy"):
            if not shutil.which(binary) and not Path(f"/usr/sbin/{binary}").exists():
                raise TopologyError(f"{binary} is not installed: apt-get install -y redis-server haproxy")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        started = time.monotonic()
        try:
            self._postgres()
            self._start(Part("redis", [_binary("redis-server"), "--port", str(self.ports.redis), "--bind", "127.0.0.1",
                                       "--save", "", "--appendonly", "no", "--dir", str(self.folder)], {},
                             ready=lambda: _listening(self.ports.redis)))
            self._haproxy()
            self._run("prefect-migrate", [self.python, "-m", "prefect", "server", "database", "upgrade", "-y"],
                      self.prefect_server_env())
            self._run("siaga-migrate", [self.python, "-m", "siaga.cli", "db", "upgrade"], self.client_env())
            for n, port in enumerate(self.ports.prefect, 1):
                self._start(self.prefect_api_part(n, port), wait=False)
            self._start(Part("prefect-services", [self.python, "-m", "prefect", "server", "services", "start"],
                             {**self.prefect_server_env(), "PREFECT_SERVER_REGISTER_BLOCKS_ON_START": "false"}),
                        wait=False)
            self._wait(["prefect-api-1", "prefect-api-2"])
            self._run("deploy", [self.python, "-m", "siaga.cli", "deploy", "--pool", POOL], self.client_env())
            for n in (1, 2):
                self._start(self.node_part(n), wait=False)
            for n in range(1, self.workers + 1 if self.start_workers else 1):
                self._start(self.worker_part(f"live-{n}"), wait=False)
            if self.start_workers:
                self._start(self.worker_part("drill-1"), wait=False)
            self._wait([f"node-{n}" for n in (1, 2)])
        except BaseException:
            self.down()
            raise
        self.echo(f"cluster up in {time.monotonic() - started:.0f} s: Prefect UI {self.prefect_api.removesuffix('/api')}, "
                  f"alerts to {self.receiver_url}/hooks/<source>, logs in {self.logs}")

    def down(self) -> None:
        """Stop every part this topology started (newest first), by process id."""
        for name in reversed(list(self.parts)):
            self.kill(name, signal.SIGTERM)
        if self._postgres_home is not None:
            shutil.rmtree(self._postgres_home, ignore_errors=True)
            self._postgres_home = None

    # ---- parts

    def prefect_api_part(self, n: int, port: int) -> Part:
        env = self.prefect_server_env()
        if n > 1:  # one registers Prefect's block types at start: two at once collide on them
            env["PREFECT_SERVER_REGISTER_BLOCKS_ON_START"] = "false"
        return Part(f"prefect-api-{n}", [self.python, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                         "--port", str(port), "--no-services"], env,
                    ready=lambda: _answers(f"http://127.0.0.1:{port}/api/health"))

    def node_part(self, n: int) -> Part:
        port = self.ports.receivers[n - 1]
        env = {**self.siaga_env(f"node-{n}"), **self.secrets}
        return Part(f"node-{n}", [self.python, "-m", "siaga.cli", "node", "--host", "127.0.0.1", "--port", str(port),
                                  "--name", f"node-{n}", "--inbox-stale", str(self.inbox_stale)], env,
                    ready=lambda: _answers(f"http://127.0.0.1:{port}/healthz"))

    def worker_part(self, name: str) -> Part:
        drill = name.startswith("drill")
        env = {**self.siaga_env(f"worker-{name}"), **(self.drill_secrets if drill else self.live_secrets),
               "PREFECT_WORKER_QUERY_SECONDS": "0.5", "PREFECT_WORKER_PREFETCH_SECONDS": "5"}
        return Part(f"worker-{name}", [self.python, "-m", "siaga.cli", "worker", "--pool", POOL, "--queue",
                                       DRILL_QUEUE if drill else LIVE_QUEUE, "--name", name, "--limit", "5"], env)

    def start(self, name: str) -> None:
        """Start a part again (after `kill`), and wait until it answers."""
        part = self.parts[name]
        if part.process is not None:  # what its killed process left behind goes with it
            with contextlib.suppress(ProcessLookupError):
                os.killpg(part.process.pid, signal.SIGKILL)
        self._start(Part(part.name, part.command, part.env, part.ready))

    def kill(self, name: str, signum: int = signal.SIGKILL) -> None:
        """Send `signum` to a part's process group (SIGKILL: it dies as a crashed host would leave it);
        wait for it to end."""
        part = self.parts.get(name)
        if part is None or part.process is None or part.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(part.process.pid, signum)
        try:
            part.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):  # what it left behind (a worker's forkserver, its runs)
            os.killpg(part.process.pid, signal.SIGKILL)
        part.process.wait()

    def kill_process(self, name: str, signum: int = signal.SIGKILL) -> None:
        """Send `signum` to the part's own process only (its children, such as a worker's runs, live on)."""
        part = self.parts[name]
        assert part.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(part.process.pid, signum)
        part.process.wait(timeout=20)

    # ---- internals

    def _postgres(self) -> None:
        assert POSTGRES_BIN is not None
        home = self.folder
        if os.geteuid() == 0:  # the server runs as the postgres user, who may not enter our folder
            home = self._postgres_home = Path(tempfile.mkdtemp(prefix="siaga-cluster-pg-"))
            shutil.chown(home, "postgres", "postgres")
        data = home / "postgres"
        if not (data / "PG_VERSION").exists():
            self._run("initdb", _as_postgres([str(POSTGRES_BIN / "initdb"), "-D", str(data), "-U", "siaga",
                                              "--auth=trust", "--no-sync"]), {})
        self._start(Part("postgres", _as_postgres([
            str(POSTGRES_BIN / "postgres"), "-D", str(data), "-p", str(self.ports.postgres), "-h", "127.0.0.1",
            "-k", str(home), "-c", "max_connections=300", "-c", "fsync=off",
            "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
        ]), {}, ready=lambda: _listening(self.ports.postgres)))
        for database in ("prefect", "siaga"):
            psql = [str(POSTGRES_BIN / "psql"), "-h", "127.0.0.1", "-p", str(self.ports.postgres), "-U", "siaga",
                    "-d", "postgres", "-tAc"]
            exists = subprocess.run([*psql, f"SELECT 1 FROM pg_database WHERE datname = '{database}'"],
                                    capture_output=True, text=True, check=True).stdout.strip()
            if not exists:
                subprocess.run([*psql, f'CREATE DATABASE "{database}"'], capture_output=True, check=True)

    def _haproxy(self) -> None:
        config = self.folder / "haproxy.cfg"
        api = "\n".join(f"    server api{n} 127.0.0.1:{p} check inter 1s fall 2 rise 1"
                        for n, p in enumerate(self.ports.prefect, 1))
        receivers = "\n".join(f"    server node{n} 127.0.0.1:{p} check inter 500ms fall 3 rise 1 observe layer4 error-limit 1 on-error mark-down"
                              for n, p in enumerate(self.ports.receivers, 1))
        config.write_text(HAPROXY.format(prefect=self.ports.prefect_front, api=api,
                                         receiver=self.ports.receiver_front, receivers=receivers))
        self._start(Part("haproxy", [_binary("haproxy"), "-f", str(config), "-db"], {},
                         ready=lambda: _listening(self.ports.prefect_front)))

    def _environment(self, env: Mapping[str, str]) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("PREFECT_", "SIAGA_")) and k not in ("PYTEST_CURRENT_TEST",)}
        return {**base, **env}

    def _start(self, part: Part, wait: bool = True) -> None:
        log = (self.logs / f"{part.name}.log").open("ab")
        try:
            part.process = subprocess.Popen(part.command, env=self._environment(part.env), stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True, cwd=self.folder)
        finally:
            log.close()
        self.parts[part.name] = part
        if wait:
            self._wait([part.name])

    def _wait(self, names: list[str], timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        for name in names:
            part = self.parts[name]
            while part.ready is not None and not part.ready():
                assert part.process is not None
                if part.process.poll() is not None:
                    raise TopologyError(f"{name} stopped while starting (exit {part.process.returncode}):\n"
                                        + _tail(self.logs / f"{name}.log"))
                if time.monotonic() > deadline:
                    raise TopologyError(f"{name} did not answer within {timeout:.0f} s:\n" + _tail(self.logs / f"{name}.log"))
                time.sleep(0.2)

    def _run(self, name: str, command: list[str], env: Mapping[str, str], timeout: float = 300) -> None:
        with (self.logs / f"{name}.log").open("ab") as log:
            done = subprocess.run(command, env=self._environment(env), stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, timeout=timeout, cwd=self.folder)
        if done.returncode:
            raise TopologyError(f"{name} failed (exit {done.returncode}):\n" + _tail(self.logs / f"{name}.log"))


HAPROXY = """\
global
    maxconn 4096
defaults
    mode http
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    timeout tunnel 1h
    timeout check 2s
    retries 3
    option redispatch
    retry-on conn-failure empty-response response-timeout
frontend prefect
    bind 127.0.0.1:{prefect}
    default_backend prefect_api
backend prefect_api
    balance roundrobin
    option httpchk GET /api/health
{api}
frontend receivers
    bind 127.0.0.1:{receiver}
    default_backend siaga_receivers
backend siaga_receivers
    balance roundrobin
    option httpchk GET /healthz
{receivers}
"""
"""Round robin over the two Prefect API servers and the two receivers, each checked every second
(a receiver every half second) and skipped while it does not answer; a request whose connection
failed is sent to the other one. A receiver whose port refuses a connection is skipped at once; one
that is only slow (a burst on busy cores) must miss three checks of 2 s first, so that a burst never
takes both out of the balancer and has the senders told 503."""


def _binary(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def _as_postgres(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def running(topology: Topology) -> Iterator[Topology]:
    topology.up()
    try:
        yield topology
    finally:
        topology.down()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cluster/up", description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", help="where its data and logs go (default: a new temporary folder)")
    parser.add_argument("--runbooks", default="runbooks", help="the runbook folder the nodes and workers serve")
    parser.add_argument("--free-ports", action="store_true", help="any free ports instead of 4200 (UI) and 8787 (alerts)")
    args = parser.parse_args(argv)
    folder = Path(args.folder) if args.folder else Path(tempfile.mkdtemp(prefix="siaga-cluster-"))
    secrets = {k: v for k, v in os.environ.items()
               if k.startswith(("SIAGA_ALERTMANAGER_", "SIAGA_GRAFANA_", "SIAGA_PAGERDUTY_", "SIAGA_HOOK_SECRET_",
                                "SIAGA_API_TOKEN"))}
    topology = Topology(folder, Path(args.runbooks).resolve(), Ports.free() if args.free_ports else Ports.default(),
                        secrets=secrets)
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        topology.up()
    except TopologyError as exc:
        print(f"cluster/up: {exc}", file=sys.stderr)
        return 1
    print("Environment for `siaga` commands against it:")
    for key, value in topology.client_env().items():
        print(f"  export {key}={value}")
    print("Press Ctrl-C to stop everything it started.")
    try:
        while not stop:
            time.sleep(0.5)
    finally:
        print("Stopping the cluster...")
        topology.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())

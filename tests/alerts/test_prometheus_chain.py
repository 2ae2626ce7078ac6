"""The whole alerting chain with real parts: Debian's Prometheus scrapes a small target every
second and evaluates ``up{job="gateway"} == 0``; it sends to Debian's Alertmanager, whose webhook
points at the receiver of a `siaga up` stack. The target dies: one incident opens and its runbook
runs once. The target comes back: the incident resolves."""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from siaga.flows.server import free_port

from ..conftest import missing
from ..support.alertmanager import ready_process
from ..support.live_receiver import read
from ..support.receiver_stack import (  # the module fixtures (receiver, alertmanager): ./conftest.py
    Receiver,
    of_group,
    region,
    runs_in,
    wait_for,
)

PROMETHEUS = shutil.which("prometheus")
PROMETHEUS_CONFIG = """
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: gateway
    scrape_timeout: 900ms
    static_configs: [{{targets: ["127.0.0.1:{target}"]}}]
rule_files: [rules.yml]
alerting:
  alertmanagers:
    - static_configs: [{{targets: ["{alertmanager}"]}}]
"""
RULES = """
groups:
  - name: gateway
    interval: 1s
    rules:
      - alert: GatewayErrors
        expr: up{{job="gateway"}} == 0
        for: 0s
        labels: {{severity: critical, region: {region}}}
        annotations: {{summary: "the gateway target does not answer its scrape"}}
"""


class Metrics(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"# TYPE gateway_requests_total counter\ngateway_requests_total 42\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def target(port: int) -> Iterator[None]:
    """The scraped target: /metrics on 127.0.0.1:`port` until the block ends."""
    server = ThreadingHTTPServer(("127.0.0.1", port), Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextlib.contextmanager
def prometheus(folder: Path, target_port: int, alertmanager_url: str, region_name: str) -> Iterator[str]:
    """Debian's Prometheus on loopback; yields its URL."""
    (folder / "prometheus.yml").write_text(
        PROMETHEUS_CONFIG.format(target=target_port, alertmanager=alertmanager_url.removeprefix("http://"))
    )
    (folder / "rules.yml").write_text(RULES.format(region=region_name))
    port = free_port()
    command = [PROMETHEUS, f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'data'}",
               f"--web.listen-address=127.0.0.1:{port}"]
    with ready_process(command, folder / "prometheus.log", f"http://127.0.0.1:{port}") as url:
        yield url


def up_value(url: str) -> float | None:
    answer = httpx.get(f"{url}/api/v1/query", params={"query": 'up{job="gateway"}'}, timeout=5).json()
    result = answer["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def test_a_dead_scrape_target_starts_the_runbook_once_and_its_return_resolves_the_incident(
    receiver: Receiver, alertmanager: str, tmp_path: Path  # noqa: F811
) -> None:
    if PROMETHEUS is None:
        missing("Prometheus binary", "apt-get install -y prometheus")
    r = region()
    port = free_port()
    with prometheus(tmp_path, port, alertmanager, r) as prom:
        with target(port):
            wait_for(lambda: up_value(prom) == 1.0, timeout=30, what="Prometheus to scrape the target")
        # the target is gone: up == 0 on the next scrape, the rule fires, Alertmanager sends the webhook
        (incident,) = wait_for(lambda: [i for i in of_group(receiver.incidents(), r) if i["flow_run_id"]],
                               timeout=45, what="the incident and its run")
        detail = read(receiver.url, f"/incidents/{incident['id']}")
        (alert,) = detail["alert_list"]
        assert alert["source"] == "alertmanager" and alert["status"] == "firing"
        assert alert["labels"]["alertname"] == "GatewayErrors" and alert["labels"]["job"] == "gateway"
        assert alert["labels"]["instance"] == f"127.0.0.1:{port}"
        run = wait_for(
            lambda: (run := httpx.get(f"{receiver.stack.api}/flow_runs/{incident['flow_run_id']}").json())["state"]["type"]
            in ("COMPLETED", "FAILED", "CRASHED") and run,
            timeout=60, what="the run to end",
        )
        assert run["state"]["type"] == "COMPLETED", run["state"]
        assert run["parameters"]["region"] == r and run["parameters"]["incident"]["id"] == incident["id"]

        # Prometheus re-evaluates every second: still one incident, one run
        time.sleep(3)
        assert len(of_group(receiver.incidents(), r)) == 1
        assert len(runs_in(receiver, r)) == 1

        with target(port):  # the target answers again: the alert resolves, and with it the incident
            wait_for(lambda: of_group(receiver.incidents(), r)[0]["state"] == "resolved", timeout=45,
                     what="the incident to resolve")
    assert len(runs_in(receiver, r)) == 1

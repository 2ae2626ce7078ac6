"""What the store's migrations and the receiver's durability cost.

Prints: opening a fresh SQLite store in a new process (migrating it from nothing to head); opening
one already at head (what every flow run pays); and the time `siaga receiver` takes to answer a
signed webhook 202 (signature, replay claim and inbox row in the store), median and p95 of 300.
    python benchmarks/store.py
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from siaga.flows.server import free_port

OPEN = "import sys, time; from siaga.store import engine; t = time.perf_counter(); engine(sys.argv[1]); print(time.perf_counter() - t)"


def open_seconds(url: str) -> float:
    out = subprocess.run([sys.executable, "-c", OPEN, url], capture_output=True, text=True, check=True)
    return float(out.stdout)


def accept_latencies(folder: Path, count: int = 300) -> list[float]:
    secret, port = "bench-secret", free_port()
    (folder / "runbooks").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIAGA_", "PREFECT_"))}
    env |= {"SIAGA_HOME": str(folder), "SIAGA_HOOK_SECRET_BENCH": secret}
    receiver = subprocess.Popen(
        [sys.executable, "-m", "siaga.cli", "receiver", "--port", str(port), "--runbooks", str(folder / "runbooks")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(timeout=10) as client:
            while True:
                try:
                    client.get(f"{url}/healthz")
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            took = []
            for n in range(count):
                body = json.dumps({"labels": {"alertname": "Bench", "n": n}}).encode()
                stamp = str(int(time.time()))
                digest = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
                headers = {"X-Siaga-Timestamp": stamp, "X-Siaga-Signature": f"sha256={digest}"}
                start = time.perf_counter()
                answer = client.post(f"{url}/hooks/bench", content=body, headers=headers)
                took.append(time.perf_counter() - start)
                assert answer.status_code == 202, answer.text
        return took
    finally:
        receiver.terminate()
        receiver.wait(timeout=30)


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/siaga.db"
        fresh = open_seconds(url)
        at_head = min(open_seconds(url) for _ in range(3))
        print(f"open a fresh SQLite store (migrate to head): {fresh * 1000:.0f} ms")
        print(f"open a store already at head (best of 3):    {at_head * 1000:.0f} ms")
    with tempfile.TemporaryDirectory() as folder:
        took = sorted(accept_latencies(Path(folder)))
        p95 = took[int(len(took) * 0.95)]
        print(f"signed webhook answered 202 (replay claim + inbox row): median {statistics.median(took) * 1000:.1f} ms, "
              f"p95 {p95 * 1000:.1f} ms over {len(took)}")


if __name__ == "__main__":
    main()

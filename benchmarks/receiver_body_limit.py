"""What a sender that never stops costs the receiver: an unauthenticated, chunked 200 MiB body.

Sends it to `siaga receiver` (which reads the body as it arrives and answers 413 once it passes
10 MiB) and, side by side, to a bare FastAPI app that reads the whole body first and then checks
its size (what the receiver did before). Prints, for each: when the 413 came (bytes sent by then),
how much was sent in all (a server that stops listening ends the upload), the seconds, and the
server's resident memory: before, at its peak while the body came in (sampled every 20 ms), after.
    python benchmarks/receiver_body_limit.py [MiB]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from siaga.flows.server import free_port

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from testkit.chunked_sender import MIB, send_chunked  # noqa: E402

WHOLE_BODY_APP = """
import sys, uvicorn
from fastapi import FastAPI, HTTPException, Request
app = FastAPI()
@app.get("/healthz")
async def healthz():
    return {"ok": True}
@app.post("/hooks/{source}")
async def hook(source: str, request: Request):
    body = await request.body()  # the whole body, then its size
    if len(body) > 10 * 1024 * 1024:
        raise HTTPException(413, "the body is over 10485760 bytes")
    return {"accepted": 0}
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def started(command: list[str], port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{command} did not start")
        time.sleep(0.2)


def measure(name: str, process: subprocess.Popen[bytes], port: int, total: int) -> dict[str, object]:
    before = rss_mib(process.pid)
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_mib(process.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result = send_chunked(port, total, stop_on_answer=False, timeout=600)
    time.sleep(0.5)
    done.set()
    sampler.join()
    return {"name": name, "status": result.status_line, "answered_at": result.answered_at, "sent": result.sent,
            "seconds": result.seconds, "before": before, "peak": peak[0], "after": rss_mib(process.pid)}


def main() -> None:
    total = int(sys.argv[1]) * MIB if len(sys.argv) > 1 else 200 * MIB
    folder = Path(tempfile.mkdtemp(prefix="siaga-bench-body-"))
    (folder / "runbooks").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIAGA_", "PREFECT_"))}
    env |= {"SIAGA_HOME": str(folder), "SIAGA_ALERTMANAGER_TOKEN": "bench-token",
            "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api"}
    rows = []
    port = free_port()
    receiver = started([sys.executable, "-m", "siaga.cli", "receiver", "--port", str(port),
                        "--runbooks", str(folder / "runbooks")], port, env)
    try:
        rows.append(measure("siaga receiver (reads as it arrives)", receiver, port, total))
    finally:
        receiver.terminate()
        receiver.wait(timeout=30)
    port = free_port()
    whole = started([sys.executable, "-c", WHOLE_BODY_APP, str(port)], port, env)
    try:
        rows.append(measure("bare app reading the whole body", whole, port, total))
    finally:
        whole.terminate()
        whole.wait(timeout=30)

    print(f"unauthenticated chunked body of {total // MIB} MiB to POST /hooks/alertmanager (limit 10 MiB)")
    print(f"{'server':<40} {'answer':<40} {'413 after':>10} {'sent':>9} {'seconds':>8} "
          f"{'RSS before':>11} {'peak':>8} {'growth':>8}")
    for row in rows:
        at = f"{row['answered_at'] / MIB:.1f} MiB" if row["answered_at"] is not None else "-"
        print(f"{row['name']:<40} {row['status']:<40} {at:>10} {row['sent'] / MIB:>5.0f} MiB {row['seconds']:>8.2f} "
              f"{row['before']:>7.0f} MiB {row['peak']:>4.0f} MiB {row['peak'] - row['before']:>4.0f} MiB")


if __name__ == "__main__":
    main()

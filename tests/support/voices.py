"""What the voices tests share: a mention as a social source posts it, a runbook folder with its
reply templates, the receiver's run starter on a deployment no worker serves, and the process's
environment changed for a block."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from siaga.settings import Settings
from siaga.wiring import Wiring


def mention(post: str, topic: str, *, text: str | None = "Pembayaran saya gagal!", platform: str = "x",
            sentiment: str = "negative", **labels: str) -> dict[str, Any]:
    found = {"sentiment": sentiment, "topic": topic, "platform": platform, "post": post, "author": f"@{post}",
             "language": "id"} | labels
    notes = {"url": f"https://{platform}.example/{post}"} | ({"text": text} if text is not None else {})
    return {"labels": found, "annotations": notes}


def runbook_folder_of(home: Path, runbook: str, templates: dict[str, str]) -> Path:
    """A runbook folder under `home` holding `runbook` (YAML text) and its reply `templates`."""
    folder = home / "runbooks"
    (folder / "templates").mkdir(parents=True)
    runbook_id = runbook.split("\n", 1)[0].removeprefix("runbook:").strip()
    (folder / f"{runbook_id}.yaml").write_text(runbook)
    for name, text in templates.items():
        (folder / "templates" / name).write_text(text)
    return folder


def run_starter(prefect_api: str, runbook_id: str) -> Any:
    """The receiver's run starter, on a deployment of `runbook_id` that no worker serves: its runs
    are created and stay scheduled (a test runs the flow itself where it needs one)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from siaga.flows.running import start_incident_run

    flow_id = httpx.post(f"{prefect_api}/flows/", json={"name": runbook_id}).json()["id"]
    made = httpx.post(f"{prefect_api}/deployments/", json={"name": "siaga", "flow_id": flow_id})
    assert made.status_code in (200, 201), made.text

    async def start_run(incident: Any) -> str:
        with temporary_settings({PREFECT_API_URL: prefect_api}):  # uvicorn's thread has its own context
            return await start_incident_run(incident, wiring=Wiring(Settings.from_environ(os.environ)))

    return start_run


@contextlib.contextmanager
def environment(values: dict[str, str], drop: tuple[str, ...] = ("SIAGA_USER",)) -> Iterator[None]:
    """`values` set (and `drop` unset) in this process's environment until the block ends."""
    saved = {k: os.environ.get(k) for k in (*values, *drop)}
    os.environ.update(values)
    for key in drop:
        os.environ.pop(key, None)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

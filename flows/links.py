"""Where a person sees a flow run (its page in the Prefect UI of the current API), and what the
Prefect API says of it now."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import httpx

from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

from siaga.canonical import as_utc

STACK_UI = "http://127.0.0.1:4200"
"""Where `siaga up` serves Prefect's UI unless told another port."""


def ui_url() -> str:
    """The Prefect UI of the current API. With no API named there is no UI to link to now: the
    link is where `siaga up` shows it, over the same Siaga home (`siaga run --local` runs on a
    temporary server of its own, named while the run lasts, and says so when it ends)."""
    configured = PREFECT_UI_URL.value()
    if configured:
        return str(configured).rstrip("/")
    api = PREFECT_API_URL.value()
    return str(api).rstrip("/").removesuffix("/api") if api else STACK_UI


def flow_run_url(flow_run_id: UUID | str) -> str:
    return f"{ui_url()}/runs/flow-run/{flow_run_id}"


def read_run(flow_run_id: str, api_url: str | None, timeout: float = 5.0) -> dict[str, Any]:
    """The flow run's state and times from the Prefect API at `api_url`; ``{"error": why}`` when
    it cannot be read (no stack, the server does not answer, the run is unknown to it)."""
    if not api_url:
        return {"error": "no stack is running (start one with `siaga up`): the run's state is unknown"}
    try:
        answer = httpx.get(f"{api_url.rstrip('/')}/flow_runs/{flow_run_id}", timeout=timeout)
    except httpx.HTTPError as exc:
        return {"error": f"the Prefect server at {api_url} does not answer ({type(exc).__name__}): is `siaga up` running?"}
    if answer.status_code == 404:
        return {"error": f"the Prefect server at {api_url} knows no flow run {flow_run_id}"}
    if answer.status_code != 200:
        return {"error": f"the Prefect server at {api_url} answered {answer.status_code}"}
    run = answer.json()
    state = run.get("state") or {}
    return {
        "name": run.get("name"),
        "state": state.get("name"),
        "state_type": state.get("type"),
        "message": state.get("message"),
        "created": _time(run.get("created")),
        "start_time": _time(run.get("start_time")),
        "end_time": _time(run.get("end_time")),
    }


def _time(value: str | None) -> datetime | None:
    return as_utc(datetime.fromisoformat(value)) if value else None

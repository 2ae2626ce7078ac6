"""Links into the Prefect UI of the current API."""

from __future__ import annotations

from uuid import UUID

from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

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

"""Links into the Prefect UI of the current API."""

from __future__ import annotations

from uuid import UUID

from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL


def ui_url() -> str:
    """The Prefect UI of the current API."""
    configured = PREFECT_UI_URL.value()
    if configured:
        return str(configured).rstrip("/")
    return str(PREFECT_API_URL.value() or "http://127.0.0.1:4200/api").rstrip("/").removesuffix("/api")


def flow_run_url(flow_run_id: UUID | str) -> str:
    return f"{ui_url()}/runs/flow-run/{flow_run_id}"

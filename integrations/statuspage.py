"""`statuspage.create_incident`, `statuspage.update_incident`, `statuspage.resolve`: tell the public
on an Atlassian Statuspage (REST API v1).

In ``connections.yaml``::

    connections:
      status:
        type: statuspage
        page_id: kctbh9vrtdwd
        api_key: secret://statuspage-api-key
        # base_url: https://api.statuspage.io/v1

Requests carry ``Authorization: OAuth <api_key>``. An incident Siaga opens carries, in its
`metadata` (a JSON object kept by Statuspage), ``{"siaga": {"key": <idempotency key>, "incident":
<Siaga incident or run id>, ...}}``: after a crash Siaga finds its incident among the unresolved
ones instead of opening a second, and updates and resolves find "the status incident of this
Siaga incident" without being told its id.

In drills, name and body carry ``[DRILL]`` and subscribers are not notified
(``deliver_notifications: false``): the incident still shows on the page, so drill against a
sandbox page or substitute ``statuspage.*: record`` in the runbook.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import quote

import httpx
from pydantic import Field

from siaga.actions import (
    ActionContext,
    ActionFailed,
    ActionParams,
    ActionSpec,
    Connection,
    Mode,
    Risk,
)

from . import _http
from ._http import http_client

__all__ = [
    "ACTIONS",
    "CreateIncident",
    "ResolveIncident",
    "StatuspageConnection",
    "UpdateIncident",
]

THROTTLED = (420, 429)
"""Statuspage answers 420 or 429 when a token goes past its rate limit (1 request a second)."""

IncidentStatus = Literal["investigating", "identified", "monitoring", "resolved"]
ComponentStatus = Literal[
    "operational", "under_maintenance", "degraded_performance", "partial_outage", "major_outage"
]
Impact = Literal["none", "maintenance", "minor", "major", "critical"]

_CONNECTION_HELP = (
    "The `statuspage` connection to use; default: the only one, or the one marked `default: true`."
)
_INCIDENT_HELP = (
    "The Statuspage incident id; default: the unresolved incident Siaga opened for this Siaga "
    "incident (or this run)."
)


class StatuspageConnection(Connection):
    """One Statuspage page, reached with an API key."""

    type: Literal["statuspage"] = "statuspage"
    page_id: str = Field(
        min_length=1, description="The page's id (on the API page of the Statuspage manager)."
    )
    api_key: str = Field(pattern=r"^secret://", description="secret://NAME of the API key.")
    base_url: str = Field(default="https://api.statuspage.io/v1", pattern=r"^https?://")
    timeout: float = Field(default=15.0, gt=0, description="Seconds to wait for Statuspage.")


class CreateIncident(ActionParams):
    """Open an incident on the status page."""

    name: str = Field(min_length=1, max_length=255, description="The incident's title.")
    body: str = Field(default="", max_length=25000, description="The first update's text.")
    status: IncidentStatus = "investigating"
    impact: Impact | None = Field(
        default=None, description="Overrides the impact Statuspage works out."
    )
    component_ids: list[str] = Field(
        default_factory=list, description="Components the incident affects."
    )
    components: dict[str, ComponentStatus] = Field(
        default_factory=dict, description="New status by component id, e.g. {abc123: major_outage}."
    )
    notify: bool = Field(
        default=True, description="Notify the page's subscribers (never in drills)."
    )
    connection: str | None = Field(default=None, description=_CONNECTION_HELP)


class UpdateIncident(ActionParams):
    """Post an update to an incident: new text, status, impact or component statuses."""

    incident_id: str | None = Field(default=None, description=_INCIDENT_HELP)
    body: str = Field(default="", max_length=25000, description="The update's text.")
    status: IncidentStatus | None = None
    name: str | None = Field(default=None, max_length=255, description="A new title.")
    impact: Impact | None = None
    components: dict[str, ComponentStatus] = Field(default_factory=dict)
    notify: bool = Field(
        default=True, description="Notify the page's subscribers (never in drills)."
    )
    connection: str | None = Field(default=None, description=_CONNECTION_HELP)


class ResolveIncident(ActionParams):
    """Resolve an incident, by default putting its components back to operational."""

    incident_id: str | None = Field(default=None, description=_INCIDENT_HELP)
    body: str = Field(default="", max_length=25000, description="The closing update's text.")
    operational: bool = Field(
        default=True, description="Set the incident's components back to operational."
    )
    notify: bool = Field(
        default=True, description="Notify the page's subscribers (never in drills)."
    )
    connection: str | None = Field(default=None, description=_CONNECTION_HELP)


class _Page:
    """One page of the Statuspage API."""

    def __init__(
        self, conn: StatuspageConnection, context: ActionContext, http: httpx.AsyncClient
    ) -> None:
        self.conn = conn
        self.http = http
        self.headers = {"Authorization": f"OAuth {context.secret(conn.api_key)}"}

    def _url(self, path: str = "") -> str:
        return f"{self.conn.base_url.rstrip('/')}/pages/{quote(self.conn.page_id, safe='')}{path}"

    async def call(
        self, method: str, path: str, *, body: Any = None, query: dict[str, Any] | None = None
    ) -> Any:
        response = await _http.send(
            self.http,
            method,
            self._url(path),
            provider="Statuspage",
            describe=_describe,
            throttled=THROTTLED,
            idempotent=method == "GET",
            headers=self.headers,
            params=query,
            json=body,
        )
        return response.json()

    async def unresolved(self) -> list[dict[str, Any]]:
        """Every unresolved incident of the page, page by page."""
        found: list[dict[str, Any]] = []
        page = 1
        while True:
            batch = await self.call(
                "GET", "/incidents/unresolved", query={"page": page, "per_page": 100}
            )
            found += batch
            if len(batch) < 100:
                return found
            page += 1

    async def incident(self, incident_id: str) -> dict[str, Any]:
        return await self.call("GET", f"/incidents/{quote(incident_id, safe='')}")


async def create_incident(
    params: CreateIncident, context: ActionContext, *, client: httpx.AsyncClient | None = None
) -> dict[str, Any]:
    conn = context.connection(StatuspageConnection, params.connection)
    incident: dict[str, Any] = {
        "name": params.name,
        "status": params.status,
        "body": params.body,
        "deliver_notifications": _notify(params.notify, context),
        "metadata": {"siaga": _marker(context)},
    }
    if params.impact:
        incident["impact_override"] = params.impact
    if params.component_ids or params.components:
        incident["component_ids"] = sorted({*params.component_ids, *params.components})
    if params.components:
        incident["components"] = dict(params.components)
    async with http_client(client, conn.timeout) as http:
        created = await _Page(conn, context, http).call(
            "POST", "/incidents", body={"incident": incident}
        )
    return _result(created)


async def reconcile_create(params: CreateIncident, context: ActionContext) -> dict[str, Any] | None:
    """The incident this step opened, if it is there (unresolved) with this step's key."""
    conn = context.connection(StatuspageConnection, params.connection)
    async with http_client(None, conn.timeout) as http:
        for incident in await _Page(conn, context, http).unresolved():
            if _siaga(incident).get("key") == context.idempotency_key:
                return {**_result(incident), "reconciled": True}
    return None


async def update_incident(
    params: UpdateIncident, context: ActionContext, *, client: httpx.AsyncClient | None = None
) -> dict[str, Any]:
    conn = context.connection(StatuspageConnection, params.connection)
    change: dict[str, Any] = {"deliver_notifications": _notify(params.notify, context)}
    if params.body:
        change["body"] = params.body
    if params.status:
        change["status"] = params.status
    if params.name:
        change["name"] = params.name
    if params.impact:
        change["impact_override"] = params.impact
    if params.components:
        change["components"] = dict(params.components)
        change["component_ids"] = sorted(params.components)
    async with http_client(client, conn.timeout) as http:
        page = _Page(conn, context, http)
        incident_id = params.incident_id or await _ours(page, context)
        updated = await page.call(
            "PATCH", f"/incidents/{quote(incident_id, safe='')}", body={"incident": change}
        )
    return _result(updated)


async def reconcile_update(params: UpdateIncident, context: ActionContext) -> dict[str, Any] | None:
    """The incident if it already shows this update (its status, and an update with its text)."""
    conn = context.connection(StatuspageConnection, params.connection)
    async with http_client(None, conn.timeout) as http:
        page = _Page(conn, context, http)
        incident_id = params.incident_id or await _ours(page, context)
        incident = await page.incident(incident_id)
    if params.status and incident.get("status") != params.status:
        return None
    if params.body and not any(
        u.get("body") == params.body for u in incident.get("incident_updates") or []
    ):
        return None
    return {**_result(incident), "reconciled": True}


async def resolve(
    params: ResolveIncident, context: ActionContext, *, client: httpx.AsyncClient | None = None
) -> dict[str, Any]:
    conn = context.connection(StatuspageConnection, params.connection)
    change: dict[str, Any] = {
        "status": "resolved",
        "deliver_notifications": _notify(params.notify, context),
    }
    if params.body:
        change["body"] = params.body
    async with http_client(client, conn.timeout) as http:
        page = _Page(conn, context, http)
        incident_id = params.incident_id or await _ours(page, context)
        if params.operational:
            components = (await page.incident(incident_id)).get("components") or []
            ids = sorted(str(c["id"]) for c in components if isinstance(c, dict) and c.get("id"))
            if ids:
                change["components"] = {i: "operational" for i in ids}
                change["component_ids"] = ids
        resolved = await page.call(
            "PATCH", f"/incidents/{quote(incident_id, safe='')}", body={"incident": change}
        )
    return _result(resolved)


async def reconcile_resolve(
    params: ResolveIncident, context: ActionContext
) -> dict[str, Any] | None:
    """The incident if it is resolved already; with no id given, resolved once none of this
    Siaga incident's status incidents is still unresolved."""
    conn = context.connection(StatuspageConnection, params.connection)
    async with http_client(None, conn.timeout) as http:
        page = _Page(conn, context, http)
        if params.incident_id is None:
            marker = _marker(context)["incident"]
            if any(_siaga(i).get("incident") == marker for i in await page.unresolved()):
                return None
            return {"id": None, "status": "resolved", "reconciled": True}
        incident = await page.incident(params.incident_id)
    return (
        {**_result(incident), "reconciled": True} if incident.get("status") == "resolved" else None
    )


async def _ours(page: _Page, context: ActionContext) -> str:
    """The id of the one unresolved incident Siaga opened for this Siaga incident (or run)."""
    marker = _marker(context)["incident"]
    ours = [i for i in await page.unresolved() if _siaga(i).get("incident") == marker]
    if len(ours) == 1:
        return str(ours[0]["id"])
    what = (
        "no unresolved incident"
        if not ours
        else f"{len(ours)} unresolved incidents ({', '.join(i['id'] for i in ours)})"
    )
    raise ActionFailed(
        f"Statuspage page {page.conn.page_id} has {what} opened by Siaga for {marker}",
        changed=False,
        todo="give the step's `incident_id` (e.g. \"{{ steps['<create step>'].output.id }}\")",
    )


def _marker(context: ActionContext) -> dict[str, str]:
    return {
        "key": context.idempotency_key,
        "incident": context.incident_id or context.run_id,
        "runbook": context.runbook_id,
        "step": context.step_id,
    }


def _siaga(incident: dict[str, Any]) -> dict[str, Any]:
    metadata = incident.get("metadata") or {}
    marker = metadata.get("siaga") if isinstance(metadata, dict) else None
    return marker if isinstance(marker, dict) else {}


def _notify(wanted: bool, context: ActionContext) -> bool:
    return wanted and context.mode is not Mode.DRILL


def _result(incident: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": incident.get("id"),
        "name": incident.get("name"),
        "status": incident.get("status"),
        "impact": incident.get("impact"),
        "shortlink": incident.get("shortlink"),
        "page_id": incident.get("page_id"),
        "reconciled": False,
    }


_describe = _http.message_in("message", "error", "errors")  # its ErrorEntity, or {"error": ...}


ACTIONS = (
    ActionSpec(
        name="statuspage.create_incident",
        params=CreateIncident,
        run=create_incident,
        risk=Risk.NOTIFY,
        summary="Open an incident on an Atlassian Statuspage page.",
        message_fields=("name", "body"),
        reconcile=reconcile_create,
    ),
    ActionSpec(
        name="statuspage.update_incident",
        params=UpdateIncident,
        run=update_incident,
        risk=Risk.NOTIFY,
        summary="Post an update (text, status, components) to a Statuspage incident.",
        message_fields=("name", "body"),
        reconcile=reconcile_update,
    ),
    ActionSpec(
        name="statuspage.resolve",
        params=ResolveIncident,
        run=resolve,
        risk=Risk.NOTIFY,
        summary="Resolve a Statuspage incident and set its components back to operational.",
        message_fields=("body",),
        reconcile=reconcile_resolve,
    ),
)

"""`website.notice`: publish a notice (a banner, a status line) on our own website or app through
an authenticated HTTP endpoint of its content system.

In ``connections.yaml``::

    connections:
      site:
        type: website
        url: https://cms.example.com/api/notices/{id}   # {id}: the notice's id
        bearer: secret://cms-token                      # Authorization: Bearer ...
        sign: {secret: secret://cms-signing-key}        # and/or an HMAC-SHA256 signature
        production: true
        sandbox: site-staging

The notice goes as JSON::

    {"id": "incident-inc-42", "title": "...", "text": "...", "level": "warning",
     "incident": "inc-42", "runbook": "social-media-storm", "step": "banner", ...fields}

with ``Idempotency-Key: <incident or run>:<step>``. With ``{id}`` in the URL the method is PUT (it
may be set to POST): the same notice put twice is one notice, so a call that may have arrived is
simply made again, and later steps of the incident update the notice in place (every notice step
of an incident writes the same id unless it names its own). Without ``{id}`` the method is POST and
the site must honour the Idempotency-Key; a POST whose outcome is unknown is left to a person.

``sign:`` adds ``X-Siaga-Timestamp`` and ``X-Siaga-Signature: sha256=<HMAC-SHA256 of
"<timestamp>.<body>">``, as `http.request` does. 429 and 503 are waited out (``Retry-After``);
another 4xx is a refusal with the site's own message, scrubbed of our secrets.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any, Literal
from urllib.parse import quote

import httpx
from pydantic import Field, model_validator

from siaga.actions import (
    ActionContext,
    ActionParams,
    ActionSpec,
    CannotReconcile,
    Connection,
    DrillBehaviour,
    Risk,
)

from . import _http
from ._http import http_client
from ._social import Posted, account, to_outbox_instead
from .webhook import Signing, signature

__all__ = ["ACTIONS", "WebsiteConnection", "WebsiteNotice", "notice", "notice_id"]

Level = Literal["info", "warning", "critical", "resolved"]


class WebsiteConnection(Connection):
    """An endpoint of our website's content system that publishes notices."""

    type: Literal["website"] = "website"
    url: str = Field(
        pattern=r"^https?://", description="Where notices are published; {id} stands for the notice's id."
    )
    method: Literal["PUT", "POST"] | None = Field(
        default=None, description="Default: PUT when the URL has {id}, else POST."
    )
    bearer: str | None = Field(
        default=None, pattern=r"^secret://", description="secret://NAME of a bearer token."
    )
    sign: Signing | None = Field(default=None, description="Sign each body with HMAC-SHA256.")
    headers: dict[str, str] = Field(default_factory=dict, description="Further headers, sent as they are.")
    timeout: float = Field(default=10.0, gt=0, description="Seconds to wait for the site.")

    @model_validator(mode="after")
    def _authenticated(self) -> WebsiteConnection:
        if self.bearer is None and self.sign is None:
            raise ValueError("give bearer, sign, or both: a notice is never published unauthenticated")
        return self

    @property
    def verb(self) -> str:
        return self.method or ("PUT" if "{id}" in self.url else "POST")


class WebsiteNotice(ActionParams):
    """Publish (or replace) a notice on the website (or to the outbox when none is configured)."""

    title: str = Field(min_length=1, max_length=200, description="The notice's heading.")
    text: str = Field(min_length=1, description="The notice's text.")
    level: Level = Field(default="warning", description="info, warning, critical or resolved.")
    notice_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="The notice's id (default: one per incident, so later steps update it).",
    )
    fields: dict[str, Any] = Field(
        default_factory=dict, description="Further fields the site's notices take (placement, link...)."
    )
    connection: str | None = Field(default=None, description="The `type: website` connection to use.")


def notice_id(context: ActionContext) -> str:
    """The id every notice step of this incident (or run) writes unless it names its own."""
    return "incident-" + re.sub(r"[^A-Za-z0-9._-]", "-", context.incident_id or context.run_id)


async def notice(
    params: WebsiteNotice, context: ActionContext, *, client: httpx.AsyncClient | None = None
) -> Posted:
    site = account(context, WebsiteConnection, params.connection)
    key = params.notice_id or notice_id(context)
    if site is None:
        return await to_outbox_instead(context, "website", f"website:{key}", params.text, params.title)
    body = json.dumps(
        {
            **params.fields,
            "id": key,
            "title": params.title,
            "text": params.text,
            "level": params.level,
            "incident": context.incident_id or context.run_id,
            "runbook": context.runbook_id,
            "step": context.step_id,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
    headers = {
        **site.headers,
        "Content-Type": "application/json",
        "Idempotency-Key": context.idempotency_key,
    }
    if site.bearer is not None:
        headers["Authorization"] = f"Bearer {context.secret(site.bearer)}"
    if site.sign is not None:
        stamp = str(int(time.time()))
        headers[site.sign.timestamp_header] = stamp
        headers[site.sign.header] = signature(context.secret(site.sign.secret), stamp, body)
    url = site.url.replace("{id}", quote(key, safe=""))
    async with http_client(client, site.timeout) as http:
        response = await _http.send(
            http,
            site.verb,
            url,
            provider="the website",
            idempotent=site.verb == "PUT",
            describe=_describe,
            content=body,
            headers=headers,
        )
    try:
        answer = response.json()
    except ValueError:
        answer = {}
    link = answer.get("url") if isinstance(answer, dict) else None
    return Posted(delivered_via="website", to=f"website:{key}", id=key, url=str(link) if link else None)


async def reconcile(params: WebsiteNotice, context: ActionContext) -> Posted | None:
    """None when the notice is PUT (putting it again is safe); a POST cannot be asked about."""
    site = account(context, WebsiteConnection, params.connection)
    if site is None or site.verb == "PUT":
        return None
    raise CannotReconcile("the website takes notices by POST and Siaga cannot ask it whether one arrived")


_describe = _http.message_in("error", "message", "detail")


ACTIONS = (
    ActionSpec(
        name="website.notice",
        params=WebsiteNotice,
        run=notice,
        risk=Risk.NOTIFY,
        drill=DrillBehaviour.RECORD,
        summary="Publish or update a notice on our website (authenticated HTTP, bearer or HMAC).",
        message_fields=("title", "text"),
        reconcile=reconcile,
    ),
)

"""`outbox.send`: the default channel. A message is recorded locally and shown in the run.

Used whenever no provider is configured: every message lands in ``<SIAGA_HOME>/outbox.jsonl``
and as a Markdown artifact of the run, so a drill on a bare machine shows what would be said.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import Field

from siaga.actions import ActionContext, ActionParams, ActionSpec, Risk
from siaga.home import ensure_home, private_file


class OutboxSend(ActionParams):
    """Record a message for an audience or channel."""

    to: str = Field(default="team", description="Audience or channel: team, customers, regulator...")
    subject: str = Field(default="", description="A short subject line.")
    message: str = Field(min_length=1, description="The text of the message.")


def outbox_path(home: Path) -> Path:
    return home / "outbox.jsonl"


def read_outbox(home: Path) -> list[dict[str, Any]]:
    """Every message recorded under `home`, oldest first."""
    path = outbox_path(home)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


async def send(params: OutboxSend, context: ActionContext) -> dict[str, Any]:
    key = context.idempotency_key
    for earlier in read_outbox(context.home):
        if earlier.get("idempotency_key") == key:
            return earlier
    entry = {
        "id": uuid.uuid4().hex,
        "at": datetime.now(UTC).isoformat(),
        "idempotency_key": key,
        "runbook": context.runbook_id,
        "run_id": context.run_id,
        "step": context.step_id,
        "mode": str(context.mode),
        "to": params.to,
        "subject": params.subject,
        "message": params.message,
    }
    path = outbox_path(ensure_home(context.home))
    with os.fdopen(private_file(path), "a", encoding="utf-8") as file:  # codes in plain text: 0600
        file.write(json.dumps(entry) + "\n")
    subject = f" — {params.subject}" if params.subject else ""
    await context.publish(
        f"outbox-{context.step_id}",
        f"### Outbox: to {params.to}{subject}\n\n{params.message}\n",
    )
    return entry


ACTIONS = (
    ActionSpec(
        name="outbox.send",
        params=OutboxSend,
        run=send,
        risk=Risk.NOTIFY,
        summary="Record a message locally and in the run's artifacts (the default channel).",
        message_fields=("subject", "message"),
    ),
)

"""Reaching a person of the roster: approval codes, deadline reminders and escalations, situation
reports all go the same way, through the person's own channels."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

from siaga.actions import ActionContext, ActionRegistry
from siaga.logs import get_logger
from siaga.runbook.roster import Roster
from siaga.secrets import REDACTOR

log = get_logger("siaga.reach")


async def reach(
    person: str, subject: str, text: str, registry: ActionRegistry, roster: Roster | None, context: ActionContext
) -> str:
    """Send `text` to `person` through their roster channel (slack, then WhatsApp where a WhatsApp
    number is configured, then e-mail), else the outbox, each next one when the one before fails
    (a WhatsApp session message fails more than 24 hours after the person last wrote to the
    number); the channel it went through ("none" if every one failed). Each try is its own
    side-effect ledger entry under `context`'s step id plus a random suffix."""
    channels = roster.people[person].channels if roster and person in roster.people else None
    attempts: list[tuple[str, str, dict[str, Any]]] = []
    if channels and channels.slack:
        attempts.append(("slack", "slack.post", {"channel": channels.slack, "title": subject, "text": text}))
    if channels and channels.whatsapp and any(c.get("type") == "whatsapp" for c in context.connections.values()):
        attempts.append(("whatsapp", "whatsapp.send", {"to": channels.whatsapp, "text": f"*{subject}*\n{text}"}))
    if channels and channels.email:
        attempts.append(("email", "email.send", {"to": [channels.email], "subject": subject, "text": text}))
    attempts.append(("outbox", "outbox.send", {"to": f"person:{(channels and channels.outbox) or person}",
                                                "subject": subject, "message": text}))
    for name, action, params in attempts:
        spec = registry[action]
        try:
            result = await spec.run(spec.params.model_validate(params),
                                    replace(context, step_id=f"{context.step_id}-{uuid.uuid4().hex[:6]}"))
        except Exception as exc:  # noqa: BLE001 - a failed channel falls back to the next one
            log.warning("could not reach a person", person=person, channel=name, error=REDACTOR.text(str(exc)))
            continue
        via = getattr(result, "delivered_via", None) or (result.get("delivered_via") if isinstance(result, dict) else None)
        return str(via or name)
    return "none"

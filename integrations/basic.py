"""`wait` and `note`: pause a runbook for a while, or write a note into the run's record."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import Field

from siaga.actions import ActionContext, ActionParams, ActionSpec, Risk
from siaga.runbook.durations import Duration, format_duration


class Wait(ActionParams):
    """Wait before going on (let a failover settle, give people time to read)."""

    duration: Duration = Field(description="How long to wait, e.g. 30s or 5m.")
    reason: str = Field(default="", description="Why the runbook waits.")


class Note(ActionParams):
    """Write a note into the run's record (logs and artifacts)."""

    text: str = Field(min_length=1, description="The note, Markdown allowed.")


async def wait(params: Wait, context: ActionContext) -> dict[str, Any]:
    await asyncio.sleep(params.duration.total_seconds())
    return {"waited": format_duration(params.duration), "reason": params.reason}


async def note(params: Note, context: ActionContext) -> dict[str, Any]:
    await context.publish(f"note-{context.step_id}", params.text)
    return {"text": params.text}


ACTIONS = (
    ActionSpec(
        name="wait",
        params=Wait,
        run=wait,
        risk=Risk.READ,
        summary="Wait for a while before the next steps.",
    ),
    ActionSpec(
        name="note",
        params=Note,
        run=note,
        risk=Risk.READ,
        summary="Write a note into the run's logs and artifacts.",
    ),
)

"""What a person sees before deciding: the gate's evidence as Markdown for the resume form. Pure.

Every value that comes from the run (parameters, names, comments) is escaped, or fenced in a code
block longer than any backtick run it holds, so it cannot change how the form reads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~])")


def escape(text: object) -> str:
    """`text` with Markdown's special characters escaped."""
    return _SPECIAL.sub(r"\\\1", str(text)).replace("\n", " ")


def fenced(value: Any, language: str = "json") -> str:
    text = value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False, default=str)
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{text}\n{fence}"


def gate_description(
    *,
    title: str,
    runbook_id: str,
    incident_id: str | None,
    mode: str,
    step_id: str,
    action: str,
    summary: str,
    params: Any,
    undo: Mapping[str, Any] | None,
    preview: Any,
    deadline: datetime,
    on_timeout: str,
    rule: str,
    eligible: Mapping[str, str],
    votes: Sequence[Mapping[str, Any]],
    notes: Sequence[str] = (),
) -> str:
    """The Markdown shown above the resume form."""
    drill = " (DRILL)" if mode == "drill" else ""
    lines = [
        f"### Approval needed{drill}: {escape(title)}",
        "",
        f"- **Runbook:** {escape(runbook_id)}",
        f"- **Incident:** {escape(incident_id or 'none (started by hand)')}",
        f"- **Step:** {escape(step_id)}, action **{escape(action)}**: {escape(summary)}",
        f"- **Deadline:** {deadline:%Y-%m-%d %H:%M:%S} UTC, then **{escape(on_timeout)}**",
        f"- **Rule:** {escape(rule)}",
        f"- **May approve now:** {', '.join(f'{escape(name)} ({escape(pid)})' for pid, name in eligible.items()) or 'nobody'}",
    ]
    if votes:
        lines.append("- **So far:** " + "; ".join(
            f"{escape(v['by'])} {escape(v['choice'])} at {escape(v['at'])}" for v in votes
        ))
    lines += ["", "**Exact parameters:**", "", fenced(params)]
    if undo:
        lines += ["", f"**Undo if a later step fails:** {escape(undo['action'])}", "", fenced(undo.get("with") or {})]
    if preview is not None:
        lines += ["", "**Preview (what this would touch):**", "", fenced(preview)]
    for note in notes:
        lines += ["", f"> {escape(note)}"]
    lines += [
        "",
        "Choose your id, type the 8-digit one-time code you were sent, and approve or reject. "
        "Codes are personal, single use and bound to these exact parameters.",
    ]
    return "\n".join(lines)

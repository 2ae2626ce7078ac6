"""What a person sees before deciding: a run's open gates and their evidence as Markdown for the
Resume form, readable as text (a statement reads as a statement, not as escaped JSON). Pure.

Every value that comes from the run (parameters, names, comments) is escaped, or fenced in a code
block longer than any backtick run it holds, so it cannot change how the form reads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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


def readable(value: Any, depth: int = 0) -> list[str]:
    """`value` as Markdown a person reads: a mapping as a list of names and values, short text
    inline, long or multi-line text in a text block of its own (exactly as it will be sent)."""
    pad = "  " * depth
    if isinstance(value, Mapping):
        if not value:
            return [f"{pad}- (none)"]
        lines = []
        for name, item in value.items():
            if isinstance(item, Mapping | list) and item:
                lines.append(f"{pad}- **{escape(name)}:**")
                lines += readable(item, depth + 1)
            elif isinstance(item, str) and ("\n" in item or len(item) > 80):
                lines += [f"{pad}- **{escape(name)}:**", "", *_indent(fenced(item, "text"), pad + "  "), ""]
            else:
                lines.append(f"{pad}- **{escape(name)}:** {_scalar(item)}")
        return lines
    if isinstance(value, list):
        lines = []
        for item in value:
            if isinstance(item, Mapping | list) and item:
                lines.append(f"{pad}-")
                lines += readable(item, depth + 1)
            else:
                lines.append(f"{pad}- {_scalar(item)}")
        return lines or [f"{pad}- (none)"]
    return [f"{pad}{_scalar(value)}"]


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return escape(value) if value else "(empty)"
    return f"`{json.dumps(value, ensure_ascii=False)}`"


def _indent(text: str, pad: str) -> list[str]:
    return [pad + line for line in text.splitlines()]


@dataclass(frozen=True)
class GateView:
    """One open gate as the form shows it."""

    step_id: str
    mode: str
    deadline: datetime
    evidence: Mapping[str, Any]
    may_decide: Mapping[str, str]  # person id -> name: only those whose vote can still count
    votes: Sequence[str]  # "Citra Lestari approved at 10:02:11"


def gate_section(gate: GateView) -> list[str]:
    """One gate's evidence: what runs, with exactly which values, what it would touch, the undo,
    the rule and the clock."""
    ev = gate.evidence
    lines = [
        f"### Step `{escape(gate.step_id)}`: {escape(ev.get('action', ''))}",
        "",
        f"{escape(ev.get('summary', ''))}",
        "",
    ]
    if gate.mode == "drill":
        lines.append(f"- **DRILL:** this action will be {escape(ev.get('drill') or 'recorded only, not called')}")
    else:
        risk = ev.get("risk")
        lines.append(f"- **LIVE** action{f' (risk: {escape(risk)})' if risk else ''}")
    lines += [
        f"- **Deadline:** {gate.deadline:%Y-%m-%d %H:%M:%S} UTC, then **{escape(ev.get('on_timeout', 'reject'))}**",
        f"- **Rule:** {escape(ev.get('rule', ''))}",
        "- **Whose vote can still count:** "
        + (", ".join(f"{escape(name)} ({escape(pid)})" for pid, name in gate.may_decide.items()) or "nobody"),
    ]
    if gate.votes:
        lines.append("- **So far:** " + "; ".join(escape(v) for v in gate.votes))
    if ev.get("on_timeout") == "approve":
        lines.append("- **If nobody decides by the deadline, this step RUNS** (the runbook says so).")
    lines += ["", "**It will run with exactly:**", "", *readable(ev.get("params") or {})]
    if ev.get("inputs_from"):
        lines += ["", "**What the steps before it found:**", "", *readable(ev["inputs_from"])]
    if ev.get("preview") is not None:
        lines += ["", "**Preview (what this would touch):**", "", *readable(ev["preview"])]
    undo = ev.get("undo")
    if undo:
        lines += ["", f"**Undo if a later step fails:** {escape(undo['action'])} with", "", *readable(undo.get("with") or {})]
    return lines


def form_description(
    *, title: str, runbook_id: str, incident_id: str | None, gates: Sequence[GateView], answers: Sequence[str] = (),
) -> str:
    """The Markdown shown above the Resume form of a run waiting at `gates`; `answers` are the
    outcomes of the latest answers given (so a person sees whether their vote counted)."""
    drill = " (DRILL)" if gates and all(g.mode == "drill" for g in gates) else ""
    lines = [
        f"## Decisions needed{drill}: {escape(title)}",
        "",
        f"Runbook {escape(runbook_id)}, incident {escape(incident_id or 'none (started by hand)')}. "
        f"{len(gates)} step{'s' if len(gates) != 1 else ''} wait{'s' if len(gates) == 1 else ''} for people.",
    ]
    if answers:
        lines += ["", "**Latest answers:**", ""] + [f"- {escape(a)}" for a in answers]
    for gate in gates:
        lines += ["", *gate_section(gate)]
    lines += [
        "",
        "---",
        "Choose the step, your id and approve or reject, and type the matching 8-digit code you were "
        "sent: your APPROVE code approves, your REJECT code rejects. Codes are personal, single use and "
        "bound to these exact values.",
    ]
    return "\n".join(lines)

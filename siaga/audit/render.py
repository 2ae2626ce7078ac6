"""Readable views of trail records: a Markdown timeline and a decisions table. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from siaga.canonical import canonical_json

from .chain import AuditRecord

DECISIONS = ("approved", "rejected", "refused", "locked_out", "escalated", "timed_out", "decided")
"""The gate events a decisions table shows (not openings, codes sent or reminders)."""

_SUMMARY_KEYS = ("step", "action", "outcome", "status", "mode", "note", "error", "decision", "runbook", "reason")


def describe(record: AuditRecord) -> str:
    """One line on what a record says: its notable fields, in a fixed order."""
    data = record.data
    parts = [f"{key}: {_short(data[key])}" for key in _SUMMARY_KEYS if data.get(key) not in (None, "")]
    return "; ".join(parts)


def timeline_markdown(records: Iterable[AuditRecord], title: str = "Timeline") -> str:
    """A Markdown table of `records`, oldest first, ending with the chain's head hash."""
    lines = [f"### {title}", "", "| # | time (UTC) | event | by | details |", "| --- | --- | --- | --- | --- |"]
    last: AuditRecord | None = None
    for record in records:
        by = " / ".join(part for part in (record.actor, record.channel) if part)
        lines.append(
            f"| {record.seq} | {record.at.strftime('%H:%M:%S.%f')[:-3]} | `{record.kind}` | {_cell(by)} | {_cell(describe(record))} |"
        )
        last = record
    if last is None:
        lines.append("| | | nothing recorded yet | | |")
    else:
        lines += ["", f"Chain `{last.chain}` at record {last.seq}, hash `{last.hash}`."]
    return "\n".join(lines) + "\n"


def decision_rows(records: Iterable[AuditRecord]) -> list[dict[str, Any]]:
    """The ``gate.*`` votes and decisions as table rows: gate, decision, by whom, when, evidence hash."""
    rows = []
    for record in records:
        data, event = record.data, record.kind.removeprefix("gate.")
        if not record.kind.startswith("gate.") or event not in DECISIONS:
            continue
        rows.append({
            "gate": str(data.get("gate") or data.get("step") or ""),
            "event": event,
            "decision": str(data.get("decision") or (event if event in ("approved", "rejected") else "")),
            "by": record.actor or "",
            "when": record.at.isoformat(timespec="seconds"),
            "evidence": str(data.get("evidence_hash") or data.get("params_hash") or ""),
            "record": f"{record.seq} {record.hash[:12]}",
        })
    return rows


def _short(value: Any, limit: int = 120) -> str:
    text = value if isinstance(value, str) else canonical_json(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")



"""How open incidents rank: severity (sev1 first), then priority (P1 first; none last), then age
(oldest first). Runs start in that order and `siaga incidents` lists them so."""

from __future__ import annotations

from siaga.runbook import Runbook
from siaga.store import incidents

from .alert import Alert

__all__ = ["PRIORITIES", "RANK", "priority_of"]


PRIORITIES = ("P1", "P2", "P3", "P4", "P5")


def priority_of(alert: Alert, runbook: Runbook) -> str | None:
    """The incident's priority: the alert's `priority` label when it names one (P1 to P5; ``p2``
    and ``2`` count too), else the runbook's `impact.priority`."""
    label = str(alert.labels.get("priority") or "").strip().upper()
    label = f"P{label}" if label.isdigit() else label
    return label if label in PRIORITIES else runbook.impact.priority


RANK = (
    incidents.c.severity.is_(None), incidents.c.severity,
    incidents.c.priority.is_(None), incidents.c.priority,
    incidents.c.opened_at, incidents.c.id,
)
"""The ranking of open incidents as SQL ORDER BY terms: severity (sev1 first), priority (P1 first),
none of either last, then the oldest first. Both values sort as text: sev1 < sev2, P1 < P2."""

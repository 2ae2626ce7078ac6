"""The routing tests' runbooks and alerts: two runbooks (Alertmanager's gateway errors, a threshold
on generic posts) made in memory, their catalog, the alerts they route and the clock."""

from __future__ import annotations

from datetime import UTC, datetime

from siaga.incidents import Alert, AlertStatus
from siaga.runbook.models import Runbook

NOW = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
STARTED = datetime(2026, 11, 24, 2, 55, tzinfo=UTC)


def runbook(id: str, *triggers: dict) -> Runbook:
    return Runbook.model_validate(
        {
            "runbook": id,
            "title": id,
            "severity": "sev1",
            "roles": {"ops": ["eko"]},
            "inputs": {"region": {"type": "string", "default": "ap-southeast-3"}},
            "triggers": list(triggers),
            "steps": [{"id": "note", "action": "note", "with": {"text": "hi"}}],
        }
    )


GATEWAY = runbook(
    "gateway",
    {
        "source": "alertmanager",
        "match": {"alertname": "GatewayErrors"},
        "group_by": ["region"],
        "inputs": {"region": "{{ alert.labels.region }}"},
    },
)
STORM = runbook(
    "storm",
    {"source": "generic", "group_by": ["topic"], "threshold": {"count": 3, "within": "10m", "match": {"sentiment": "negative"}}},
)


def alert(region: str = "ap-southeast-1", *, fingerprint: str | None = None, status: str = "firing",
          starts_at: datetime = STARTED, source: str = "alertmanager", **labels: str) -> Alert:
    labels = {"alertname": "GatewayErrors", "region": region, **labels}
    return Alert(
        source=source,
        fingerprint=fingerprint or f"fp-{region}",
        status=AlertStatus(status),
        labels=labels,
        starts_at=starts_at,
    )


CATALOG = {"gateway": GATEWAY, "storm": STORM}

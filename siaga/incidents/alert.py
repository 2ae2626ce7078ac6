"""The one shape every alert source is normalised into: what the incident engine takes in."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class AlertStatus(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


class Alert(BaseModel):
    """One alert from one source.

    `fingerprint` identifies the problem (the same across firing, resolved and re-firing);
    `starts_at` tells one episode of it from the next; (fingerprint, starts_at, status) is what
    a repeat of the same notification shares.
    """

    model_config = ConfigDict(frozen=True)

    source: str
    fingerprint: str
    status: AlertStatus
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    raw: dict[str, Any] = Field(default_factory=dict)
    """The source's own record of this alert, kept for the audit trail."""

    @property
    def episode(self) -> tuple[str, str, str]:
        """What repeats of one notification share: (fingerprint, starts_at, status)."""
        started = self.starts_at.isoformat() if self.starts_at else ""
        return self.fingerprint, started, str(self.status)

    def template_context(self) -> dict[str, Any]:
        """The alert as runbook templates read it: ``alert.labels.region``."""
        return {
            "source": self.source,
            "fingerprint": self.fingerprint,
            "status": str(self.status),
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "starts_at": self.starts_at.isoformat() if self.starts_at else None,
            "ends_at": self.ends_at.isoformat() if self.ends_at else None,
        }

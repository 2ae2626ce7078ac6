"""What senders post to the receiver: Alertmanager's webhook bodies, and the headers of a generic
signed webhook."""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

SOCIAL_SECRET = "social-hmac-secret"


def am_alert(region: str, status: str = "firing", *, fingerprint: str | None = None,
             starts_at: str = "2026-11-24T03:00:00Z") -> dict[str, Any]:
    """One alert as Alertmanager's webhook sends it."""
    return {
        "status": status,
        "labels": {"alertname": "GatewayErrors", "region": region, "severity": "critical"},
        "annotations": {"summary": f"5xx at the gateway in {region}"},
        "startsAt": starts_at,
        "endsAt": "2026-11-24T03:10:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.example/graph",
        "fingerprint": fingerprint or f"fp-{region}",
    }


def webhook(*alerts: dict[str, Any]) -> dict[str, Any]:
    """Alertmanager's webhook body (version 4) around `alerts`."""
    firing = any(a["status"] == "firing" for a in alerts)
    return {
        "version": "4",
        "groupKey": '{}:{alertname="GatewayErrors"}',
        "truncatedAlerts": 0,
        "status": "firing" if firing else "resolved",
        "receiver": "siaga",
        "groupLabels": {"alertname": "GatewayErrors"},
        "commonLabels": {"alertname": "GatewayErrors"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example",
        "alerts": list(alerts),
    }


def signed(body: bytes, secret: str = SOCIAL_SECRET) -> dict[str, str]:
    """The headers of a generic signed webhook (what Siaga's own http.request sends)."""
    stamp = str(int(time.time()))
    digest = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"X-Siaga-Timestamp": stamp, "X-Siaga-Signature": f"sha256={digest}", "Content-Type": "application/json"}

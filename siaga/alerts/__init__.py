"""Alerts: one parser per source turns a webhook payload into `Alert`s; signatures prove where a
payload came from; routing groups alerts into incidents. The parsers and routing are pure.

* `parse(source, payload) -> list[Alert]` (siaga.alerts.parsers), raising `BadPayload`;
* `verify(source, headers, body, config, now, fetch_certificate=None)` (siaga.alerts.signatures),
  raising `Unauthenticated` (401) or `Forbidden` (403); `SourceAuth` configures it.
"""

from .model import Alert, AlertStatus, BadPayload
from .parsers import SOURCES, generic_fingerprint, parse, parse_body, sns_subscribe_url
from .signatures import (
    AuthError,
    Forbidden,
    MemoryReplayGuard,
    ReplayGuard,
    SourceAuth,
    Unauthenticated,
    replay_key,
    verify,
)

__all__ = [
    "SOURCES",
    "Alert",
    "AlertStatus",
    "AuthError",
    "BadPayload",
    "Forbidden",
    "MemoryReplayGuard",
    "ReplayGuard",
    "SourceAuth",
    "Unauthenticated",
    "generic_fingerprint",
    "parse",
    "parse_body",
    "replay_key",
    "sns_subscribe_url",
    "verify",
]

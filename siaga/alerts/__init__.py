"""Alerts: the way in. One parser per source turns a webhook payload into `Alert`s (the incident
engine's input, `siaga.incidents`); signatures prove where a payload came from; the receiver takes
webhooks over HTTP. The parsers are pure. Alerts may import the incident engine, never the reverse.

* `parse(source, payload) -> list[Alert]` (siaga.alerts.parsers), raising `BadPayload`;
* `verify(source, headers, body, config, now, fetch_certificate=None)` (siaga.alerts.signatures),
  raising `Unauthenticated` (401) or `Forbidden` (403); `SourceAuth` configures it.
"""

from siaga.incidents.alert import Alert, AlertStatus

from .parsers import SOURCES, BadPayload, generic_fingerprint, parse, parse_body, sns_subscribe_url
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

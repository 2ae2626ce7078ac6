"""The sending side of `siaga.alerts.signatures`: the headers that prove a webhook body, as each
source sends them, for `siaga alert send` (testing a routing rule with a saved payload) and for
tests.

Signing uses the verifying module's own HMAC, header names and message layout, and every signature
made here is checked by `signatures.verify` before it is returned, so the two sides cannot drift
apart unnoticed.

* ``alertmanager``: ``Authorization: Bearer <token>``.
* ``grafana``: ``X-Grafana-Alerting-Signature: <hex>`` (HMAC-SHA256 of the body, or of
  ``<timestamp>:<body>`` with a timestamp header), or a bearer token.
* ``pagerduty``: ``X-PagerDuty-Signature: v1=<hex>`` (HMAC-SHA256 of the body).
* generic (any other source name): ``X-Siaga-Timestamp`` and ``X-Siaga-Signature: sha256=<hex>``,
  the HMAC-SHA256 of ``<timestamp>.<body>``.
* ``sns`` (CloudWatch through SNS): SNS signs with AWS's key, so nothing is added; the saved
  message must carry its own signature. Only ``x-amz-sns-message-type`` is set, as SNS does.
"""

from __future__ import annotations

import json
from datetime import datetime

from pydantic import SecretStr

from .signatures import (
    GENERIC_SIGNATURE_HEADER,
    GENERIC_TIMESTAMP_HEADER,
    GRAFANA_SIGNATURE_HEADER,
    PAGERDUTY_SIGNATURE_HEADER,
    SourceAuth,
    _hmac_hex,
    verify,
)

__all__ = ["KINDS", "SigningError", "kind_of", "sign"]

KINDS = ("alertmanager", "grafana", "pagerduty", "generic", "sns")
"""How a source proves its webhooks; every source name not built in is `generic`."""


class SigningError(ValueError):
    """The body cannot be signed for that source as asked (a credential is missing)."""


def kind_of(source: str) -> str:
    """The signing scheme of a source name (the last part of ``/hooks/<source>``)."""
    if source in ("cloudwatch", "sns"):
        return "sns"
    return source if source in KINDS else "generic"


def sign(
    kind: str,
    source: str,
    body: bytes,
    now: datetime,
    *,
    secret: str | None = None,
    token: str | None = None,
    timestamp_header: str | None = None,
) -> dict[str, str]:
    """The headers proving `body` for `source` (served at ``/hooks/<source>``) under scheme
    `kind`; `secret` is the HMAC key, `token` the bearer token. Raise SigningError when the
    scheme needs a credential that is not given."""
    headers = {"Content-Type": "application/json"}
    if kind == "sns":
        try:
            message_type = json.loads(body).get("Type")
        except (ValueError, AttributeError):
            message_type = None
        if isinstance(message_type, str):
            headers["x-amz-sns-message-type"] = message_type
        return headers  # SNS signs with AWS's key: the saved message carries its signature
    auth: SourceAuth
    if kind == "alertmanager" or (kind == "grafana" and token and not secret):
        if not token:
            raise SigningError(f"{source}: a bearer token is needed (--token)")
        headers["Authorization"] = f"Bearer {token}"
        auth = SourceAuth(bearer_token=SecretStr(token))
    else:
        if not secret:
            raise SigningError(f"{source}: an HMAC secret is needed (--secret)")
        key = SecretStr(secret)
        stamp = str(int(now.timestamp()))
        if kind == "grafana":
            message = f"{stamp}:".encode() + body if timestamp_header else body
            headers[GRAFANA_SIGNATURE_HEADER] = _hmac_hex(key, message)
            if timestamp_header:
                headers[timestamp_header] = stamp
            auth = SourceAuth(hmac_secrets=[key], timestamp_header=timestamp_header)
        elif kind == "pagerduty":
            headers[PAGERDUTY_SIGNATURE_HEADER] = f"v1={_hmac_hex(key, body)}"
            auth = SourceAuth(hmac_secrets=[key])
        elif kind == "generic":
            headers[GENERIC_TIMESTAMP_HEADER] = stamp
            headers[GENERIC_SIGNATURE_HEADER] = f"sha256={_hmac_hex(key, stamp.encode() + b'.' + body)}"
            auth = SourceAuth(hmac_secrets=[key])
        else:
            raise SigningError(f"unknown source kind {kind!r} (one of {', '.join(KINDS)})")
    verify(kind, headers, body, auth, now)  # what the receiver will check (any unknown name is generic)
    return headers

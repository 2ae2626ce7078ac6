"""Authenticity of alert webhooks: pure checks of headers and raw body against configured secrets.

Public surface (stable; the receiver app builds on it)::

    verify(source: str, headers: Mapping[str, str], body: bytes, config: SourceAuth, now: datetime,
           fetch_certificate: Callable[[str], bytes] | None = None,
           *, replay_guard: ReplayGuard | None = None) -> None
    replay_key(source: str, headers: Mapping[str, str], body: bytes,
               config: SourceAuth) -> str | None
    SourceAuth                      # per-source configuration, secrets already resolved
    AuthError                       # base; `.reason` and `.status_code`
      Unauthenticated (401)         # no proof, or one that fails: missing, wrong, tampered, stale
      Forbidden (403)               # proven, but refused: TopicArn or certificate host not
                                    # allowed, or a delivery already seen (replay)
    ReplayGuard, MemoryReplayGuard  # "seen this delivery within the window?"

`verify` returns None when the request is authentic and raises `Unauthenticated` or `Forbidden`
with a reason otherwise. It does no I/O and reads no clock: `now` is given, and the SNS signing
certificate comes from the injected `fetch_certificate(url) -> PEM bytes`, called only for an https
URL on an allowed host. `headers` may be any Mapping (Starlette's `Headers` or a dict): names are
compared case-insensitively. Every secret comparison is constant-time (`hmac.compare_digest`).

Schemes by source (any source name not listed is a generic source):

* ``alertmanager``: ``Authorization: Bearer <token>`` (Alertmanager cannot sign).
* ``grafana``: Grafana's HMAC-SHA256 signature, or a bearer token. Grafana (grafana/alerting,
  ``http/hmac.go``) puts the bare lowercase hex digest in ``X-Grafana-Alerting-Signature`` (the
  header name is configurable there and here; a code comment says ``X-Grafana-Alert-Signature``,
  but the constant sent is ``X-Grafana-Alerting-Signature``). It signs the body alone, unless a
  timestamp header is configured (there is no default name; Grafana's docs use
  ``X-Grafana-Alerting-Signature-Timestamp``): then it sends Unix seconds in that header and signs
  ``<timestamp>:<body>``. Configure the same `timestamp_header` here to get a timestamp window and
  replay protection; without one, a captured request can be replayed as-is.
* ``cloudwatch``: the SNS message signature (SignatureVersion 1: SHA1withRSA, 2: SHA256withRSA)
  over SNS's canonical string; the TopicArn must be allowed (checked first: a message from another
  topic makes the receiver fetch nothing), the certificate URL must be https on an allowed host
  (default ``sns.<region>.amazonaws.com``), and the message `Timestamp` must be within `window`
  (SNS keeps the original Timestamp on retries: size `window` to the topic's delivery retry
  policy). A message that is malformed rather than unproven (nested too deep, holding text no
  store keeps, a certificate URL that is not a URL) raises `BadPayload` (422) instead.
* ``pagerduty``: ``X-PagerDuty-Signature: v1=<hex>[,v1=<hex>...]``, HMAC-SHA256 of the body; any
  configured secret matching any entry is accepted (secret rotation). PagerDuty signs no timestamp.
* generic: ``X-Siaga-Timestamp: <unix seconds>`` and ``X-Siaga-Signature: sha256=<hex>``, the
  HMAC-SHA256 of ``<timestamp>.<body>``, exactly what ``http.request`` (integrations/webhook.py)
  sends, so one Siaga can signal another; the timestamp must be within `window`.

Replay protection: given a `replay_guard`, `verify` claims `replay_key(...)` once the request is
proven (the signature for timestamped schemes, the SNS MessageId, a digest of a PagerDuty body) and
raises `Forbidden` if it was already claimed within the window. Alertmanager and Grafana without a
timestamp get no replay key: their identical repeats are legitimate (repeat_interval) and are
deduplicated by `Alert.episode` instead. If the receiver then fails to take the delivery in (so the
sender will retry), it should `replay_guard.release(replay_key(...))`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from siaga.canonical import as_utc

from .body import BadPayload, NotJson, decode, printable

__all__ = [
    "AuthError",
    "CertificateFetcher",
    "Forbidden",
    "MemoryReplayGuard",
    "ReplayGuard",
    "SourceAuth",
    "Unauthenticated",
    "check_sns_url",
    "replay_key",
    "verify",
]


class AuthError(Exception):
    """A webhook refused as not authentic; `reason` says why (safe to log: it holds no secret)."""

    status_code = 401

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Unauthenticated(AuthError):
    """No proof, or a proof that fails: missing, malformed, wrong secret, tampered, stale (401)."""

    status_code = 401


class Forbidden(AuthError):
    """Proven, but refused: a TopicArn or certificate host not allowed, or a replay (403)."""

    status_code = 403


CertificateFetcher = Callable[[str], bytes]
"""Fetches the PEM certificate at an (already allowed) https URL. Injected: no network here."""

DEFAULT_SNS_CERT_HOST = re.compile(r"^sns\.[a-z]{2}(-[a-z]+)+-\d+\.amazonaws\.com(\.cn)?$")
"""Where SNS signing certificates live: ``sns.<region>.amazonaws.com``."""


class SourceAuth(BaseModel):
    """How one source proves its webhooks. Secret fields hold values (already resolved from
    ``secret://`` references); `SecretStr` keeps them out of reprs and logs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bearer_token: SecretStr | None = Field(
        default=None, description="Expected `Authorization: Bearer` token (alertmanager, grafana)."
    )
    hmac_secrets: list[SecretStr] = Field(
        default_factory=list,
        description="HMAC keys; a signature made with any of them is accepted (rotation).",
    )
    signature_header: str | None = Field(
        default=None,
        description="Signature header; default per source (X-Grafana-Alerting-Signature, "
        "X-PagerDuty-Signature, X-Siaga-Signature).",
    )
    timestamp_header: str | None = Field(
        default=None,
        description="Timestamp header; default X-Siaga-Timestamp for generic sources, none for "
        "Grafana (set it to what the contact point's hmacConfig.timestampHeader names).",
    )
    window: timedelta = Field(
        default=timedelta(minutes=5),
        gt=timedelta(0),
        description="How far a signed timestamp may be from now, and how long deliveries are "
        "remembered against replay.",
    )
    allowed_cert_hosts: list[str] | None = Field(
        default=None,
        description="Hosts SNS signing certificates may come from; default "
        "sns.<region>.amazonaws.com.",
    )
    allowed_topic_arns: list[str] = Field(
        default_factory=list, description="SNS topics accepted; none allowed when empty."
    )

    @field_validator("hmac_secrets")
    @classmethod
    def _no_empty_secret(cls, secrets: list[SecretStr]) -> list[SecretStr]:
        if any(not s.get_secret_value() for s in secrets):
            raise ValueError("an HMAC secret must not be empty")
        return secrets

    @field_validator("bearer_token")
    @classmethod
    def _no_empty_token(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and not token.get_secret_value().strip():
            raise ValueError("the bearer token must not be empty")
        return token


# --- replay guard ----------------------------------------------------------------------------


class ReplayGuard(Protocol):
    """Remembers deliveries for a while. Implementations must make `claim` atomic."""

    def claim(self, key: str, now: datetime, until: datetime) -> bool:
        """Record `key` until `until`; False if it is already recorded and not yet expired."""
        ...

    def release(self, key: str) -> None:
        """Forget `key` (the delivery was not taken in, so its retry must be accepted)."""
        ...


class MemoryReplayGuard:
    """A `ReplayGuard` in this process's memory (one receiver process; lost on restart)."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._seen: dict[str, datetime] = {}
        self._lock = threading.Lock()
        self._max = max_entries

    def claim(self, key: str, now: datetime, until: datetime) -> bool:
        with self._lock:
            expires = self._seen.get(key)
            if expires is not None and expires > now:
                return False
            if len(self._seen) >= self._max:
                self._seen = {k: v for k, v in self._seen.items() if v > now}
                while len(self._seen) >= self._max:  # still full: forget the oldest claims
                    self._seen.pop(next(iter(self._seen)))
            self._seen.pop(key, None)
            self._seen[key] = until
            return True

    def release(self, key: str) -> None:
        with self._lock:
            self._seen.pop(key, None)

    def __len__(self) -> int:
        return len(self._seen)


# --- helpers ---------------------------------------------------------------------------------


def _headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in headers.items()}


def _secret(value: SecretStr) -> bytes:
    return value.get_secret_value().encode()


def _equal(a: str | bytes, b: str | bytes) -> bool:
    a = a.encode() if isinstance(a, str) else a
    b = b.encode() if isinstance(b, str) else b
    return hmac.compare_digest(a, b)


def _hmac_hex(secret: SecretStr, message: bytes) -> str:
    return hmac.new(_secret(secret), message, hashlib.sha256).hexdigest()


def _check_bearer(h: dict[str, str], config: SourceAuth, source: str) -> None:
    if config.bearer_token is None:
        raise Unauthenticated(f"{source}: no bearer token is configured, so nothing is accepted")
    value = h.get("authorization")
    if not value:
        raise Unauthenticated(f"{source}: missing Authorization header")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated(f"{source}: Authorization is not a bearer token")
    if not _equal(token.strip(), config.bearer_token.get_secret_value()):
        raise Unauthenticated(f"{source}: wrong bearer token")


def _timestamp(h: dict[str, str], name: str, config: SourceAuth, now: datetime, source: str) -> str:
    """The raw timestamp header, checked to be Unix seconds within `window` of `now`."""
    value = h.get(name.lower())
    if value is None:
        raise Unauthenticated(f"{source}: missing {name} header")
    value = value.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 12:
        raise Unauthenticated(f"{source}: {name} is not Unix seconds")
    try:
        moment = datetime.fromtimestamp(int(value), UTC)
    except (OverflowError, OSError, ValueError):
        raise Unauthenticated(f"{source}: {name} is out of range") from None
    _within_window(moment, config, now, source)
    return value


def _within_window(stamp: datetime, config: SourceAuth, now: datetime, source: str) -> None:
    skew = abs(as_utc(now) - stamp)
    if skew > config.window:
        raise Unauthenticated(
            f"{source}: timestamp {stamp.isoformat()} is {int(skew.total_seconds())}s from now, "
            f"outside the {int(config.window.total_seconds())}s window (stale or replayed?)"
        )




def _require_secrets(config: SourceAuth, source: str) -> None:
    if not config.hmac_secrets:
        raise Unauthenticated(f"{source}: no HMAC secret is configured, so nothing is accepted")


# --- alertmanager ----------------------------------------------------------------------------


def _verify_alertmanager(h: dict[str, str], body: bytes, config: SourceAuth, now: datetime) -> None:
    _check_bearer(h, config, "alertmanager")


# --- generic ---------------------------------------------------------------------------------

GENERIC_SIGNATURE_HEADER = "X-Siaga-Signature"
GENERIC_TIMESTAMP_HEADER = "X-Siaga-Timestamp"


def _verify_generic(
    h: dict[str, str], body: bytes, config: SourceAuth, now: datetime, source: str
) -> None:
    _require_secrets(config, source)
    sig_name = config.signature_header or GENERIC_SIGNATURE_HEADER
    signature = h.get(sig_name.lower())
    if not signature:
        raise Unauthenticated(f"{source}: missing {sig_name} header (the request is not signed)")
    scheme, _, digest = signature.strip().partition("=")
    if scheme != "sha256" or not digest:
        raise Unauthenticated(f"{source}: {sig_name} is not 'sha256=<hex>'")
    stamp = _timestamp(h, config.timestamp_header or GENERIC_TIMESTAMP_HEADER, config, now, source)
    message = stamp.encode() + b"." + body
    if not any(_equal(digest.lower(), _hmac_hex(s, message)) for s in config.hmac_secrets):
        raise Unauthenticated(f"{source}: signature does not match (wrong secret or altered body)")


# --- grafana ---------------------------------------------------------------------------------

GRAFANA_SIGNATURE_HEADER = "X-Grafana-Alerting-Signature"


def _verify_grafana(h: dict[str, str], body: bytes, config: SourceAuth, now: datetime) -> None:
    sig_name = config.signature_header or GRAFANA_SIGNATURE_HEADER
    signature = h.get(sig_name.lower())
    if signature is None or not config.hmac_secrets:
        if config.bearer_token is not None:
            _check_bearer(h, config, "grafana")
            return
        if config.hmac_secrets:
            raise Unauthenticated(f"grafana: missing {sig_name} header (the request is not signed)")
        raise Unauthenticated("grafana: neither an HMAC secret nor a bearer token is configured")
    message = body
    if config.timestamp_header:
        stamp = _timestamp(h, config.timestamp_header, config, now, "grafana")
        message = stamp.encode() + b":" + body
    digest = signature.strip().lower()
    if not any(_equal(digest, _hmac_hex(s, message)) for s in config.hmac_secrets):
        raise Unauthenticated("grafana: signature does not match (wrong secret or altered body)")


# --- pagerduty -------------------------------------------------------------------------------

PAGERDUTY_SIGNATURE_HEADER = "X-PagerDuty-Signature"


def _verify_pagerduty(h: dict[str, str], body: bytes, config: SourceAuth, now: datetime) -> None:
    _require_secrets(config, "pagerduty")
    sig_name = config.signature_header or PAGERDUTY_SIGNATURE_HEADER
    header = h.get(sig_name.lower())
    if not header:
        raise Unauthenticated(f"pagerduty: missing {sig_name} header (the request is not signed)")
    offered = []
    for entry in header.split(","):
        version, _, digest = entry.strip().partition("=")
        if version == "v1" and digest:
            offered.append(digest.lower())
    if not offered:
        raise Unauthenticated(f"pagerduty: {sig_name} holds no v1=<hex> signature")
    expected = [_hmac_hex(s, body) for s in config.hmac_secrets]
    # Compare every pair (no early exit on the secret side) so timing says nothing about which.
    matched = False
    for digest in offered:
        for candidate in expected:
            matched |= _equal(digest, candidate)
    if not matched:
        raise Unauthenticated("pagerduty: signature does not match (wrong secret or altered body)")


# --- SNS (CloudWatch) ------------------------------------------------------------------------

_SNS_NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_SNS_SUBSCRIPTION_FIELDS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)
_SNS_TYPES = {
    "Notification": _SNS_NOTIFICATION_FIELDS,
    "SubscriptionConfirmation": _SNS_SUBSCRIPTION_FIELDS,
    "UnsubscribeConfirmation": _SNS_SUBSCRIPTION_FIELDS,
}


def sns_string_to_sign(message: Mapping[str, Any]) -> bytes:
    """SNS's canonical string: ``Name\\nvalue\\n`` for each signed field, in the documented order
    (Notification: Message, MessageId, Subject if present, Timestamp, TopicArn, Type;
    (Un)SubscriptionConfirmation: Message, MessageId, SubscribeURL, Timestamp, Token, TopicArn,
    Type). Raises `Unauthenticated` if a required field is missing."""
    kind = message.get("Type")
    fields = _SNS_TYPES.get(kind) if isinstance(kind, str) else None
    if fields is None:
        raise Unauthenticated(f"cloudwatch: unknown SNS message Type {kind!r}")
    out = []
    for name in fields:
        value = message.get(name)
        if value is None and name == "Subject":
            continue
        if not isinstance(value, str):
            raise Unauthenticated(f"cloudwatch: SNS message has no {name} string to verify")
        out.append(f"{name}\n{value}\n")
    return "".join(out).encode()


def _sns_message(body: bytes) -> dict[str, Any]:
    """The SNS message, decoded by the rules of every body (`siaga.alerts.body`): one nested too
    deep, or holding what no store keeps, is `BadPayload` (422) before anything else is done."""
    try:
        message = decode(body)
    except NotJson:
        raise Unauthenticated("cloudwatch: body is not an SNS message (not JSON)") from None
    if not isinstance(message, dict):
        raise Unauthenticated("cloudwatch: body is not an SNS message (not a JSON object)")
    return message


_URL_CHARACTER = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]")
"""What RFC 3986 allows in a URL; anything else (spaces, tabs, NUL, backslashes, non-ASCII) is
refused rather than cleaned: `urlsplit` drops tabs and newlines silently, so the URL checked
would not be the URL fetched."""
_NAMED = {"\t": "a tab", "\n": "a line feed", "\r": "a carriage return", "\x00": "a NUL", " ": "a space"}


def check_sns_url(url: object, config: SourceAuth, what: str) -> str:
    """`url` if it is plain https on an allowed SNS host (`allowed_cert_hosts`, default
    ``sns.<region>.amazonaws.com``), else `Forbidden`. For the signing certificate and for the
    SubscribeURL the receiver visits: neither may send Siaga anywhere else. An allowed entry
    ``host:port`` also allows that port (a test's local server); otherwise only 443. A value that
    is not a URL at all (a character RFC 3986 does not allow, a port that is not one) is
    `BadPayload` (422): it names the field and the flaw, and nothing is fetched."""
    if not isinstance(url, str) or not url:
        raise Unauthenticated(f"cloudwatch: SNS message has no {what}")
    for position, character in enumerate(url):
        if not _URL_CHARACTER.match(character):
            named = _NAMED.get(character) or printable(ascii(character))
            raise BadPayload(f"{what}: not a URL: {named} at position {position} (RFC 3986 allows none)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BadPayload(f"{what}: not a URL: {exc}") from None
    host = (parts.hostname or "").lower()
    if parts.scheme != "https" or parts.username or parts.password:
        raise Forbidden(f"cloudwatch: {what} must be plain https, got {url!r}")
    if config.allowed_cert_hosts is None:
        allowed = port in (None, 443) and DEFAULT_SNS_CERT_HOST.match(host) is not None
    else:
        hosts = {h.lower() for h in config.allowed_cert_hosts}
        allowed = (port in (None, 443) and host in hosts) or f"{host}:{port}" in hosts
    if not allowed:
        raise Forbidden(f"cloudwatch: {what} host {parts.netloc!r} is not an allowed SNS host")
    return url


def _check_cert_url(url: object, config: SourceAuth) -> str:
    url = check_sns_url(url, config, "SigningCertURL")
    if not urlsplit(url).path.endswith(".pem"):
        raise Forbidden(f"cloudwatch: SigningCertURL {url!r} is not a .pem certificate")
    return url


def _verify_sns(
    h: dict[str, str],
    body: bytes,
    config: SourceAuth,
    now: datetime,
    fetch_certificate: CertificateFetcher | None,
) -> None:
    # Imported here so the parsers and the other schemes load without the crypto stack.
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    message = _sns_message(body)
    # The topic first: a message from a topic not served makes the receiver fetch nothing.
    topic = message.get("TopicArn")
    if topic not in config.allowed_topic_arns:
        raise Forbidden(f"cloudwatch: TopicArn {printable(str(topic))!r} is not an allowed topic")
    version = message.get("SignatureVersion")
    algorithm = (
        {"1": hashes.SHA1, "2": hashes.SHA256}.get(version) if isinstance(version, str) else None
    )
    if algorithm is None:
        raise Unauthenticated(f"cloudwatch: unsupported SNS SignatureVersion {version!r}")
    signature_b64 = message.get("Signature")
    if not isinstance(signature_b64, str) or not signature_b64:
        raise Unauthenticated("cloudwatch: SNS message is not signed (no Signature)")
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        raise Unauthenticated("cloudwatch: SNS Signature is not base64") from None
    to_sign = sns_string_to_sign(message)
    url = _check_cert_url(message.get("SigningCertURL"), config)
    if fetch_certificate is None:
        raise Unauthenticated("cloudwatch: no certificate fetcher given, so SNS cannot be verified")
    try:
        pem = fetch_certificate(url)
        certificate = x509.load_pem_x509_certificate(pem)
    # Whatever the injected fetcher or the decoder raises, the message is not proven.
    except Exception as exc:  # noqa: BLE001
        raise Unauthenticated(
            f"cloudwatch: could not load the signing certificate at {url}: {type(exc).__name__}"
        ) from None
    moment = as_utc(now)
    if not certificate.not_valid_before_utc <= moment <= certificate.not_valid_after_utc:
        raise Unauthenticated("cloudwatch: the SNS signing certificate is expired or not yet valid")
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise Unauthenticated("cloudwatch: the SNS signing certificate does not hold an RSA key")
    try:
        key.verify(signature, to_sign, padding.PKCS1v15(), algorithm())
    except InvalidSignature:
        raise Unauthenticated(
            "cloudwatch: SNS signature does not match (altered message?)"
        ) from None
    _within_window(_sns_time(message.get("Timestamp")), config, now, "cloudwatch")


def _sns_time(value: object) -> datetime:
    if isinstance(value, str):
        try:
            stamp = datetime.fromisoformat(value)
        except ValueError:
            stamp = None
        if stamp is not None and stamp.tzinfo is not None:
            return stamp
    raise Unauthenticated(f"cloudwatch: SNS Timestamp {value!r} is not an ISO 8601 UTC time")


# --- dispatch --------------------------------------------------------------------------------

_SIGNED_SOURCES = ("alertmanager", "grafana", "cloudwatch", "pagerduty")


def verify(
    source: str,
    headers: Mapping[str, str],
    body: bytes,
    config: SourceAuth,
    now: datetime,
    fetch_certificate: CertificateFetcher | None = None,
    *,
    replay_guard: ReplayGuard | None = None,
) -> None:
    """Return None if the request is authentic for `source`; raise `Unauthenticated` (401) or
    `Forbidden` (403) with the reason otherwise (or, for ``cloudwatch``, `BadPayload` (422) for a
    malformed message). See the module docstring for each scheme."""
    h = _headers(headers)
    if source == "alertmanager":
        _verify_alertmanager(h, body, config, now)
    elif source == "grafana":
        _verify_grafana(h, body, config, now)
    elif source == "pagerduty":
        _verify_pagerduty(h, body, config, now)
    elif source == "cloudwatch":
        _verify_sns(h, body, config, now, fetch_certificate)
    else:
        _verify_generic(h, body, config, now, source)
    if replay_guard is not None:
        key = replay_key(source, headers, body, config)
        if key is not None:
            moment = as_utc(now)
            # Timestamps may lead or lag by `window`; remember long enough to cover both.
            if not replay_guard.claim(key, moment, moment + 2 * config.window):
                raise Forbidden(f"{source}: this delivery was already received (replay)")


def replay_key(
    source: str, headers: Mapping[str, str], body: bytes, config: SourceAuth
) -> str | None:
    """What identifies one delivery of `source` for replay protection, or None where identical
    deliveries are legitimate (alertmanager; grafana without a signed timestamp)."""
    h = _headers(headers)
    if source == "alertmanager":
        return None
    if source == "grafana":
        if not config.timestamp_header:
            return None
        signature = h.get((config.signature_header or GRAFANA_SIGNATURE_HEADER).lower())
        return f"grafana:{signature.strip().lower()}" if signature else None
    if source == "pagerduty":
        return "pagerduty:" + hashlib.sha256(body).hexdigest()
    if source == "cloudwatch":
        try:
            message = json.loads(body)
        except (ValueError, RecursionError):
            return None
        message_id = message.get("MessageId") if isinstance(message, dict) else None
        topic = message.get("TopicArn") if isinstance(message, dict) else None
        return f"cloudwatch:{topic}:{message_id}" if isinstance(message_id, str) else None
    signature = h.get((config.signature_header or GENERIC_SIGNATURE_HEADER).lower())
    return f"{source}:{signature.strip().lower()}" if signature else None

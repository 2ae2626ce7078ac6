"""`siaga alert send`: post a saved webhook payload to a receiver, proven as its source proves it.

Credentials come from the environment, never from the command line (where `ps` would show them):
``--secret``/``--token`` name a ``secret://NAME`` reference (`siaga.secrets`) or an environment
variable; without them the receiver's own settings are used (``SIAGA_ALERTMANAGER_TOKEN``,
``SIAGA_GRAFANA_HMAC_SECRET`` or ``SIAGA_GRAFANA_TOKEN``, ``SIAGA_PAGERDUTY_HMAC_SECRET``,
``SIAGA_HOOK_SECRET_<SOURCE>``), so a receiver and this command on one machine agree. Of a
comma-separated list (rotation) the first is used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from siaga.errors import BadInput
from siaga.secrets import SecretNotFound, is_secret_reference, resolve_secret
from siaga.settings import HOOK_SECRET_PREFIX, Settings

from .signing import SigningError, kind_of, sign

__all__ = ["Delivery", "send_alert", "source_of"]


@dataclass(frozen=True)
class Delivery:
    status: int
    reason: str
    body: object
    """The receiver's answer: its JSON, or its text when it is not JSON."""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def source_of(url: str) -> str:
    """The source a receiver URL serves: ``.../hooks/<source>``."""
    path = urlsplit(url).path.rstrip("/")
    head, _, name = path.rpartition("/")
    if not head.endswith("/hooks") or not name:
        raise BadInput(f"{url} is not a receiver hook URL (http://HOST:PORT/hooks/SOURCE)")
    return name


def _credential(reference: str | None, defaults: tuple[SecretStr | None, ...], environ: Mapping[str, str]) -> str | None:
    if reference:
        if is_secret_reference(reference):
            try:
                return resolve_secret(reference, environ)
            except SecretNotFound as exc:
                raise BadInput(str(exc)) from None
        value = environ.get(reference.removeprefix("$"))
        if not value:
            raise BadInput(f"the environment variable {reference.removeprefix('$')} is not set "
                           "(--secret/--token name a variable or a secret://NAME, never the value)")
        return value.split(",")[0].strip()
    for default in defaults:
        if default is not None and default.get_secret_value():
            return default.get_secret_value().split(",")[0].strip()
    return None


def _first(secrets: Sequence[SecretStr]) -> SecretStr | None:
    return secrets[0] if secrets else None


def send_alert(
    path: Path,
    url: str,
    kind: str | None = None,
    *,
    secret: str | None = None,
    token: str | None = None,
    settings: Settings,
    environ: Mapping[str, str],
    timeout: float = 15.0,
) -> Delivery:
    """Post the payload in `path` to `url`, signed for its source; return the receiver's answer.
    The credential is `secret` or `token` (a ``secret://NAME`` or a variable of `environ`), else the
    receiver's own in `settings`. Raise BadInput for a missing file or credential, ConnectionError
    when no receiver answers."""
    source = source_of(url)
    kind = kind or kind_of(source)
    try:
        body = path.read_bytes()
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror}") from None
    hook_secret = f"{HOOK_SECRET_PREFIX}{source.upper()}"
    defaults, named = {
        "alertmanager": (((), (settings.alertmanager_token,)), ((), ("SIAGA_ALERTMANAGER_TOKEN",))),
        "grafana": (((_first(settings.grafana_hmac_secrets),), (settings.grafana_token,)),
                    (("SIAGA_GRAFANA_HMAC_SECRET",), ("SIAGA_GRAFANA_TOKEN",))),
        "pagerduty": (((_first(settings.pagerduty_hmac_secrets),), ()), (("SIAGA_PAGERDUTY_HMAC_SECRET",), ())),
        "generic": (((_first(settings.hook_secrets.get(source.upper().lower(), ())),), ()), ((hook_secret,), ())),
        "sns": (((), ()), ((), ())),
    }[kind]
    try:
        headers = sign(
            kind, source, body, datetime.now(UTC),
            secret=_credential(secret, defaults[0], environ),
            token=_credential(token, defaults[1], environ),
            timestamp_header=settings.grafana_timestamp_header if kind == "grafana" else None,
        )
    except SigningError as exc:
        raise BadInput(f"{exc}: give --secret/--token, or set {' or '.join(named[0] + named[1])}") from None
    try:
        answer = httpx.post(url, content=body, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise ConnectionError(f"no receiver answers at {url}: {type(exc).__name__}: {exc}") from None
    try:
        shown: object = answer.json()
    except ValueError:
        shown = answer.text
    return Delivery(answer.status_code, answer.reason_phrase, shown)

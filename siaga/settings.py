"""Siaga's settings: every environment variable Siaga reads, read once, typed and documented here.

Each entry point (the command line, which serves `siaga up` / `node` / `worker` / `receiver`; a flow
run's body; Prefect loading a runbook's flow in `siaga.flows.library`; the fast lane's forkserver;
the benchmarks) builds one `Settings` with `Settings.from_environ(os.environ)` and passes it, or the
`siaga.wiring.Wiring` made from it, down; nothing else reads Siaga's variables, and no library
function falls back to the process's environment. Tests build their own: ``Settings.from_environ({"SIAGA_HOME": ...})``, or
``dataclasses.replace(settings, roster=path)``.

Two families are not fields: ``SIAGA_HOOK_SECRET_<NAME>`` (a generic signed alert source, collected
into `Settings.hook_secrets`) and ``SIAGA_SECRET_<NAME>`` (a runbook's ``secret://NAME``), which
`siaga.secrets` reads where a step uses it, so a rotated secret is used by the next step.

The README's configuration table is `reference_markdown()` (``tests/foundation/test_settings.py``
keeps them equal).
"""

# ruff: noqa: RUF009 - `_setting` returns a `dataclasses.field` with the variable's documentation

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from .errors import BadInput

__all__ = ["FAMILIES", "Settings", "SettingsError", "reference_markdown"]

HOOK_SECRET_PREFIX = "SIAGA_HOOK_SECRET_"
HEARTBEAT_SECONDS = 30
"""How often a live flow run sends Prefect a heartbeat (`siaga up` sets it)."""
_DEFAULT_HOME = Path("~/.siaga").expanduser()


class SettingsError(BadInput):
    """A variable holds what Siaga cannot use (says which, and what it expects)."""


def _setting(env: str, doc: str, default: Any = None, *, shown: str = "", secret: bool = False,
             parse: str = "text") -> Any:
    """A field read from `env`; `doc` says what it does (the reference list), `shown` its default as
    a person reads it, `parse` how the text becomes a value."""
    metadata = {"env": env, "doc": doc, "shown": shown, "secret": secret, "parse": parse}
    if isinstance(default, tuple | dict):
        return field(default_factory=lambda: type(default)(default), metadata=metadata, repr=False)
    return field(default=default, metadata=metadata, repr=False)


@dataclass(frozen=True)
class Settings:
    """Every setting Siaga reads from its environment. Secrets are `SecretStr`: no repr shows them."""

    home: Path = _setting("SIAGA_HOME", "the data folder: outbox, logs, the SQLite store, the seal key, Prefect's "
                          "own data", _DEFAULT_HOME, shown="`~/.siaga`", parse="path")
    runbooks: Path | None = _setting("SIAGA_RUNBOOKS", "the runbook library (`--runbooks` wins)",
                                     shown="`./runbooks`", parse="path")
    database_url: SecretStr | None = _setting(
        "SIAGA_DATABASE_URL", "Siaga's own store, as an SQLAlchemy URL (PostgreSQL for several machines)",
        shown="SQLite in the data folder", secret=True)
    roster: Path | None = _setting("SIAGA_ROSTER", "the roster file", shown="`roster.yaml` beside the runbooks",
                                   parse="path")
    connections: Path | None = _setting("SIAGA_CONNECTIONS", "the connections file",
                                        shown="`connections.yaml` beside the runbooks", parse="path")
    ledger_key: SecretStr | None = _setting(
        "SIAGA_LEDGER_KEY", "the key of the seals on recorded votes, where machines share a store",
        shown="`ledger.key` in the data folder", secret=True)
    user: str | None = _setting("SIAGA_USER", "who you are (a roster id): the default of `--as`")
    receiver_host: str = _setting("SIAGA_RECEIVER_HOST", "where `siaga receiver` and `siaga node` listen",
                                  "127.0.0.1", shown="`127.0.0.1`")
    receiver_port: int = _setting("SIAGA_RECEIVER_PORT", "their port", 8787, shown="`8787`", parse="port")
    alertmanager_token: SecretStr | None = _setting(
        "SIAGA_ALERTMANAGER_TOKEN", "the bearer token Alertmanager sends; unset: every Alertmanager webhook is "
        "refused", secret=True)
    grafana_token: SecretStr | None = _setting("SIAGA_GRAFANA_TOKEN", "the bearer token Grafana sends",
                                               secret=True)
    grafana_hmac_secrets: tuple[SecretStr, ...] = _setting(
        "SIAGA_GRAFANA_HMAC_SECRET", "Grafana's HMAC keys (comma-separated: any one is accepted)", (),
        secret=True, parse="list")
    grafana_timestamp_header: str | None = _setting(
        "SIAGA_GRAFANA_TIMESTAMP_HEADER", "the header Grafana's contact point signs its timestamp in")
    pagerduty_hmac_secrets: tuple[SecretStr, ...] = _setting(
        "SIAGA_PAGERDUTY_HMAC_SECRET", "the PagerDuty webhook subscription's signing secrets (comma-separated)", (),
        secret=True, parse="list")
    sns_topic_arns: tuple[str, ...] = _setting(
        "SIAGA_SNS_TOPIC_ARNS", "the SNS topics whose messages are taken in (comma-separated); unset: "
        "`/hooks/cloudwatch` answers 404", (), parse="list")
    sns_cert_hosts: tuple[str, ...] = _setting(
        "SIAGA_SNS_CERT_HOSTS", "the hosts SNS certificates and SubscribeURLs may be on (comma-separated, "
        "`host:port` allows a port)", (), shown="`sns.<region>.amazonaws.com`", parse="list")
    heartbeat_tokens: tuple[SecretStr, ...] = _setting(
        "SIAGA_HEARTBEAT_TOKEN", "the bearer tokens of `POST /heartbeats/{name}` (comma-separated); unset: "
        "not served", (), secret=True, parse="list")
    api_tokens: tuple[SecretStr, ...] = _setting(
        "SIAGA_API_TOKEN", "the tokens of the receiver's read API, metrics and documents (comma-separated); "
        "unset: not served", (), secret=True, parse="list")
    hook_secrets: Mapping[str, tuple[SecretStr, ...]] = _setting(
        HOOK_SECRET_PREFIX + "<NAME>", "serves the generic signed source `<name>` (lowercased) at "
        "`/hooks/<name>` with these HMAC keys (comma-separated)", {}, secret=True, parse="family")
    gate_poll_seconds: float = _setting("SIAGA_GATE_POLL_SECONDS", "how often a waiting gate looks for answers",
                                        0.5, shown="`0.5`", parse="seconds")
    gate_park_after: float = _setting(
        "SIAGA_GATE_PARK_AFTER", "how long a run waits on people before it suspends and holds no process",
        1.0, shown="`1.0`", parse="seconds")
    deadline_poll_seconds: float = _setting("SIAGA_DEADLINE_POLL_SECONDS",
                                            "how often the statement deadlines' watcher looks", 5.0, shown="`5`",
                                            parse="seconds")
    sitrep_poll_seconds: float = _setting("SIAGA_SITREP_POLL_SECONDS",
                                          "how often the situation reports' watcher looks", 5.0, shown="`5`",
                                          parse="seconds")
    zombie_window_seconds: float = _setting(
        "SIAGA_ZOMBIE_WINDOW_SECONDS", "how long a run may go without a heartbeat before `siaga up` marks it "
        f"Crashed (more than the {HEARTBEAT_SECONDS} s between a live run's heartbeats, at most a day)", 60.0,
        shown="`60`", parse="heartbeat window")
    prefect_api_url: str | None = _setting(
        "PREFECT_API_URL", "the Prefect server's API (Prefect's own variable; `siaga up` notes the one it runs)")
    prefect_ui_url: str | None = _setting("PREFECT_UI_URL", "where links to runs point (Prefect's own variable)",
                                          shown="the API URL without `/api`")

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        """The settings `environ` holds (unset or empty: the default); raise SettingsError naming a
        variable whose value cannot be used. The one place Siaga's variables are read."""
        values: dict[str, Any] = {}
        for spec in dataclasses.fields(cls):
            meta = spec.metadata
            if meta["parse"] == "family":
                values[spec.name] = _family(environ)
                continue
            text = environ.get(meta["env"])
            if text:
                values[spec.name] = _parse(meta["env"], meta["parse"], meta["secret"], text)
        if "home" not in values:  # ~ of this environment
            values["home"] = Path(environ["HOME"]) / ".siaga" if environ.get("HOME") else _DEFAULT_HOME
        return cls(**values)

    def __repr__(self) -> str:
        shown = []
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            if spec.metadata["secret"] and value:
                value = "**********"
            shown.append(f"{spec.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    @property
    def runbook_folder(self) -> Path:
        """The runbook library: `runbooks`, else ``./runbooks``, as an absolute path."""
        return (self.runbooks or Path("runbooks")).expanduser().resolve()

    @property
    def store_url(self) -> str:
        """The store's SQLAlchemy URL: `database_url`, else SQLite in the data folder."""
        return self.database_url.get_secret_value() if self.database_url else f"sqlite:///{self.home / 'siaga.db'}"

    def roster_file(self, folder: Path) -> Path:
        """The roster of the runbooks in `folder`: `roster`, else ``roster.yaml`` there."""
        return self.roster or folder / "roster.yaml"

    def connections_file(self, folder: Path) -> Path:
        """The connections of the runbooks in `folder`: `connections`, else ``connections.yaml`` there."""
        return self.connections or folder / "connections.yaml"


FAMILIES = {
    "SIAGA_SECRET_<NAME>": "a runbook's `secret://NAME` (`-` and other signs become `_`), read where a step uses "
                           "it (or from the Prefect Secret block NAME in a flow run)",
}
"""Variables read by name pattern outside `Settings`, for the reference list."""


def _parse(variable: str, how: str, secret: bool, text: str) -> Any:
    if how == "path":
        return Path(text).expanduser()
    if how == "list":
        parts = tuple(part.strip() for part in text.split(",") if part.strip())
        return tuple(SecretStr(part) for part in parts) if secret else parts
    if how == "port":
        text = text.strip()
        if not text.isdigit() or not 0 < int(text) < 65536:
            raise SettingsError(f"{variable} is a port number (1-65535), not {text!r}")
        return int(text)
    if how == "heartbeat window":
        try:
            seconds = float(text)
        except ValueError:
            seconds = math.nan
        if not HEARTBEAT_SECONDS < seconds <= 86_400:  # NaN too
            raise SettingsError(f"{variable} is {text!r}: give the seconds a run may go without a heartbeat, more "
                                f"than {HEARTBEAT_SECONDS} (a live run sends one every {HEARTBEAT_SECONDS} s) and at "
                                "most 86400; unset, 60")
        return seconds
    if how == "seconds":
        try:
            seconds = float(text)
        except ValueError:
            seconds = -1.0
        if not 0 <= seconds < float("inf"):
            raise SettingsError(f"{variable} is a number of seconds (0 or more), not {text!r}")
        return seconds
    return SecretStr(text) if secret else text


def _family(environ: Mapping[str, str]) -> dict[str, tuple[SecretStr, ...]]:
    found = {}
    for key, value in environ.items():
        if key.startswith(HOOK_SECRET_PREFIX) and len(key) > len(HOOK_SECRET_PREFIX):
            found[key.removeprefix(HOOK_SECRET_PREFIX).lower()] = _parse(key, "list", True, value or "")
    return found


def reference_markdown() -> str:
    """The reference list of Siaga's variables, as the README's configuration table."""
    rows = ["| variable | what it sets | default |", "|---|---|---|"]
    for spec in dataclasses.fields(Settings):
        meta = spec.metadata
        secret = " (secret)" if meta["secret"] else ""
        rows.append(f"| `{meta['env']}` | {meta['doc']}{secret} | {meta['shown'] or 'unset'} |")
    rows += [f"| `{name}` | {doc} (secret) | unset |" for name, doc in FAMILIES.items()]
    return "\n".join(rows) + "\n"

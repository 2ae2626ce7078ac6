"""Connections: where each provider is reached and with which credentials, kept next to the
runbooks in ``connections.yaml`` (or the file ``$SIAGA_CONNECTIONS`` names)::

    connections:
      aws-prod: {type: aws, region: ap-southeast-1, production: true}
      ops-slack: {type: slack, webhook_url: secret://ops-slack-webhook}

Credentials are ``secret://NAME`` references, resolved only when an action uses them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .runbook.diagnostics import Diagnostic, RunbookError
from .runbook.source import YamlSyntaxError, read_yaml
from .settings import Settings

Connections = Mapping[str, Mapping[str, Any]]


def connections_file(runbook_folder: Path, settings: Settings | None = None) -> Path:
    """`Settings.connections` (``$SIAGA_CONNECTIONS``, as the entry point read it), else
    ``connections.yaml`` in `runbook_folder`; without `settings`, that file beside the runbooks
    (nothing is read from the environment here)."""
    return (settings or Settings()).connections_file(runbook_folder)


def parse_connections(text: str, file: str = "connections.yaml") -> dict[str, dict[str, Any]]:
    """The connections in `text`; raise RunbookError (with positions) if it is malformed."""
    try:
        doc = read_yaml(text, file)
    except YamlSyntaxError as exc:
        raise RunbookError([exc.diagnostic]) from None
    data = doc.data
    if not isinstance(data, Mapping) or not isinstance(data.get("connections", {}), Mapping):
        raise RunbookError([doc.diagnostic("invalid", "expected `connections:` mapping names to settings", ())])
    problems: list[Diagnostic] = []
    found: dict[str, dict[str, Any]] = {}
    for name, settings in (data.get("connections") or {}).items():
        loc = ("connections", name)
        if not isinstance(settings, Mapping) or not isinstance(settings.get("type"), str):
            problems.append(doc.diagnostic("invalid", "a connection is a mapping with a `type:`", loc))
            continue
        found[str(name)] = dict(settings)
    if problems:
        raise RunbookError(problems)
    return found


def load_connections(runbook_folder: Path, settings: Settings | None = None) -> dict[str, dict[str, Any]]:
    """The connections for runbooks in `runbook_folder` (none if there is no file)."""
    path = connections_file(runbook_folder, settings)
    if not path.is_file():
        return {}
    return parse_connections(path.read_text(encoding="utf-8"), str(path))

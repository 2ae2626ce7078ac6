"""Where the roster of a runbook library is: ``roster.yaml`` next to the runbooks, or the file
``$SIAGA_ROSTER`` names."""

from __future__ import annotations

from pathlib import Path

from .runbook import Roster, load_roster
from .settings import Settings, process_settings


def roster_file(runbook_folder: Path, settings: Settings | None = None) -> Path:
    """`Settings.roster`, else ``roster.yaml`` in `runbook_folder`."""
    return (settings or process_settings()).roster_file(runbook_folder)


def find_roster(runbook_folder: Path, settings: Settings | None = None) -> Roster | None:
    """The roster for runbooks in `runbook_folder`; None if there is none (then runbooks name
    people freely and everyone is reached through the outbox). Raises RunbookError if broken."""
    path = roster_file(runbook_folder, settings)
    return load_roster(path) if path.is_file() else None

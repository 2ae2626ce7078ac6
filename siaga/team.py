"""Where the roster of a runbook library is: ``roster.yaml`` next to the runbooks, or the file
``$SIAGA_ROSTER`` names."""

from __future__ import annotations

from pathlib import Path

from .runbook import Roster, load_roster
from .settings import Settings


def roster_file(runbook_folder: Path, settings: Settings | None = None) -> Path:
    """`Settings.roster` (``$SIAGA_ROSTER``, as the entry point read it), else ``roster.yaml`` in
    `runbook_folder`; without `settings`, that file beside the runbooks (nothing is read from the
    environment here)."""
    return (settings or Settings()).roster_file(runbook_folder)


def find_roster(runbook_folder: Path, settings: Settings | None = None) -> Roster | None:
    """The roster for runbooks in `runbook_folder`; None if there is none (then runbooks name
    people freely and everyone is reached through the outbox). Raises RunbookError if broken."""
    path = roster_file(runbook_folder, settings)
    return load_roster(path) if path.is_file() else None

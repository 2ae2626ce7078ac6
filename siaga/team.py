"""Where the roster of a runbook library is: ``roster.yaml`` next to the runbooks, or the file
``$SIAGA_ROSTER`` names."""

from __future__ import annotations

import os
from pathlib import Path

from .runbook import Roster, load_roster


def roster_file(runbook_folder: Path) -> Path:
    return Path(os.environ.get("SIAGA_ROSTER") or runbook_folder / "roster.yaml")


def find_roster(runbook_folder: Path) -> Roster | None:
    """The roster for runbooks in `runbook_folder`; None if there is none (then runbooks name
    people freely and everyone is reached through the outbox). Raises RunbookError if broken."""
    path = roster_file(runbook_folder)
    return load_roster(path) if path.is_file() else None

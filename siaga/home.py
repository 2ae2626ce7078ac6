"""Where Siaga keeps its data and finds its runbooks."""

from __future__ import annotations

import os
from pathlib import Path


def siaga_home() -> Path:
    """The data folder: ``$SIAGA_HOME``, else ``~/.siaga``."""
    return Path(os.environ.get("SIAGA_HOME") or Path.home() / ".siaga").expanduser()


def runbook_folder() -> Path:
    """The runbook library: ``$SIAGA_RUNBOOKS``, else ``./runbooks``."""
    return Path(os.environ.get("SIAGA_RUNBOOKS") or "runbooks").expanduser().resolve()

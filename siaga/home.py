"""Where Siaga keeps its data and finds its runbooks."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

PRIVATE_FOLDER, PRIVATE_FILE = 0o700, 0o600


def ensure_home(home: Path) -> Path:
    """The data folder `home` (`siaga.settings.Settings.home`), made private: created with mode
    0700, and tightened to 0700 if it exists and others may enter it. It holds the outbox (every
    approver's one-time codes in plain text), the store and the logs. Return it."""
    home.mkdir(mode=PRIVATE_FOLDER, parents=True, exist_ok=True)
    _tighten(home.stat(), home.chmod)
    return home


def private_file(path: Path) -> int:
    """Open `path` to append, creating it with mode 0600 whatever the umask, and tightening it to
    0600 if others may read it; return the file descriptor."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE)
    _tighten(os.fstat(fd), lambda mode: os.fchmod(fd, mode))
    return fd


def _tighten(found: os.stat_result, chmod: Callable[[int], None]) -> None:
    """Take group and other permissions away from what this user owns (not from someone else's)."""
    if found.st_mode & 0o077 and found.st_uid == os.getuid():
        chmod(stat.S_IMODE(found.st_mode) & 0o700)


def stack_file(home: Path) -> Path:
    """Where `siaga up` notes the API URL of the stack it runs (in the data folder `home`)."""
    return home / "stack.json"


def prepare_prefect_environment(home: Path) -> str | None:
    """Point Prefect at Siaga's data folder `home` and at the running
    stack, before Prefect is imported; return the stack's API URL if it was taken from there.

    Prefect reads its settings from its own ``PREFECT_*`` variables, so they are set in this
    process's environment. Prefect keeps its own database under ``$PREFECT_HOME``; Siaga puts it
    under its data folder so that `siaga run --local` and `siaga up` share one history. Anything
    already set wins.
    """
    import json

    home = ensure_home(home)
    os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))
    Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if "PREFECT_API_URL" not in os.environ and stack_file(home).is_file():
        try:
            noted = json.loads(stack_file(home).read_text())
        except (OSError, ValueError):
            return None
        if prefect_answers(noted.get("api_url", "")):
            os.environ["PREFECT_API_URL"] = noted["api_url"]
            return str(noted["api_url"])
    return None


def prefect_answers(api_url: str) -> bool:
    """Whether a Prefect server answers at `api_url` (its ``/health``)."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False

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


def stack_file(home: Path | None = None) -> Path:
    """Where `siaga up` notes the API URL of the stack it runs."""
    return (home or siaga_home()) / "stack.json"


def prepare_prefect_environment() -> None:
    """Point Prefect at Siaga's data folder and at the running stack, before Prefect is imported.

    Prefect keeps its own database under ``$PREFECT_HOME``; Siaga puts it under its data folder so
    that `siaga run --local` and `siaga up` share one history. Anything already set wins.
    """
    import json

    home = siaga_home()
    os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))
    Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if "PREFECT_API_URL" not in os.environ and stack_file(home).is_file():
        try:
            noted = json.loads(stack_file(home).read_text())
        except (OSError, ValueError):
            return
        if _answers(noted.get("api_url", "")):
            os.environ["PREFECT_API_URL"] = noted["api_url"]


def _answers(api_url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False

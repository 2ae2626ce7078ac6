"""The Siaga home is private (0700) and the outbox, which holds every approver's one-time codes in
plain text, is 0600, whatever the umask: when an action writes to it and when the CLI makes it."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from siaga.integrations import default_registry
from siaga.integrations.outbox import read_outbox

from siaga.actions import ActionContext, Mode

from ..support.stack import clean_env

CODE = "Your one-time code: 12345678"


@contextmanager
def umask(mask: int) -> Iterator[None]:
    """The process umask (inherited by subprocesses) for a while."""
    before = os.umask(mask)
    try:
        yield
    finally:
        os.umask(before)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def send_to_outbox(home: Path, message: str = CODE) -> None:
    spec = default_registry()["outbox.send"]
    context = ActionContext(runbook_id="home-test", step_id="tell", run_id=uuid.uuid4().hex, mode=Mode.LIVE,
                            home=home, connections={})
    asyncio.run(spec.run(spec.params.model_validate({"to": "person:citra", "message": message}), context))


def test_outbox_send_makes_a_private_home_and_outbox(tmp_path: Path) -> None:
    home = tmp_path / "new" / "home"
    with umask(0o022):
        send_to_outbox(home)
    assert mode(home) == 0o700
    assert mode(home / "outbox.jsonl") == 0o600
    assert [m["message"] for m in read_outbox(home)] == [CODE]


def test_outbox_send_tightens_a_loose_home_and_outbox(tmp_path: Path) -> None:
    home = tmp_path / "loose"
    home.mkdir()
    home.chmod(0o755)
    (home / "outbox.jsonl").write_text("")
    (home / "outbox.jsonl").chmod(0o644)
    with umask(0o022):
        send_to_outbox(home)
    assert (mode(home), mode(home / "outbox.jsonl")) == (0o700, 0o600)
    assert [m["message"] for m in read_outbox(home)] == [CODE]


def test_the_cli_makes_the_home_private(tmp_path: Path) -> None:
    """Any `siaga` command makes the home it uses private: a new one, or a loose one it finds."""
    new, loose = tmp_path / "new-home", tmp_path / "loose-home"
    loose.mkdir()
    loose.chmod(0o755)
    for home in (new, loose):
        with umask(0o022):
            done = subprocess.run([sys.executable, "-m", "siaga.cli", "ledger"], capture_output=True, text=True,
                                  timeout=60, env=clean_env(home))
        assert done.returncode == 0, done.stderr
        assert mode(home) == 0o700, home
        assert (home / "siaga.db").exists()

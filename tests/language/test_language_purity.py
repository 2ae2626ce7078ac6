"""The runbook language is importable without the runtime: no Prefect, HTTP client, cloud SDK or
web server comes along with `siaga.runbook` or `siaga.actions`."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

FORBIDDEN = ("prefect", "httpx", "boto3", "fastapi")


def test_language_imports_no_runtime_packages() -> None:
    script = textwrap.dedent(
        f"""
        import json, sys
        import siaga.runbook
        import siaga.actions
        from siaga.runbook import parse_runbook, plan_runbook  # noqa: F401
        forbidden = {FORBIDDEN!r}
        loaded = sorted(
            name for name in sys.modules
            if name.split(".")[0] in forbidden
        )
        print(json.dumps(loaded))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_the_check_would_notice_a_runtime_import() -> None:
    """The same probe, importing httpx on purpose, does see it: the test above can fail."""
    script = "import sys, httpx, siaga.runbook; print('httpx' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"

"""The command line, as a user calls it: exit codes 0 ok, 1 run failed, 2 bad input."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from siaga.integrations.outbox import read_outbox

from siaga.cli import main

from ..conftest import RUNBOOKS

GOOD = textwrap.dedent("""\
    runbook: cli-good
    title: CLI good
    severity: sev3
    inputs:
      region: {type: string, enum: [ap-southeast-1, ap-southeast-3]}
      merchants: {type: integer, default: 5}
    steps:
      - id: tell
        action: outbox.send
        with: {message: "{{ inputs.merchants }} merchants in {{ inputs.region }}"}
    """)

BROKEN = textwrap.dedent("""\
    runbook: cli-broken
    title: CLI broken
    severity: sev3
    steps:
      - id: tell
        action: outbox.sned
        with: {message: hi}
      - id: later
        action: note
        aftr: [tell]
        with: {text: x}
    """)

FAILING = textwrap.dedent("""\
    runbook: cli-failing
    title: CLI failing
    severity: sev3
    steps:
      - id: doomed
        action: http.request
        with: {url: "http://127.0.0.1:9/unreachable"}
    """)


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    (tmp_path / "cli-good.yaml").write_text(GOOD)
    (tmp_path / "cli-failing.yaml").write_text(FAILING)
    return tmp_path


def siaga(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "siaga.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_validate_ok_and_broken(folder: Path) -> None:
    ok = siaga("validate", str(folder))
    assert ok.returncode == 0, ok.stderr
    assert "ok" in ok.stdout and "cli-good" in ok.stdout

    broken = folder / "broken.yaml"
    broken.write_text(BROKEN)
    result = siaga("validate", str(broken))
    assert result.returncode == 2
    assert f"{broken}:6:13: steps[0].action: no action is named `outbox.sned`" in result.stderr
    assert "did you mean `outbox.send`?" in result.stderr
    assert f"{broken}:10:5: steps[1].aftr: unknown key `aftr`" in result.stderr


def test_validate_json(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "broken.yaml").write_text(BROKEN)
    assert main(["validate", str(folder), "--json"]) == 2
    results = {Path(r["file"]).name: r for r in json.loads(capsys.readouterr().out)}
    assert results["cli-good.yaml"]["ok"] is True
    errors = results["broken.yaml"]["errors"]
    assert [(e["path"], e["line"], e["column"]) for e in errors] == [
        ("steps[0].action", 6, 13),
        ("steps[1].aftr", 10, 5),
    ]


SHADOWED = textwrap.dedent("""\
    runbook: cli-shadowed
    title: CLI shadowed trigger
    severity: sev3
    triggers:
      - source: social
        threshold: {count: 200, within: 30m, match: {sentiment: negative}}
      - source: social
        threshold: {count: 5, within: 15m, match: {sentiment: negative, tier: influencer}}
      - source: alertmanager
        match: {alertname: GatewayErrors}
      - source: alertmanager
        match: {alertname: GatewayErrors, severity: critical}
    steps:
      - id: tell
        action: note
        with: {text: hi}
    """)


def test_validate_warns_about_a_trigger_that_never_decides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A threshold that is not reached does not shadow the next trigger (the influencers' count is
    not reported); a plain trigger that takes every alert of a later one does: a warning, at its
    place, and the runbook is still ok (exit 0)."""
    path = tmp_path / "cli-shadowed.yaml"
    path.write_text(SHADOWED)
    checked = siaga("validate", str(path))
    assert checked.returncode == 0, checked.stderr
    (warning,) = checked.stderr.strip().splitlines()
    assert warning.startswith(f"{path}:11:5: warning: triggers[3]: this trigger never decides: triggers[2] takes every alert")
    assert "move it above triggers[2]" in warning and "ok" in checked.stdout and "1 warnings" in checked.stdout
    assert main(["validate", str(path), "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["ok"] is True
    assert [(w["code"], w["path"], w["line"], w["severity"]) for w in result["warnings"]] == [
        ("shadowed-trigger", "triggers[3]", 11, "warning")]
    bundled = siaga("validate", str(RUNBOOKS))
    assert bundled.returncode == 0 and "warning" not in bundled.stderr, bundled.stderr


def test_schema_and_actions(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert "outbox.send" in schema["$defs"]["Step"]["properties"]["action"]["enum"]
    assert main(["actions", "--json"]) == 0
    actions = {a["name"]: a for a in json.loads(capsys.readouterr().out)}
    assert actions["http.request"]["risk"] == "change"
    assert actions["http.request"]["drill"] == "record"
    assert actions["outbox.send"]["parameters"]["required"] == ["message"]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (["--input", "regoin=ap-southeast-1"], "unknown input `regoin`"),
        (["--input", "region=eu-west-1"], "is not one of"),
        (["--input", "region=ap-southeast-1", "--input", "merchants=many"], "expected an integer"),
        ([], "input `region` is required"),
    ],
)
def test_bad_inputs_are_refused_before_a_run_is_created(
    folder: Path, prefect_api: str, capsys: pytest.CaptureFixture[str], inputs: list[str], message: str
) -> None:
    before = _count_flow_runs()
    code = main(["run", "cli-good", "--runbooks", str(folder), "--local", *inputs])
    assert code == 2
    assert message in capsys.readouterr().err
    assert _count_flow_runs() == before


def test_run_local_completes_and_fails_with_the_right_exit_codes(
    folder: Path, prefect_api: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["run", "cli-good", "--runbooks", str(folder), "--local", "--json", "-i", "region=ap-southeast-3"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ok"] is True and summary["steps"][0]["outcome"] == "completed"

    code = main(["run", str(folder / "cli-failing.yaml"), "--local", "--json"])
    assert code == 1
    summary = json.loads(capsys.readouterr().out)
    assert summary["ok"] is False
    assert summary["steps"][0]["outcome"] == "failed"
    assert "ConnectError" in summary["steps"][0]["error"]


def test_run_without_a_stack_says_how_to_start_one(folder: Path, tmp_path: Path) -> None:
    env = {"SIAGA_HOME": str(tmp_path / "empty-home"), "PREFECT_API_URL": ""}
    result = siaga("run", "cli-good", "--runbooks", str(folder), "-i", "region=ap-southeast-1", env=env)
    assert result.returncode == 2
    assert "siaga up" in result.stderr and "--local" in result.stderr


def test_unknown_runbook(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "no-such-runbook", "--runbooks", str(folder), "--local"]) == 2
    assert "no runbook `no-such-runbook`" in capsys.readouterr().err


def _count_flow_runs() -> int:
    from prefect import get_client

    async def count() -> int:
        async with get_client() as client:
            return await client.count_flow_runs()

    return asyncio.run(count())


def test_a_drill_takes_the_runbooks_drill_inputs(tmp_path: Path, prefect_api: str, capsys: pytest.CaptureFixture[str]) -> None:
    runbook = tmp_path / "scheduled.yaml"
    runbook.write_text(GOOD.replace("runbook: cli-good", "runbook: scheduled") + textwrap.dedent("""\
        drill:
          schedule: "0 3 * * MON"
          inputs: {region: ap-southeast-3}
        """))
    assert main(["drill", str(runbook), "--local", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    runbook.write_text(runbook.read_text().replace("  inputs: {region: ap-southeast-3}\n", ""))
    assert main(["validate", str(runbook)]) == 2
    assert "a scheduled drill gives no value for required input region" in capsys.readouterr().err


def test_ledger_unsettled_shows_whole_keys_and_the_line_that_settles_each(tmp_path: Path) -> None:
    """At 80 columns each unsettled call's key is whole on its line, with the command lines that
    settle it; running one of them settles it."""
    from siaga.audit.ledger import Ledger
    from siaga.store import engine

    url = f"sqlite:///{tmp_path / 'siaga.db'}"
    ledger = Ledger(engine(url))
    key = "incident:inc-20260101-payments-gateway-ap-southeast-1-0123456789abcdef:freeze-payouts-everywhere"
    ledger.claim(key, "payments.freeze", {"scope": "payouts"}, run_id="0b7c1f52-5d2e-4f8e-9a41-3c6d2b1e9f07")
    settled = "run:5f0e6d3c:page-oncall"
    ledger.claim(settled, "pagerduty.trigger", {}, run_id="5f0e6d3c")
    ledger.done(settled, {"dedup_key": "x"})
    env = {"SIAGA_DATABASE_URL": url, "SIAGA_HOME": str(tmp_path / "home"), "COLUMNS": "80"}

    listed = siaga("ledger", "--unsettled", env=env)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(key) > 80 and key in lines
    assert settled not in listed.stdout
    retry = f"  siaga ledger --resolve {key} --retry --note 'what you checked'   # it did not"
    assert f"  siaga ledger --resolve {key} --done --note 'what you checked'    # it took effect" in lines
    assert retry in lines

    command = shlex.split(retry, comments=True)
    assert command[0] == "siaga"
    done = siaga(*command[1:], env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{key}: failed"
    assert siaga("ledger", "--unsettled", env=env).stdout.strip() == "no call waits to be settled"
    everything = siaga("ledger", env=env).stdout.splitlines()
    assert key in everything and settled in everything


GATED = textwrap.dedent("""\
    runbook: cli-gated
    title: CLI gated
    severity: sev3
    roles:
      commander: [alice]
    steps:
      - id: hold
        action: note
        with: {text: nobody answers}
        approval: {from: [commander], timeout: 10s}
    """)


def local_run_at_a_gate(tmp_path: Path) -> tuple[subprocess.Popen[str], str]:
    """`siaga run --local` of a gated runbook with no stack and no PREFECT_API_URL, once its gate
    has sent its code; the link in the code's message."""
    folder, home = tmp_path / "runbooks", tmp_path / "home"
    folder.mkdir()
    (folder / "cli-gated.yaml").write_text(GATED)
    (folder / "roster.yaml").write_text((RUNBOOKS / "roster.yaml").read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SIAGA_"))} | {"SIAGA_HOME": str(home)}
    with (tmp_path / "run.log").open("w") as log:
        run = subprocess.Popen([sys.executable, "-m", "siaga.cli", "run", "cli-gated", "--runbooks", str(folder),
                                "--local", "--as", "eko"], stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + 120
    while not (messages := read_outbox(home)):
        if run.poll() is not None or time.monotonic() > deadline:
            run.kill()
            pytest.fail((tmp_path / "run.log").read_text())
        time.sleep(0.2)
    return run, re.search(r"Decide in the Prefect UI: (\S+) \(Resume\)", messages[0]["message"]).group(1)


def test_a_local_run_without_a_stack_prints_links_to_the_server_that_holds_it(tmp_path: Path) -> None:
    """No stack and no PREFECT_API_URL: `siaga run --local` runs on a temporary Prefect server with
    its UI, the gate's message links to the run there while it waits, and the end says that server
    stopped and where the run shows next."""
    run, link = local_run_at_a_gate(tmp_path)
    try:
        ui, run_id = link.split("/runs/flow-run/")
        page = httpx.get(link, headers={"Accept": "text/html"})
        assert page.status_code == 200 and "<html" in page.text  # the UI, with the run, while it waits
        deadline = time.monotonic() + 30  # it waits with its form once nothing but people is awaited
        while httpx.get(f"{ui}/api/flow_runs/{run_id}").json()["state"]["type"] != "PAUSED":
            assert time.monotonic() < deadline, "the run did not wait at its gate"
            time.sleep(0.2)
        assert run.wait(timeout=120) == 1  # nobody answered: the gate rejected the step
    finally:
        if run.poll() is None:
            run.kill()
    said = (tmp_path / "run.log").read_text()
    assert "Traceback" not in said
    assert f"this run goes to a temporary Prefect server, UI at {ui}, until it ends" in said
    assert f"\nRun Rejected: http://127.0.0.1:4200/runs/flow-run/{run_id}\n" in said
    assert f"(its temporary Prefect server, {ui}, stopped with the run: the link opens once `siaga up` runs" in said
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{ui}/api/health", timeout=2)


def test_sigterm_stops_a_local_run_and_its_temporary_server(tmp_path: Path) -> None:
    run, link = local_run_at_a_gate(tmp_path)
    ui = link.split("/runs/flow-run/")[0]
    run.send_signal(signal.SIGTERM)
    assert run.wait(timeout=60) == 143
    said = (tmp_path / "run.log").read_text()
    assert "Traceback" not in said and said.rstrip().endswith("siaga run: stopped (SIGTERM)")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{ui}/api/health", timeout=2)

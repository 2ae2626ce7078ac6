"""The bundled runbook library: every runbook validates, the committed editor schema is current
and accepts them, and each one runs to completion as a drill against a real Prefect server
without calling anything outside this machine."""

from __future__ import annotations

import asyncio
import copy
import fnmatch
import json
from pathlib import Path
from typing import Any

import os
import pytest
from jsonschema import Draft202012Validator
from ruamel.yaml import YAML

from siaga.catalog import Catalog
from siaga.report.deadlines import DeadlineRecords
from siaga.flows.compiler import compile_runbook
from siaga.integrations import default_registry
from siaga.integrations.outbox import read_outbox
from siaga.runbook import Runbook
from siaga.runbook.comms import statement_deadlines
from siaga.runbook.schema import runbook_schema
from siaga.settings import Settings
from siaga.store import engine

from ..support.gate_driver import with_approvals

REPO = Path(__file__).resolve().parent.parent.parent
RUNBOOKS = REPO / "runbooks"
SCHEMA_FILE = REPO / "runbook.schema.json"
SCHEMA_LINE = "# yaml-language-server: $schema=../runbook.schema.json"
BUNDLED = ("payment-gateway-outage", "region-outage", "data-breach", "social-media-storm")


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load(RUNBOOKS, default_registry())


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def _yaml(path: Path) -> Any:
    return YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))


def test_every_bundled_runbook_validates(catalog: Catalog) -> None:
    assert not catalog.problems, "\n".join(map(str, catalog.problems))
    assert set(BUNDLED) <= set(catalog.runbooks)
    for runbook_id, path in catalog.paths.items():
        assert path.name == f"{runbook_id}.yaml"
        first_line = path.read_text(encoding="utf-8").splitlines()[0]
        assert first_line == SCHEMA_LINE, f"{path.name} must start with `{SCHEMA_LINE}`"


def test_committed_schema_is_current(schema: dict[str, Any]) -> None:
    current = json.loads(json.dumps(runbook_schema(default_registry())))
    assert schema == current, (
        "runbook.schema.json is stale: run `siaga schema > runbook.schema.json` and commit it"
    )


def test_schema_accepts_every_bundled_runbook(schema: dict[str, Any], catalog: Catalog) -> None:
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    for path in catalog.paths.values():
        errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(_yaml(path))]
        assert not errors, f"{path.name}:\n" + "\n".join(errors)


def test_schema_rejects_an_unknown_step_key(schema: dict[str, Any]) -> None:
    document = copy.deepcopy(_yaml(RUNBOOKS / "payment-gateway-outage.yaml"))
    document["steps"][0]["colour"] = "red"
    errors = list(Draft202012Validator(schema).iter_errors(document))
    assert any("colour" in error.message and list(error.path) == ["steps", 0] for error in errors)


async def _drill(runbook: Runbook, home: Path) -> tuple[Any, dict[str, Any]]:
    # approvals are real in drills: the gates are answered as the team would
    state = await with_approvals(home, runbook.id, compile_runbook(runbook)(mode="drill", return_state=True))
    result = await state.aresult(raise_on_failure=False)
    return state, result if isinstance(result, dict) else {"error": repr(result)}


@pytest.mark.slow
@pytest.mark.parametrize("runbook_id", BUNDLED)
def test_drill_runs_to_completion(
    runbook_id: str, catalog: Catalog, prefect_api: str, siaga_home: Path
) -> None:
    runbook = catalog.runbooks[runbook_id]
    state, summary = asyncio.run(_drill(runbook, siaga_home))
    assert state.is_completed(), f"{state.name}: {state.message}"
    assert summary["ok"] and summary["mode"] == "drill"

    # a drill rehearses the on_resolve steps too, after the response (as the incident would run them)
    every_step = [*runbook.steps, *runbook.on_resolve]
    assert runbook.on_resolve, "every bundled runbook says what to do once its incident resolves"
    outcomes = {row["step"]: row["outcome"] for row in summary["steps"]}
    assert list(outcomes) == [step.id for step in every_step]
    for step in every_step:
        outcome = outcomes[step.id]
        assert outcome in {"completed", "recorded", "skipped"}, f"{step.id}: {outcome}"
        if outcome == "skipped":
            assert step.when is not None, f"{step.id} was skipped but has no `when:`"
        elif _recorded_in_drill(runbook, step.action):
            assert outcome == "recorded", f"{step.id} ({step.action}) called its provider in a drill"
        else:
            assert outcome == "completed", f"{step.id} ({step.action}): {outcome}"
    assert all(row["undo_outcome"] == "" for row in summary["steps"]), "a drill undid steps"
    assert any(outcome == "recorded" for outcome in outcomes.values())

    # Statement deadlines ran on the drill's clock: once the drill is over none is pending, and
    # the public one was met by the customer or media statement the drill published.
    deadlines = {d.name: d.state for d in DeadlineRecords(engine(Settings.from_environ(os.environ).store_url)).find(run_id=summary["run_id"])}
    assert set(deadlines) == set(statement_deadlines(runbook))
    assert "pending" not in deadlines.values() and deadlines["public"] == "met", deadlines

    # No connections are configured: every notification went to the outbox, marked as a drill.
    everything = [m for m in read_outbox(siaga_home) if m["run_id"] == summary["run_id"]]
    messages = [m for m in everything if not m["to"].startswith("person:")]
    codes = [m for m in everything if m["to"].startswith("person:")]
    gated = [s for s in every_step if s.approval and outcomes[s.id] != "skipped"]
    assert bool(codes) == bool(gated), "approvers of every gate got their codes"
    assert all(m["message"].startswith("[DRILL] ") for m in codes)
    sent = [s.id for s in every_step if s.action in OUTBOX_FALLBACK and outcomes[s.id] == "completed"]
    # A fanout's channels are entries of their own (`situation-report.slack`).
    assert sorted({m["step"].partition(".")[0] for m in messages}) == sorted(sent)
    for message in messages:
        assert message["mode"] == "drill"
        # outbox.send, Slack, Teams and e-mail prefix the text; a page's outbox entry carries the
        # summary (prefixed) after its severity as subject, and its custom details as message.
        marked = message["message"].startswith("[DRILL] ") or "[DRILL] " in message.get("subject", "")
        assert marked, f"{message['step']}: {message.get('subject')!r} {message['message']!r}"


OUTBOX_FALLBACK = {
    "outbox.send", "pagerduty.trigger", "pagerduty.resolve", "slack.post", "teams.post", "email.send", "notify.fanout", "comms.publish",
}
"""Actions that send to the outbox when no connection of their type is configured (a statement's
status page channel too)."""


ON_THE_STORE = {"voices.draft", "voices.answer"}
"""Actions that work on Siaga's store (the voices answer posts nothing in a drill: it records)."""


def _recorded_in_drill(runbook: Runbook, action: str) -> bool:
    """Whether a drill records `action` (by its own drill behaviour or the runbook's substitute)."""
    behaviour = next(
        (str(b) for pattern, b in runbook.drill.substitute.items() if fnmatch.fnmatchcase(action, pattern)),
        str(default_registry()[action].drill_behaviour),
    )
    return behaviour == "record"


def test_bare_machine_drills_record_what_has_no_outbox(catalog: Catalog) -> None:
    """Every action a bundled runbook uses either falls back to the outbox, is recorded in drills,
    or is harmless (wait, note): so `siaga drill --local` completes with no connections.yaml."""
    for runbook_id in BUNDLED:
        runbook = catalog.runbooks[runbook_id]
        for step in [*runbook.steps, *runbook.on_resolve]:
            assert (
                step.action in OUTBOX_FALLBACK | {"wait", "note", "comms.draft"} | ON_THE_STORE
                or _recorded_in_drill(runbook, step.action)
            ), f"{runbook_id}: {step.id} ({step.action}) would need a connection in a drill"

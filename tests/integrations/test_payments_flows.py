"""Compiled runbooks with the payments and status-page actions, run on a real Prefect server
against local stand-ins: a freeze is made once through kill -9, duplicate runs and retries; a
failed run lifts its freeze; and no configured secret leaks into logs, outputs, artifacts, the
ledger or errors."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prefect import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import TaskRun
from siaga.flows import compile_runbook
from siaga.flows.effects import ALREADY_DONE, FOUND_IN_PLACE
from siaga.integrations import default_registry

from siaga import cli
from siaga.audit import AuditTrail
from siaga.audit.ledger import Ledger
from siaga.logs import log_file
from siaga.runbook import parse_runbook
from siaga.settings import Settings
from siaga.store import engine

from ..conftest import REPO
from ..support.payment_standins import FakeStatuspage, FakeStripe, KillSwitch, Reply, Slow, switch_connection
from ..support.prefect_runs import settled_task_runs
from ..support.settings import settings_with
from ..support.webhook_server import webhook_server


def trail() -> AuditTrail:
    """The audit trail of the session's store, as the runs' settings name it."""
    return AuditTrail(engine(Settings.from_environ(os.environ).store_url))


pytestmark = pytest.mark.usefixtures("prefect_api")

SWITCH_TOKEN = "canary-switch-0b7e51f9d2"
STRIPE_KEY = "sk_test_canary_4c1d88ae73"
STRIPE_BAD_KEY = "sk_test_canary_revoked_9e2f"
STATUSPAGE_KEY = "canary-statuspage-61a0c3b8"
CANARIES = (SWITCH_TOKEN, STRIPE_KEY, STRIPE_BAD_KEY, STATUSPAGE_KEY)

FREEZE = """\
runbook: {id}
title: Freeze payouts
severity: sev1
steps:
  - id: freeze-payouts
    action: payments.freeze
    retries: {retries}
    retry_delay: 0s
    with: {{scope: payouts, reason: acquirer outage, connection: {connection}}}
"""


@pytest.fixture(scope="module", autouse=True)
def secrets_env() -> Iterator[None]:
    """The canaries, set before the module's first fixture (a subprocess inherits them)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SIAGA_SECRET_SWITCH_TOKEN", SWITCH_TOKEN)
        env.setenv("SIAGA_SECRET_STRIPE_KEY", STRIPE_KEY)
        env.setenv("SIAGA_SECRET_STRIPE_BAD_KEY", STRIPE_BAD_KEY)
        env.setenv("SIAGA_SECRET_STATUSPAGE_KEY", STATUSPAGE_KEY)
        yield


@pytest.fixture
def switch() -> Iterator[KillSwitch]:
    with KillSwitch(SWITCH_TOKEN).running() as server:
        yield server  # type: ignore[misc]


def use_connections(tmp_path: Path, connections: dict[str, Any]) -> Settings:
    """Write `connections` to a connections.yaml; return the settings of a run that reads it."""
    path = tmp_path / "connections.yaml"
    path.write_text(json.dumps({"connections": connections}))  # JSON is YAML
    return settings_with(connections=path)


def compiled(text: str, settings: Settings) -> Any:
    return compile_runbook(
        parse_runbook(textwrap.dedent(text), default_registry(), file="test.yaml"),
        settings=settings,
    )


async def outcome(state: Any) -> tuple[Any, list[TaskRun], Any]:
    result = await state.aresult(raise_on_failure=False)
    runs = await settled_task_runs(state.state_details.flow_run_id)
    return state, sorted(runs, key=lambda r: r.start_time or r.expected_start_time), result


def run(text: str, settings: Settings, **parameters: Any) -> tuple[Any, list[TaskRun], Any]:
    flow = compiled(text, settings)

    async def go() -> tuple[Any, list[TaskRun], Any]:
        return await outcome(await flow(**parameters, return_state=True))

    return asyncio.run(go())


def logged(run_id: Any, event: str) -> list[dict[str, Any]]:
    lines = log_file(Settings.from_environ(os.environ).home).read_text().splitlines()
    return [
        e
        for e in map(json.loads, lines)
        if e.get("run_id") == str(run_id) and e.get("event") == event
    ]


# --- kill -9 between the provider's answer and the ledger's record ------------------------------


@dataclass
class Rerun:
    """A run killed with -9 mid-freeze, and the run started after it for the same incident."""

    switch: KillSwitch
    runbook: str
    key: str
    state: Any
    runs: list[TaskRun]
    result: Any
    settings: Settings
    """The settings of the runs, naming the connections file they share."""


def start_held(
    runbook: Path, incident: str, switch: KillSwitch, prefect_api: str, connections: Path
) -> subprocess.Popen[bytes]:
    """Run `runbook` in a subprocess (reading `connections`); the switch applies its freeze and
    holds back the answer."""
    switch.hold = True
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.run_incident", str(runbook), incident],
        cwd=REPO,
        env={**os.environ, "PREFECT_API_URL": prefect_api, "SIAGA_CONNECTIONS": str(connections)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


@pytest.fixture(scope="module")
def killed_then_rerun(
    prefect_api: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Rerun]]:
    """Two incidents' freezes, one through a switch with a status endpoint and one through a switch
    without: each run is killed with -9 once its freeze has reached the switch, before the ledger
    has its outcome; then each incident is run again. Both at once, to wait out the dead runs'
    heartbeats once."""
    folder = tmp_path_factory.mktemp("killed")
    with ExitStack() as stack:
        seeing = stack.enter_context(KillSwitch(SWITCH_TOKEN).running())
        blind = stack.enter_context(KillSwitch(SWITCH_TOKEN, status=False).running())
        assert isinstance(seeing, KillSwitch) and isinstance(blind, KillSwitch)
        connections = folder / "connections.yaml"
        connections.write_text(
            json.dumps(
                {
                    "connections": {
                        "switch": switch_connection(seeing),
                        "blind-switch": switch_connection(blind, status_path=None),
                    }
                }
            )
        )
        settings = settings_with(connections=connections)
        cases = {
            "inc-1": (seeing, FREEZE.format(id="kill-freeze", retries=0, connection="switch")),
            "inc-2": (
                blind,
                FREEZE.format(id="kill-freeze-blind", retries=2, connection="blind-switch"),
            ),
        }
        children = {}
        for incident, (switch, text) in cases.items():
            (folder / f"{incident}.yaml").write_text(text)
            children[incident] = start_held(
                folder / f"{incident}.yaml", incident, switch, prefect_api, connections
            )
        try:
            for incident, (switch, _) in cases.items():
                if not switch.freeze_arrived.wait(90):
                    children[incident].kill()
                    pytest.fail(
                        f"no freeze reached the switch: {children[incident].communicate()[0].decode()[-3000:]}"
                    )
                children[incident].send_signal(signal.SIGKILL)
                assert children[incident].wait(10) == -signal.SIGKILL
        finally:
            for incident, (switch, _) in cases.items():
                switch.release.set()
                switch.hold = False
                if children[incident].poll() is None:
                    children[incident].kill()
        ledger = Ledger(engine(Settings.from_environ(os.environ).store_url))
        for incident in cases:
            entry = ledger.get(f"{incident}:freeze-payouts:payments.freeze")
            assert entry is not None and entry.state == "intent", "the ledger holds the intent only"

        async def rerun_both() -> list[tuple[Any, list[TaskRun], Any]]:
            states = await asyncio.gather(
                *(
                    compiled(text, settings)(incident={"id": incident}, return_state=True)
                    for incident, (_, text) in cases.items()
                )
            )
            return [await outcome(state) for state in states]

        reruns = asyncio.run(rerun_both())
        yield {
            incident: Rerun(switch, text, f"{incident}:freeze-payouts:payments.freeze", *again, settings)
            for (incident, (switch, text)), again in zip(cases.items(), reruns, strict=True)
        }


def test_a_freeze_killed_before_its_record_is_reconciled_not_repeated(
    killed_then_rerun: dict[str, Rerun],
) -> None:
    rerun = killed_then_rerun["inc-1"]
    assert rerun.state.is_completed(), rerun.result
    assert len(rerun.switch.freezes) == 1 and len(rerun.switch.calls("POST", "/freeze")) == 1, (
        "exactly one freeze"
    )
    assert rerun.switch.calls("GET", "/status"), "the rerun asked the switch"
    assert rerun.runs[0].state.name == "Completed"
    [completed] = logged(rerun.state.state_details.flow_run_id, "step completed")
    assert completed["note"] == FOUND_IN_PLACE
    entry = Ledger(engine(Settings.from_environ(os.environ).store_url)).get(rerun.key)
    assert entry is not None and entry.state == "done"
    assert entry.result["reconciled"] is True and entry.result["key"] == "inc-1:freeze-payouts"


def test_a_freeze_killed_before_its_record_without_a_status_endpoint_asks_a_person(
    killed_then_rerun: dict[str, Rerun],
) -> None:
    rerun = killed_then_rerun["inc-2"]
    assert rerun.state.is_failed()
    assert rerun.runs[0].run_count == 1, "a refusal is not retried"
    text = str(rerun.result)
    assert "may already have acted" in text and "no status_path" in text
    assert f"siaga ledger --resolve {rerun.key} --done" in text
    assert len(rerun.switch.freezes) == 1

    # The person checks the switch, says it took effect; the next run goes on without a freeze.
    assert (
        cli.main(["ledger", "--resolve", rerun.key, "--done", "--note", "switch shows the freeze"])
        == 0
    )
    state, _, result = run(rerun.runbook, rerun.settings, incident={"id": "inc-2"})
    assert state.is_completed(), result
    assert len(rerun.switch.calls("POST", "/freeze")) == 1


# --- duplicate runs of one incident at once -------------------------------------------------------


def test_duplicate_runs_of_one_incident_freeze_once(
    switch: KillSwitch, tmp_path: Path
) -> None:
    settings = use_connections(tmp_path, {"switch": switch_connection(switch)})
    switch.fail("POST", "/freeze", Slow(3))  # longer than a heartbeat: the second run sees it alive
    flow = compiled(FREEZE.format(id="duplicate-freeze", retries=0, connection="switch"), settings)

    async def both() -> list[tuple[Any, list[TaskRun], Any]]:
        states = await asyncio.gather(
            flow(incident={"id": "inc-3"}, return_state=True),
            flow(incident={"id": "inc-3"}, return_state=True),
        )
        return [await outcome(s) for s in states]

    first, second = asyncio.run(both())
    assert first[0].is_completed() and second[0].is_completed(), (first[2], second[2])
    assert first[0].state_details.flow_run_id != second[0].state_details.flow_run_id
    assert len(switch.calls("POST", "/freeze")) == 1 and len(switch.freezes) == 1
    notes = sorted(
        str(logged(o[0].state_details.flow_run_id, "step completed")[0]["note"])
        for o in (first, second)
    )
    assert notes == ["None", ALREADY_DONE], "one run froze, the other waited for its result"


# --- Prefect retries ------------------------------------------------------------------------------


def test_a_prefect_retry_after_a_503_freezes_once(
    switch: KillSwitch, tmp_path: Path
) -> None:
    settings = use_connections(tmp_path, {"switch": switch_connection(switch)})
    unavailable = Reply(503, {"error": "switch restarting"}, {"Retry-After": "0"})
    switch.fail("POST", "/freeze", *[unavailable] * 4)  # more than one attempt's HTTP retries
    state, runs, result = run(
        FREEZE.format(id="retry-freeze", retries=2, connection="switch"), settings, incident={"id": "inc-4"}
    )
    assert state.is_completed(), result
    assert runs[0].run_count == 2, "Prefect retried the step once"
    assert len(switch.calls("POST", "/freeze")) == 5 and len(switch.freezes) == 1


def test_a_prefect_retry_after_a_500_that_froze_reconciles(
    switch: KillSwitch, tmp_path: Path
) -> None:
    settings = use_connections(tmp_path, {"switch": switch_connection(switch)})
    switch.fail(
        "POST", "/freeze", Reply(500, {"error": "timeout writing the audit log"}, after=True)
    )
    state, runs, result = run(
        FREEZE.format(id="retry-freeze-500", retries=2, connection="switch"),
        settings,
        incident={"id": "inc-5"},
    )
    assert state.is_completed(), result
    assert runs[0].run_count == 2
    assert len(switch.calls("POST", "/freeze")) == 1 and len(switch.freezes) == 1
    [completed] = logged(state.state_details.flow_run_id, "step completed")
    assert completed["note"] == FOUND_IN_PLACE


# --- the example runbook --------------------------------------------------------------------------


FIXTURE = REPO / "tests" / "fixtures" / "payout-freeze.yaml"


def test_the_example_runbook_validates() -> None:
    assert cli.main(["validate", str(FIXTURE)]) == 0
    runbook = parse_runbook(FIXTURE.read_text(), default_registry(), file=str(FIXTURE))
    freeze = runbook.step("freeze-payouts")
    assert freeze.undo is not None and freeze.undo.action == "payments.unfreeze"
    assert default_registry()["payments.freeze"].undo == "payments.unfreeze"


def test_a_failed_fail_over_lifts_the_freeze(
    switch: KillSwitch, tmp_path: Path
) -> None:
    with FakeStatuspage(STATUSPAGE_KEY).running() as page, webhook_server() as router:
        assert isinstance(page, FakeStatuspage)
        router.answer("/failover", (409, {"error": "standby route not provisioned"}))
        settings = use_connections(
            tmp_path,
            {
                "switch": switch_connection(switch),
                "status": {
                    "type": "statuspage",
                    "base_url": f"{page.url}/v1",
                    "page_id": page.page_id,
                    "api_key": "secret://statuspage-key",
                },
            },
        )
        state, _, result = run(
            FIXTURE.read_text(), settings, failover_url=f"{router.url}/failover", incident={"id": "inc-6"}
        )
        assert state.is_failed()
        order = [(r.method, r.path) for r in switch.requests]
        assert order == [("GET", "/preview"), ("POST", "/freeze"), ("POST", "/unfreeze")]
        freeze, unfreeze = (
            switch.calls("POST", "/freeze")[0].json(),
            switch.calls("POST", "/unfreeze")[0].json(),
        )
        assert freeze["reason"] == (
            "Acquirer outage; Freezing payouts would hold 3 merchants, 5 pending payouts worth IDR 1550000.50"
        )
        assert (unfreeze["action"], unfreeze["scope"], unfreeze["reason"]) == (
            "unfreeze",
            "payouts",
            freeze["reason"],
        )
        assert unfreeze["idempotency_key"] == "inc-6:undo-freeze-payouts"
        assert switch.active == [], "payouts flow again"
        assert [i["name"] for i in page.created()] == ["Merchant payouts delayed"]
        outcomes = {s["step"]: (s["outcome"], s["undo_outcome"]) for s in result.summary["steps"]}
        assert outcomes == {
            "preview-freeze": ("completed", ""),
            "freeze-payouts": ("completed", "completed"),
            "publish-status": ("completed", ""),
            "fail-over": ("failed", ""),
        }
        assert "standby route not provisioned" in str(result)


# --- secrets --------------------------------------------------------------------------------------


CANARY_RUN = """\
runbook: canary-payments
title: Every provider, with secrets that must not leak
severity: sev2
steps:
  - id: preview-switch
    action: payments.preview
    with: {scope: payouts, connection: switch}
  - id: freeze-switch
    action: payments.freeze
    with: {scope: payouts, reason: canary run, connection: switch}
    undo: payments.unfreeze
  - id: preview-stripe
    action: payments.preview
    with: {scope: payouts, connection: stripe}
  - id: freeze-stripe
    action: payments.freeze
    with: {scope: {merchants: [acct_1]}, reason: canary run, connection: stripe}
    undo: payments.unfreeze
  - id: publish-status
    action: statuspage.create_incident
    with: {name: Canary, body: "Checking that secrets stay secret."}
  - id: show-outputs
    action: http.request
    with: {url: "{recorder}/outputs", json: "{{ steps }}"}
  - id: revoked-stripe
    action: payments.preview
    with: {scope: payouts, connection: stripe-revoked}
"""


def test_no_secret_reaches_logs_outputs_artifacts_ledger_or_errors(
    siaga_home: Path, tmp_path: Path
) -> None:
    switch = KillSwitch(SWITCH_TOKEN, echo_auth=True)  # a careless switch that echoes its token
    stripe = FakeStripe(STRIPE_KEY)  # echoes a refused key in its 401, unmasked
    stripe.add_account("acct_1", "weekly", weekly_anchor="monday", available=5000)
    page = FakeStatuspage(STATUSPAGE_KEY)
    with switch.running(), stripe.running(), page.running(), webhook_server() as recorder:
        stripe_connection = {
            "type": "stripe",
            "base_url": stripe.url,
            "api_key": "secret://stripe-key",
        }
        settings = use_connections(
            tmp_path,
            {
                "switch": switch_connection(switch),
                "stripe": stripe_connection,
                "stripe-revoked": {**stripe_connection, "api_key": "secret://stripe-bad-key"},
                "status": {
                    "type": "statuspage",
                    "base_url": f"{page.url}/v1",
                    "page_id": page.page_id,
                    "api_key": "secret://statuspage-key",
                },
            },
        )
        state, runs, result = run(
            CANARY_RUN.replace("{recorder}", recorder.url), settings, incident={"id": "inc-canary"}
        )
        [shown] = recorder.calls("POST", "/outputs")
        assert state.is_failed(), "the revoked key fails the last step"
        assert stripe.interval("acct_1") == "weekly", "the failure undid the Stripe freeze"
        assert switch.active == [] and len(page.created()) == 1

    run_id = state.state_details.flow_run_id

    async def from_the_api() -> tuple[list[Any], list[Any]]:
        async with get_client() as client:
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
            )
            for _ in range(60):  # run logs reach the API in batches, the flow's own last
                logs = await client.read_logs(
                    LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id]))
                )
                if any("Finished in state Failed" in log.message for log in logs):
                    break
                await asyncio.sleep(0.25)
        return artifacts, logs

    artifacts, api_logs = asyncio.run(from_the_api())
    ledger = [e for e in Ledger(engine(Settings.from_environ(os.environ).store_url)).entries() if e.key.startswith("inc-canary:")]
    places = {
        "siaga.jsonl": log_file(siaga_home).read_text(),
        "error and summary": str(result) + json.dumps(result.summary, default=str),
        "step outputs": shown.body.decode(),
        "task run states": json.dumps([(r.state.message, r.state.name) for r in runs], default=str),
        "artifacts": json.dumps([a.data for a in artifacts], default=str),
        "Prefect logs": "\n".join(log.message for log in api_logs),
        "ledger": json.dumps([(e.result, e.error) for e in ledger], default=str),
        "audit trail": json.dumps([r.as_json() for r in trail().records("inc-canary")], ensure_ascii=False),
    }
    assert '"step.failed"' in places["audit trail"], "the trail holds the run"
    for where, text in places.items():
        for canary in CANARIES:
            assert canary not in text, f"{canary} leaked into {where}"
    assert "[secret:switch-token]" in places["step outputs"], (
        "the echoed token was redacted, not lost"
    )
    assert '"acct_1"' in places["step outputs"] and "preview-stripe" in places["step outputs"]
    assert "Invalid API Key provided: [secret:stripe-bad-key]" in places["error and summary"]
    assert len(artifacts) >= 2 and len(ledger) >= 4
    assert any("step failed" in log.message for log in api_logs), (
        "Siaga's own lines reached Prefect"
    )

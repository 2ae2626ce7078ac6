"""The bundled payment-gateway-outage drill on `siaga up`, every gate decided in the Prefect UI in
Chromium, out of order, the payout freeze rejected.

The run opens the freeze, failover and customer-notice gates together and, once nothing but people
is awaited, waits without a process behind one Resume form for all three. The liaison approves the
customer notice first; finance rejects the freeze with her reject code; ops approves the failover;
the liaison and the commander approve the report to Bank Indonesia. What depends on the freeze
(the merchant notice, the reconciliation checklist) is skipped and says why; the rest runs; the
release of payouts at the end (`releases: freeze-payouts`) is never asked for; the run ends
Rejected and says what a person must do next.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from playwright.sync_api import Page

from siaga.approvals.runs import RunRecords
from siaga.drills.records import DrillRecords
from siaga.integrations.outbox import read_outbox
from siaga.store import as_utc, engine

from ..conftest import RUNBOOKS
from ..support.browser import browser_fixture, page_fixture  # noqa: F401  (the fixtures `browser`, `page`)
from ..support.gate_driver import code_for
from ..support.prefect_ui import open_resume_form, run_page
from ..support.stack import Stack, create_flow_run, running_stack

pytestmark = pytest.mark.slow
T = TypeVar("T")
RUNBOOK = "payment-gateway-outage"


def wait(ready: Callable[[], T], timeout: float = 120, say: Callable[[], str] = lambda: "timed out") -> T:
    deadline = time.monotonic() + timeout
    while not (value := ready()):
        assert time.monotonic() < deadline, say()
        time.sleep(0.3)
    return value


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, prefect_db: Path) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("drill-ui-home"), RUNBOOKS, "--no-receiver", prefect_db=prefect_db) as up:
        yield up


class Drill:
    def __init__(self, stack: Stack) -> None:
        self.stack, self.home = stack, Path(stack.env["SIAGA_HOME"])
        self.http = httpx.Client(base_url=stack.api, timeout=30)
        deployment = self.http.get(f"/deployments/name/{RUNBOOK}/siaga").json()
        self.id: str = create_flow_run(stack.api, deployment["id"], {"mode": "drill"})["id"]
        self.runs = RunRecords(engine(f"sqlite:///{self.home / 'siaga.db'}"))
        self.key: str | None = None

    def run(self) -> dict[str, Any]:
        return self.http.get(f"/flow_runs/{self.id}").json()

    def waits_for(self, *steps: str) -> list[str]:
        """Wait until the run waits (suspended, a new form up) at exactly `steps`' gates."""
        def ready() -> bool:
            record = self.runs.get(self.id)
            state = self.run()["state"]
            assert state["type"] not in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"), state
            return bool(record and record.state == "waiting" and record.form_key and record.form_key != self.key
                        and state["state_details"].get("pause_key") == record.form_key
                        and sorted(g.rsplit(":", 1)[1] for g in record.waiting_on or ()) == sorted(steps))
        wait(ready, 180, lambda: f"not waiting at {steps}: {self.runs.get(self.id)}")
        record = self.runs.get(self.id)
        assert record is not None
        self.key = record.form_key
        return sorted(steps)

    def decide(self, page: Page, step: str, person: str, decision: str = "approve") -> None:
        form = open_resume_form(page, run_page(self.stack.api.removesuffix("/api"), self.id))
        form.choose("Step", step)
        offered = form.choose("Approver", person)
        assert person in offered
        form.choose("Decision", decision)
        form.fill("Code", code_for(self.home, person, self.id, step, decision))
        answer = form.submit()
        assert (answer.http_status, answer.status) == (201, "ACCEPT"), answer.body

    def task_states(self) -> dict[str, set[str]]:
        """Each step's task run states: a step done before a wake-up shows again as Cached."""
        runs = self.http.post("/task_runs/filter", json={"flow_runs": {"id": {"any_": [self.id]}}, "limit": 200}).json()
        states: dict[str, set[str]] = {}
        for r in runs:
            if r["state"]:
                states.setdefault(r["name"], set()).add(r["state"]["name"])
        return states


@pytest.mark.timeout(600)  # five decisions, each waking a suspended run from the top: on busy cores this takes minutes
def test_the_bundled_drill_decided_in_the_browser_out_of_order_with_the_freeze_rejected(stack: Stack, page: Page) -> None:
    drill = Drill(stack)
    drill.waits_for("customer-notice", "failover-gateway", "freeze-payouts")  # three gates, one form
    first_vote = datetime.now(UTC)
    drill.decide(page, "customer-notice", "budi")
    drill.waits_for("failover-gateway", "freeze-payouts", "notify-bank-indonesia")
    drill.decide(page, "freeze-payouts", "citra", "reject")
    drill.waits_for("failover-gateway", "notify-bank-indonesia")
    drill.decide(page, "failover-gateway", "eko")
    drill.waits_for("notify-bank-indonesia")
    drill.decide(page, "notify-bank-indonesia", "budi")
    drill.waits_for("notify-bank-indonesia")  # quorum 2, from distinct roles
    drill.decide(page, "notify-bank-indonesia", "alice")

    final = wait(lambda: (s := drill.run()["state"])["type"] in ("COMPLETED", "FAILED", "CANCELLED", "CRASHED") and s,
                 180)
    assert (final["type"], final["name"]) == ("COMPLETED", "Rejected"), final
    assert "Rejected: freeze-payouts" in final["message"] and "Citra Lestari" in final["message"]
    states = wait(lambda: (s := drill.task_states()).get("release-payouts") and s, 60)
    assert "Rejected" in states["freeze-payouts"] and states["freeze-payouts"] <= {"Rejected", "Cached"}, states
    for step in ("draft-merchants", "merchant-notice", "reconciliation-checklist", "release-payouts"):
        assert "Skipped" in states[step] and states[step] <= {"Skipped", "Cached"}, (step, states)
    for step in ("failover-gateway", "customer-notice", "notify-bank-indonesia"):
        assert states[step] & {"Completed", "Recorded"}, (step, states)
    asked = {e["to"] for e in read_outbox(drill.home) if drill.id in e["message"] and "release-payouts" in e["message"]}
    assert asked == set(), "nobody is asked to release a freeze that never happened"
    # scored from when its steps really ended, not from the wake-up that brought them back cached
    [scored] = [d for d in DrillRecords(drill.runs.engine).find(RUNBOOK) if d["run_id"] == drill.id]
    paged_at = as_utc(scored["started_at"]) + timedelta(seconds=scored["figures"]["time_to_first_page_s"])
    assert paged_at < first_vote, (paged_at, first_vote, scored["figures"])

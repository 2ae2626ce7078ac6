"""An approval gate decided in the Prefect UI, in a real browser, on a real `siaga up` stack.

A runbook with a gated step is served by `siaga up`; a live run is started on behalf of eko (one
of the two ops people), waits at the gate without a process (suspended) and sends each eligible
person their approve and reject codes through the outbox (the bundled team has no other channel).
The named approver opens the link from the message, reads the evidence, picks the step and
himself, types his approve code and approves in Prefect's Resume form; the stack wakes the run,
which takes the answer to the ledger, and the gated step runs. The requester is never offered as
an approver, and a wrong code leaves the run waiting with the refusal shown on its next form.
"""

from __future__ import annotations

import re
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from playwright.sync_api import Page, expect
from siaga.flows.server import free_port
from siaga.integrations.outbox import read_outbox

from ..support.browser import browser_fixture, page_fixture  # noqa: F401  (the fixtures `browser`, `page`)
from ..support.gate_driver import ROSTER, code_for
from ..support.prefect_ui import open_resume_form, run_page
from ..support.stack import Stack, create_flow_run, running_stack

pytestmark = pytest.mark.slow
T = TypeVar("T")

RUNBOOK = "gate-ui"
RUNBOOK_YAML = textwrap.dedent("""\
    runbook: gate-ui
    title: Gated payout freeze
    severity: sev2
    roles: {finance: [citra, dewi], ops: [eko, fajar], commander: [alice]}
    chain_of_command: [ops, commander]
    inputs:
      scope: {type: string, default: payouts}
    steps:
      - id: before
        action: note
        with: {text: before the gate}
      - id: freeze
        action: outbox.send
        with: {to: finance-desk, message: "freeze {{ inputs.scope }}"}
        approval: {from: [ops], quorum: 1, timeout: 10m}
      - id: after
        action: note
        with: {text: after the gate}
    """)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, prefect_db: Path) -> Iterator[Stack]:
    """`siaga up` serving the gated runbook, with the team's roster next to it."""
    home = tmp_path_factory.mktemp("gate-ui-home")
    folder = home / "runbooks"
    folder.mkdir()
    (folder / "roster.yaml").write_text(ROSTER)
    (folder / f"{RUNBOOK}.yaml").write_text(RUNBOOK_YAML)
    with running_stack(home, folder, "--receiver-port", str(free_port()), prefect_db=prefect_db) as up:
        yield up


def wait(ready: Callable[[], T], timeout: float = 60) -> T:
    deadline = time.monotonic() + timeout
    while not (value := ready()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.3)
    return value


class GatedRun:
    """A live run of the gated runbook, requested by eko, paused at its gate."""

    def __init__(self, stack: Stack, scope: str) -> None:
        self.stack, self.home = stack, Path(stack.env["SIAGA_HOME"])
        self.http = httpx.Client(timeout=30)  # SQLite under a loaded machine answers slowly
        deployment = self.http.get(f"{stack.api}/deployments/name/{RUNBOOK}/siaga").json()
        created = create_flow_run(stack.api, deployment["id"], {"scope": scope, "mode": "live", "requested_by": "eko"},
                                  tags=["live"])
        self.id: str = created["id"]
        self.scope = scope
        self.pause_key = wait(self.paused_key, 120)

    def run(self) -> dict[str, Any]:
        return self.http.get(f"{self.stack.api}/flow_runs/{self.id}").json()

    def paused_key(self) -> str | None:
        state = self.run()["state"]
        assert state["type"] not in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"), state
        key = state["state_details"].get("pause_key") if state["type"] == "PAUSED" else None
        if key is None:
            return None
        # the form is saved just after the run pauses
        form = self.http.get(f"{self.stack.api}/flow_runs/{self.id}/input/paused-{key}-description")
        return key if form.status_code == 200 else None

    def message_to(self, person: str) -> str:
        """The message that brought `person` their code for this run's gate."""
        return wait(lambda: next((e["message"] for e in read_outbox(self.home)
                                  if e["to"] == f"person:{person}" and self.id in e["message"]), None))

    def link(self, person: str) -> str:
        found = re.search(r"Decide in the Prefect UI: (\S+)", self.message_to(person))
        assert found, self.message_to(person)
        return found.group(1)

    def frozen(self) -> list[str]:
        """What the gated step sent: its side effect."""
        return [e["message"] for e in read_outbox(self.home)
                if e["to"] == "finance-desk" and e["message"] == f"freeze {self.scope}"]

    def task_states(self) -> dict[str, str]:
        runs = self.http.post(f"{self.stack.api}/task_runs/filter",
                          json={"flow_runs": {"id": {"any_": [self.id]}}}).json()
        return {r["name"]: r["state"]["type"] for r in runs if r["state"]}

    def close(self) -> None:
        """Cancel the run if it still waits at its gate (so `siaga up` stops promptly)."""
        if self.run()["state"]["type"] == "PAUSED":
            self.http.post(f"{self.stack.api}/flow_runs/{self.id}/set_state",
                           json={"state": {"type": "CANCELLED", "message": "test over"}, "force": True})
        self.http.close()


@pytest.fixture
def gated_run(stack: Stack, request: pytest.FixtureRequest) -> Iterator[GatedRun]:
    run = GatedRun(stack, f"{uuid.uuid4().hex[:8]}-payouts")
    try:
        yield run
    finally:
        run.close()


def test_the_named_approver_approves_in_the_browser_and_the_gated_step_runs(gated_run: GatedRun, page: Page) -> None:
    code = code_for(gated_run.home, "fajar", gated_run.id, "freeze")
    form = open_resume_form(page, gated_run.link("fajar"))  # the v1 UI on Prefect 3.8
    # the evidence: the step, its exact parameters, who may decide now
    expect(form.dialog.get_by_text("Decisions needed: Gated payout freeze")).to_be_visible()
    expect(form.dialog.get_by_text(f"freeze {gated_run.scope}")).to_be_visible()
    expect(form.dialog.get_by_text("Fajar Nugroho (fajar)")).to_be_visible()
    assert not gated_run.frozen(), "the gated step ran before anyone approved"

    assert form.choose("Step", "freeze") == ["freeze"]
    assert form.choose("Approver", "fajar") == ["fajar"]  # not eko, who asked for the run
    form.choose("Decision", "approve")
    form.fill("Code", code)
    form.fill("Comment", "ledger checked")
    answer = form.submit()

    assert (answer.http_status, answer.status) == (201, "ACCEPT"), answer.body
    final = wait(lambda: (state := gated_run.run()["state"])["type"] in ("COMPLETED", "FAILED", "CANCELLED", "CRASHED")
                 and state, 60)
    assert final["type"] == "COMPLETED", final
    assert gated_run.frozen() == [f"freeze {gated_run.scope}"]
    states = wait(lambda: (s := gated_run.task_states()).get("after") == "COMPLETED" and s, 30)
    assert states["freeze"] == "COMPLETED"


def test_a_wrong_code_is_refused_and_the_run_stays_paused(gated_run: GatedRun, page: Page) -> None:
    code = code_for(gated_run.home, "fajar", gated_run.id, "freeze")
    wrong = f"{(int(code) + 1) % 10**8:08d}"
    link = gated_run.link("fajar")
    form = open_resume_form(page, run_page(link.split("/runs/")[0], gated_run.id))  # the default v2 UI
    form.choose("Step", "freeze")
    assert form.choose("Approver", "fajar") == ["fajar"]
    form.choose("Decision", "approve")
    form.fill("Code", code[:7])
    refused = form.submit()
    assert (refused.http_status, refused.status) == (200, "REJECT"), refused.body  # not 8 digits: the schema says no
    expect(page.get_by_text("Validation failed for field 'code'")).to_be_visible()
    assert gated_run.run()["state"]["state_details"]["pause_key"] == gated_run.pause_key

    form.fill("Code", wrong)
    answer = form.submit()
    assert (answer.http_status, answer.status) == (201, "ACCEPT"), answer.body  # well formed: the gate checks it
    wait(lambda: (key := gated_run.paused_key()) and key != gated_run.pause_key, 30)  # paused again, new form

    form = open_resume_form(page, link)  # the outcome of his answer, where he gave it
    expect(form.dialog.get_by_text(re.compile(r"Fajar Nugroho's answer on freeze was refused: wrong code \(1 of 5\)"))).to_be_visible()
    time.sleep(2)
    assert gated_run.run()["state"]["type"] == "PAUSED"
    assert not gated_run.frozen()
    assert gated_run.task_states().get("freeze") != "COMPLETED"

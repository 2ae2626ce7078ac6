"""Compiled runbooks run on a real Prefect server: task runs per step, concurrency, retries,
timeouts, `when:` skipping, drills, undo in reverse after a failure, and the run summary."""

from __future__ import annotations

import asyncio
import json
import textwrap
import time
from typing import Any

import pytest
from prefect.client.schemas.objects import TaskRun
from siaga.flows import RunbookFailed, compile_runbook
from siaga.integrations import default_registry
from siaga.integrations.outbox import read_outbox

from siaga.runbook import parse_runbook

from ..support.prefect_runs import settled_task_runs
from ..support.webhook_server import webhook_server

pytestmark = pytest.mark.usefixtures("prefect_api")


def run(text: str, **parameters: Any) -> tuple[Any, list[TaskRun], Any]:
    """Compile and run a runbook; return (final state, its task runs by start time, result)."""
    runbook = parse_runbook(textwrap.dedent(text), default_registry(), file="test.yaml")
    flow = compile_runbook(runbook)

    async def go() -> tuple[Any, list[TaskRun], Any]:
        state = await flow(**parameters, return_state=True)
        result = await state.aresult(raise_on_failure=False)
        runs = await settled_task_runs(state.state_details.flow_run_id)
        return state, sorted(runs, key=lambda r: r.start_time or r.expected_start_time), result

    return asyncio.run(go())


def by_name(task_runs: list[TaskRun]) -> dict[str, TaskRun]:
    return {r.name: r for r in task_runs}


HEAD = """\
runbook: test-{name}
title: Test {name}
severity: sev3
"""


def test_each_step_is_a_task_run_named_after_it() -> None:
    state, runs, result = run(HEAD.format(name="names") + """
steps:
  - id: first-note
    action: note
    with: {text: one}
  - id: second-note
    action: note
    with: {text: "{{ steps['first-note'].output.text }} two"}
""")
    assert state.is_completed()
    assert [r.name for r in runs] == ["first-note", "second-note"]
    assert all(r.state.is_completed() for r in runs)
    assert [s["outcome"] for s in result["steps"]] == ["completed", "completed"]


def test_independent_steps_run_concurrently() -> None:
    started = time.monotonic()
    state, runs, _ = run(HEAD.format(name="concurrent") + """
steps:
  - id: left
    action: wait
    after: []
    with: {duration: 2s}
  - id: right
    action: wait
    after: []
    with: {duration: 2s}
  - id: join
    action: note
    after: [left, right]
    with: {text: joined}
""")
    elapsed = time.monotonic() - started
    assert state.is_completed()
    named = by_name(runs)
    left, right, join = named["left"], named["right"], named["join"]
    assert left.start_time < right.end_time and right.start_time < left.end_time, "left and right overlap"
    assert join.start_time >= max(left.end_time, right.end_time)
    assert elapsed < 2 * 2 + 3, f"two 2 s waits in parallel took {elapsed:.1f} s"


def test_steps_follow_file_order_without_after() -> None:
    state, runs, _ = run(HEAD.format(name="order") + """
steps:
  - {id: one, action: wait, with: {duration: 1s}}
  - {id: two, action: wait, with: {duration: 1s}}
""")
    named = by_name(runs)
    assert named["two"].start_time >= named["one"].end_time


def test_retries_recover_from_a_server_error() -> None:
    with webhook_server() as hooks:
        hooks.answer("/flaky", (503, {"error": "unavailable"}), (429, {"error": "slow down"}))
        state, runs, result = run(HEAD.format(name="retries") + f"""
steps:
  - id: call
    action: http.request
    retries: 2
    retry_delay: 0s
    with: {{url: "{hooks.url}/flaky", json: {{x: 1}}}}
""")
        assert state.is_completed(), state.message
        assert len(hooks.calls("POST", "/flaky")) == 3
        assert runs[0].run_count == 3
        assert result["steps"][0]["outcome"] == "completed"


def test_a_call_whose_outcome_is_unknown_is_never_blindly_retried() -> None:
    with webhook_server() as hooks:
        hooks.answer("/freeze", (500, {"error": "internal error after commit?"}))
        state, runs, result = run(HEAD.format(name="unknown") + f"""
steps:
  - id: freeze
    action: http.request
    retries: 3
    retry_delay: 0s
    with: {{url: "{hooks.url}/freeze"}}
""")
        assert state.is_failed()
        assert len(hooks.calls("POST", "/freeze")) == 1, "the 500 may have frozen: no second call"
        assert runs[0].run_count == 2
        assert "may already have acted" in str(result)
        assert "siaga ledger --resolve" in str(result)


def test_a_client_error_is_not_retried_and_says_why() -> None:
    with webhook_server() as hooks:
        hooks.answer("/refuse", (400, {"error": "merchant list malformed"}))
        state, runs, result = run(HEAD.format(name="noretry") + f"""
steps:
  - id: call
    action: http.request
    retries: 3
    retry_delay: 0s
    with: {{url: "{hooks.url}/refuse"}}
""")
        assert state.is_failed()
        assert len(hooks.calls("POST", "/refuse")) == 1
        assert isinstance(result, RunbookFailed)
        assert "answered 400" in str(result) and "merchant list malformed" in str(result)
        assert "Next:" in str(result)


def test_a_timeout_really_stops_the_step() -> None:
    started = time.monotonic()
    state, runs, result = run(HEAD.format(name="timeout") + """
steps:
  - id: slow
    action: wait
    timeout: 1s
    with: {duration: 60s}
""")
    assert state.is_failed()
    assert time.monotonic() - started < 20
    assert runs[0].state.name == "TimedOut"
    assert "timed out" in str(result)


def test_when_false_skips_and_later_steps_still_run() -> None:
    state, runs, result = run(HEAD.format(name="when") + """
inputs:
  region: {type: string, default: ap-southeast-1, enum: [ap-southeast-1, ap-southeast-3]}
steps:
  - id: only-jakarta
    action: note
    when: "{{ inputs.region == 'ap-southeast-3' }}"
    with: {text: jakarta}
  - id: always
    action: note
    with: {text: "region {{ inputs.region }}"}
""")
    assert state.is_completed()
    named = by_name(runs)
    assert named["only-jakarta"].state.name == "Skipped"
    assert named["always"].state.name == "Completed"
    assert [s["outcome"] for s in result["steps"]] == ["skipped", "completed"]


def test_failure_undoes_completed_steps_in_reverse_and_stops_the_rest() -> None:
    with webhook_server() as hooks:
        hooks.answer("/break", (409, {"error": "conflict"}))
        state, runs, result = run(HEAD.format(name="undo") + f"""
steps:
  - id: freeze-payouts
    action: http.request
    with: {{url: "{hooks.url}/freeze", json: {{scope: payouts}}}}
    undo:
      action: http.request
      with: {{url: "{hooks.url}/unfreeze", json: {{freeze: "{{{{ step.output.body.ok }}}}"}}}}
  - id: switch-dns
    action: http.request
    with: {{url: "{hooks.url}/dns", method: PUT}}
    undo: http.request
  - id: tell-team
    action: outbox.send
    with: {{message: "frozen and switched"}}
  - id: fail-over
    action: http.request
    with: {{url: "{hooks.url}/break"}}
  - id: never
    action: note
    with: {{text: unreachable}}
""")
        assert state.is_failed()
        order = [(r.method, r.path) for r in hooks.requests]
        assert order == [
            ("POST", "/freeze"),
            ("PUT", "/dns"),
            ("POST", "/break"),
            ("PUT", "/dns"),  # the undo of switch-dns reuses the step's own parameters
            ("POST", "/unfreeze"),
        ]
        assert json.loads(hooks.calls("POST", "/unfreeze")[0].body) == {"freeze": True}
        names = [r.name for r in runs]
        assert names.index("undo-switch-dns") < names.index("undo-freeze-payouts")
        assert "never" not in names
        summary = result.summary
        outcomes = {s["step"]: (s["outcome"], s["undo_outcome"]) for s in summary["steps"]}
        assert outcomes == {
            "freeze-payouts": ("completed", "completed"),
            "switch-dns": ("completed", "completed"),
            "tell-team": ("completed", ""),
            "fail-over": ("failed", ""),
            "never": ("not run", ""),
        }
        text = str(result)
        assert "Failed: fail-over" in text
        assert "Undo of switch-dns (http.request): completed" in text
        assert "did not run" in text and "never" in text


def test_continue_on_error_lets_the_run_go_on() -> None:
    with webhook_server() as hooks:
        hooks.answer("/optional", (404, {"error": "no such page"}))
        state, runs, result = run(HEAD.format(name="continue") + f"""
steps:
  - id: optional
    action: http.request
    continue_on_error: true
    with: {{url: "{hooks.url}/optional"}}
  - id: after
    action: note
    with: {{text: "went on after {{{{ steps.optional.status }}}}"}}
""")
        assert state.is_completed()
        assert [s["outcome"] for s in result["steps"]] == ["failed, continued", "completed"]
        assert any("`optional` failed" in item for item in result["next"]), result["next"]


def test_a_template_error_fails_that_step_with_its_location() -> None:
    state, runs, result = run(HEAD.format(name="template") + """
steps:
  - id: first
    action: note
    with: {text: one}
  - id: second
    action: note
    with: {text: "{{ steps.first.output.nothing.here }}"}
""")
    assert state.is_failed()
    assert by_name(runs)["second"].state.is_failed()
    assert "template error in with" in str(result)


def test_a_drill_records_risky_calls_and_marks_messages(siaga_home) -> None:
    with webhook_server() as hooks:
        state, runs, result = run(HEAD.format(name="drill") + f"""
steps:
  - id: freeze
    action: http.request
    with: {{url: "{hooks.url}/freeze"}}
  - id: tell
    action: outbox.send
    with: {{to: customers, subject: "Payouts paused", message: "Payouts are paused"}}
""", mode="drill")
        assert state.is_completed()
        assert hooks.requests == [], "a drill must not call the webhook"
        named = by_name(runs)
        assert named["freeze"].state.name == "Recorded"
        run_id = str(state.state_details.flow_run_id)
        sent = [m for m in read_outbox(siaga_home) if m["run_id"] == run_id]
        assert [(m["subject"], m["message"]) for m in sent] == [("[DRILL] Payouts paused", "[DRILL] Payouts are paused")]
        assert sent[0]["mode"] == "drill"


def test_inputs_are_typed_flow_parameters() -> None:
    runbook = parse_runbook(textwrap.dedent(HEAD.format(name="params") + """
inputs:
  region: {type: string}
  merchants: {type: integer, default: 10}
  scope: {type: string, default: payouts, enum: [all, payouts]}
steps:
  - {id: n, action: note, with: {text: "{{ inputs.merchants + 1 }}"}}
"""), default_registry())
    flow = compile_runbook(runbook)
    schema = flow.parameters.model_dump()
    props = schema["properties"]
    assert schema["required"] == ["region"]
    assert props["merchants"]["type"] == "integer" and props["merchants"]["default"] == 10
    assert props["scope"]["enum"] == ["all", "payouts"]
    assert props["mode"]["enum"] == ["live", "drill"]
    state = asyncio.run(flow(region="x", merchants="41", return_state=True))
    assert state.is_completed()


def test_a_drill_rehearses_with_the_runbooks_sample_alert() -> None:
    text = HEAD.format(name="sample-alert") + """
drill:
  alert: {labels: {region: ap-southeast-3, alertname: GatewayErrors}}
steps:
  - id: page
    action: outbox.send
    with: {message: "{{ alert.labels.alertname }} in {{ alert.labels.region }}"}
"""
    state, _, result = run(text, mode="drill")
    assert state.is_completed()
    state, _, result = run(text)  # a live run without an alert has none to read
    assert state.is_failed()
    assert "template error in with" in str(result)

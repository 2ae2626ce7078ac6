"""Every kind of runbook error, one fixture each: the exact code, path, line, column and hint.

Fixtures live in tests/fixtures/runbooks/; each is read with its path relative to the repository,
which is the `file` its diagnostics must name.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import NamedTuple

import pytest

from siaga.integrations import default_registry
from siaga.runbook import Runbook, RunbookError, load_runbook, parse_runbook, plan_runbook

REPO = Path(__file__).resolve().parent.parent.parent
INVALID = Path("tests/fixtures/runbooks/invalid")
VALID = Path("tests/fixtures/runbooks/valid")
REGISTRY = default_registry()


class Expected(NamedTuple):
    code: str
    path: str
    line: int
    column: int
    hint: str | None = None


ROLE_HINT = "declare it under `roles:`"
INPUT_HINT = "declare it under `inputs:`"
CRON_HINT = "five fields: minute hour day-of-month month day-of-week, e.g. 0 3 * * MON"
TZ_HINT = "for example UTC, Asia/Jakarta or Europe/Berlin"

CASES: dict[str, list[Expected]] = {
    # YAML itself
    "yaml_syntax_indentation": [Expected("yaml-syntax", "(document)", 7, 10)],
    "yaml_syntax_unclosed_bracket": [Expected("yaml-syntax", "(document)", 8, 9)],
    "duplicate_yaml_key": [Expected("duplicate-key", "title", 4, 1)],
    "not_a_mapping": [Expected("not-a-mapping", "(document)", 1, 1)],
    "merge_key": [  # keys merged in with `<<: *first` are placed where the anchor writes them
        Expected("missing-parameter", "steps[1].with.duration", 8, 5),
        Expected("unknown-parameter", "steps[1].with.text", 9, 7, "it takes: duration, reason"),
    ],
    # shape: the models
    "unknown_key_aftr": [Expected("unknown-key", "steps[1].aftr", 11, 5, "did you mean `after`?")],
    "missing_steps": [Expected("missing-key", "steps", 1, 1)],
    "missing_action": [Expected("missing-key", "steps[0].action", 5, 5)],
    "bad_severity": [Expected("invalid", "severity", 3, 11)],
    "bad_duration": [Expected("invalid", "steps[0].timeout", 7, 14)],
    "duration_too_long": [Expected("bad-parameter", "steps[0].with.duration", 8, 17)],
    "on_timeout_approve": [Expected("invalid", "steps[0].approval.on_timeout", 14, 19)],
    "reserved_input": [Expected("invalid", "inputs.mode", 7, 3)],
    "input_default_type": [Expected("invalid", "inputs.replicas.default", 7, 14)],
    "input_default_enum": [Expected("invalid", "inputs.region.default", 7, 14)],
    "invalid_keys": [
        Expected("invalid", "roles.Incident Commander", 5, 3),
        Expected("invalid", "1.5", 6, 1),
    ],
    "threshold_missing_within": [  # the placeholder standing in for `within` is never reported
        Expected("missing-key", "triggers[0].threshold.within", 6, 5),
        Expected("unknown-input", "steps[0].with.text", 11, 13, INPUT_HINT),
    ],
    # the step graph
    "on_resolve_errors": [  # the same rules as steps, each list its own graph, ids unique across both
        Expected("other-phase", "steps[0].with.text", 10, 13, "read only steps of `steps:` here"),
        Expected("duplicate-step", "on_resolve[0].id", 15, 9,
                 "give every step its own id: ids are unique across steps and on_resolve"),
        Expected("other-phase", "on_resolve[1].after[0]", 20, 13, "`after:` names steps of on_resolve only"),
        Expected("other-phase", "on_resolve[1].with.text", 22, 13,
                 "read `incident` or `alert`, or let the action find its own (pagerduty.resolve "
                 "`trigger_step:`, statuspage.resolve finds the incident's status incident)"),
        Expected("unknown-action", "on_resolve[2].action", 24, 13, "did you mean `note`?"),
        Expected("unknown-role", "on_resolve[2].approval.from[0]", 25, 23, "did you mean `ops`?"),
        Expected("unknown-step", "on_resolve[3].with.text", 30, 13, "did you mean `tell`?"),
    ],
    "duplicate_step": [
        Expected("duplicate-step", "steps[1].id", 9, 9, "give every step its own id")
    ],
    "unknown_step_after": [
        Expected("unknown-step", "steps[1].after[0]", 11, 13, "did you mean `freeze`?")
    ],
    "self_dependency": [Expected("self-dependency", "steps[0].after[0]", 7, 13)],
    "cycle": [Expected("cycle", "steps[0].after", 7, 12, "remove one of these `after:` entries")],
    # actions and their parameters
    "unknown_action": [
        Expected("unknown-action", "steps[0].action", 6, 13, "did you mean `outbox.send`?")
    ],
    "unknown_parameter": [
        Expected("unknown-parameter", "steps[0].with.subjet", 9, 7, "did you mean `subject`?")
    ],
    "missing_parameter": [Expected("missing-parameter", "steps[0].with.message", 7, 5)],
    "bad_parameter_type": [Expected("bad-parameter", "steps[0].with.expect", 9, 15)],
    "undo_unknown_action": [
        Expected("unknown-action", "steps[0].undo", 9, 11, "did you mean `http.request`?")
    ],
    "undo_unknown_action_mapping": [
        Expected("unknown-action", "steps[0].undo.action", 12, 15, "did you mean `http.request`?")
    ],
    # roles and approvals
    "unknown_role_approval": [  # and no quorum-too-high: the unknown role's people are unknown
        Expected(
            "unknown-role",
            "steps[0].approval.from[0]",
            12,
            14,
            "did you mean `incident-commander`?",
        )
    ],
    "unknown_role_chain": [Expected("unknown-role", "chain_of_command[1]", 6, 40, ROLE_HINT)],
    "quorum_too_high": [Expected("quorum-too-high", "steps[0].approval.quorum", 13, 15)],
    "on_timeout_approve_destructive": [
        Expected(
            "timeout-approves-destructive",
            "steps[0].approval.on_timeout",
            14,
            19,
            "use on_timeout: reject or fail, or add `timeout_approves_destructive: true` to this "
            "approval if running it unapproved is really the safe choice",
        )
    ],
    # templates
    "template_syntax": [Expected("template-syntax", "steps[0].with.text", 8, 13)],
    "template_too_deep": [Expected("template-syntax", "steps[0].when", 7, 11)],
    "unknown_input_template": [
        Expected("unknown-input", "steps[0].with.text", 11, 13, "did you mean `region`?")
    ],
    "unknown_name_root": [
        Expected("unknown-name", "steps[0].with.text", 8, 13, "did you mean `inputs`?")
    ],
    "not_upstream": [
        Expected(
            "not-upstream", "steps[1].with.text", 13, 13, "add `check` to this step's `after:`"
        )
    ],
    # triggers
    "trigger_unknown_input": [
        Expected("unknown-input", "triggers[0].inputs.regoin", 10, 7, "did you mean `region`?")
    ],
    "trigger_missing_input": [
        Expected(
            "missing-input",
            "triggers[0]",
            8,
            5,
            "map it under the trigger's `inputs:` or give the input a default",
        )
    ],
    # drills
    "bad_cron": [Expected("bad-cron", "drill.schedule", 5, 13, CRON_HINT)],
    "bad_timezone": [Expected("bad-timezone", "drill.timezone", 6, 13, TZ_HINT)],
    "timezone_folder": [Expected("bad-timezone", "drill.timezone", 5, 13, TZ_HINT)],
    "drill_substitute_no_match": [
        Expected(
            "unknown-action", "drill.substitute.http.requst", 6, 5, "did you mean `http.request`?"
        )
    ],
    # crisis communications
    "comms_ungated_publish": [
        Expected(
            "ungated-statement",
            "steps[1].action",
            12,
            13,
            "add `approval: {from: [liaison, commander]}`; for a message that needs no approval, "
            "send it with slack.post, email.send or outbox.send instead",
        )
    ],
    "ungated_post": [
        Expected(
            "ungated-post",
            "steps[0].action",
            9,
            13,
            "add `approval: {from: [liaison, commander]}` (or publish a drafted statement with comms.publish, "
            "which has its own gate); in a drill nothing is posted either way",
        ),
        Expected(
            "ungated-post",
            "steps[1].action",
            12,
            13,
            "add `approval: {from: [liaison, commander]}` (or publish a drafted statement with comms.publish, "
            "which has its own gate); in a drill nothing is posted either way",
        ),
        Expected("no-voices", "steps[1].action", 12, 13,
                 "add `voices: {respond_within: 24h}` (see README, Answering every voice)"),
        Expected("bad-parameter", "steps[1].with.replies", 13, 21),
    ],
    "comms_bad_language": [Expected("invalid", "comms.languages[1]", 5, 19)],
    "comms_bad_deadline": [
        Expected("invalid", "comms.deadlines.regulators", 6, 5),
        Expected("invalid", "comms.deadlines.customers", 7, 16),
    ],
    "comms_bad_timezone": [
        Expected("bad-timezone", "comms.timezone", 6, 13, "for example UTC or Asia/Jakarta")
    ],
    "comms_unknown_audience": [Expected("bad-parameter", "steps[0].with.audience", 8, 17)],
    # several at once: shape and semantic errors from one parse, in file order
    "many_errors": [
        Expected("invalid", "severity", 3, 11),
        Expected("invalid", "steps[0].timeout", 11, 14),
        Expected("unknown-action", "steps[1].action", 13, 13, "did you mean `outbox.send`?"),
        Expected("unknown-key", "steps[1].aftr", 14, 5, "did you mean `after`?"),
        Expected("unknown-input", "steps[1].with.message", 16, 16, INPUT_HINT),
        Expected("unknown-step", "steps[2].after[0]", 19, 13, "did you mean `notify`?"),
    ],
}

MESSAGES: dict[str, list[str]] = {
    "yaml_syntax_indentation": ["mapping values are not allowed here"],
    "yaml_syntax_unclosed_bracket": ["while parsing a flow sequence", "expected ',' or ']'"],
    "duplicate_yaml_key": ["key `title` appears twice in this mapping"],
    "not_a_mapping": ["a runbook is a mapping"],
    "unknown_key_aftr": ["unknown key `aftr`"],
    "missing_steps": ["`steps` is required"],
    "missing_action": ["`action` is required"],
    "bad_severity": ["'sev1', 'sev2', 'sev3' or 'sev4'"],
    "bad_duration": ["expected a duration such as 30s", "'5x'"],
    "duration_too_long": ["too long a duration"],
    "on_timeout_approve": ["on_timeout: approve needs safe_by_default: true"],
    "reserved_input": ["the input name `mode` is reserved"],
    "input_default_type": ["expected an integer, got 'many'"],
    "input_default_enum": ["'asia' is not one of: eu, us"],
    "duplicate_step": ["step id `first` is already used by steps[0]"],
    "self_dependency": ["step `first` cannot run after itself"],
    "cycle": ["steps wait for each other in a cycle: a -> b -> a"],
    "bad_parameter_type": ["valid list"],
    "undo_unknown_action": ["no action is named `http.reqest`"],
    "quorum_too_high": ["quorum 3 needs more people than the 2 in roles incident-commander"],
    "on_timeout_approve_destructive": ["`payments.freeze` is destructive: on_timeout: approve"],
    "template_syntax": ["template does not parse"],
    "template_too_deep": ["nested too deeply"],
    "unknown_name_root": ["templates here cannot read `input`"],
    "not_upstream": ["step `check` has not finished"],
    "trigger_missing_input": ["required input region"],
    "bad_cron": ["`every monday` is not a cron schedule"],
    "bad_timezone": ["`Asia/Jakrta` is not an IANA time zone"],
    "drill_substitute_no_match": ["`http.requst` matches no action"],
    "comms_ungated_publish": ["this `comms.publish` step has no `approval:`"],
    "comms_bad_language": ["expected a language code such as id or en, got 'english'"],
    "comms_bad_timezone": ["`Asia/Jakrta` is not an IANA time zone"],
    "comms_unknown_audience": ["'customers', 'employees', 'media', 'regulator' or 'partners'"],
}


def test_the_clock_approves_a_destructive_step_only_when_the_runbook_says_so() -> None:
    """`timeout_approves_destructive: true` lets a destructive step be approved on timeout; the
    same approval on a step that is not destructive never needed it."""
    text = (REPO / fixture_path("on_timeout_approve_destructive")).read_text(encoding="utf-8")
    said = text + "      timeout_approves_destructive: true\n"
    freeze = parse_runbook(said, REGISTRY, file="said.yaml").step("freeze-payouts")
    assert freeze.approval is not None and freeze.approval.timeout_approves_destructive is True
    assert freeze.approval.on_timeout == "approve"
    unfreeze = text.replace("payments.freeze", "payments.unfreeze")  # a change, not destructive
    assert parse_runbook(unfreeze, REGISTRY, file="unfreeze.yaml").steps[0].approval is not None


def fixture_path(name: str) -> Path:
    return INVALID / f"{name}.yaml"


def diagnostics_of(relative: Path) -> tuple:
    text = (REPO / relative).read_text(encoding="utf-8")
    with pytest.raises(RunbookError) as caught:
        parse_runbook(text, REGISTRY, file=str(relative))
    return caught.value.diagnostics


def test_every_invalid_fixture_has_expectations() -> None:
    on_disk = {path.stem for path in (REPO / INVALID).glob("*.yaml")}
    assert on_disk == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_invalid_fixture(name: str) -> None:
    relative = fixture_path(name)
    diagnostics = diagnostics_of(relative)
    found = [Expected(d.code, d.path, d.line, d.column, d.hint) for d in diagnostics]
    assert found == CASES[name]
    assert {d.file for d in diagnostics} == {str(relative)}


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_invalid_fixture_message(name: str) -> None:
    (diagnostic,) = diagnostics_of(fixture_path(name))
    for part in MESSAGES[name]:
        assert part in diagnostic.message


def test_several_errors_come_together_in_file_order() -> None:
    """One parse reports shape errors (wrong values, unknown keys) and semantic ones (unknown
    action and step, template input) together: the loader sets the wrong fields aside."""
    diagnostics = diagnostics_of(fixture_path("many_errors"))
    assert len(diagnostics) == 6
    assert [d.line for d in diagnostics] == sorted(d.line for d in diagnostics)
    codes = {d.code for d in diagnostics}
    assert {"invalid", "unknown-key"} <= codes  # the models' shape
    assert {"unknown-action", "unknown-input", "unknown-step"} <= codes  # checks across fields


def test_runbook_error_text_lists_every_diagnostic() -> None:
    relative = fixture_path("many_errors")
    with pytest.raises(RunbookError) as caught:
        parse_runbook((REPO / relative).read_text(encoding="utf-8"), REGISTRY, file=str(relative))
    error = caught.value
    assert isinstance(error, ValueError)
    lines = str(error).splitlines()
    assert len(lines) == len(error.diagnostics)
    assert lines[3] == (
        f"{relative}:14:5: steps[1].aftr: unknown key `aftr` (did you mean `after`?)"
    )
    assert error.diagnostics[0].as_dict() == {
        "code": "invalid",
        "message": "Input should be 'sev1', 'sev2', 'sev3' or 'sev4'",
        "path": "severity",
        "file": str(relative),
        "line": 3,
        "column": 11,
        "hint": None,
        "severity": "error",
    }


def test_load_runbook_names_the_file_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    relative = fixture_path("unknown_action")
    with pytest.raises(RunbookError) as caught:
        load_runbook(relative, REGISTRY)
    (diagnostic,) = caught.value.diagnostics
    assert (diagnostic.file, diagnostic.line, diagnostic.column) == (str(relative), 6, 13)


def test_load_runbook_reports_an_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(RunbookError) as caught:
        load_runbook(missing, REGISTRY)
    (diagnostic,) = caught.value.diagnostics
    assert (diagnostic.code, diagnostic.file, diagnostic.line) == ("unreadable", str(missing), 1)


# --- a valid runbook and its plan -------------------------------------------------------------


@pytest.fixture(scope="module")
def runbook() -> Runbook:
    relative = VALID / "payments_outage.yaml"
    text = (REPO / relative).read_text(encoding="utf-8")
    return parse_runbook(text, REGISTRY, file=str(relative))


def test_valid_runbook_parses(runbook: Runbook) -> None:
    assert runbook.id == "payments-outage"
    assert [step.id for step in runbook.steps] == [
        "announce", "freeze", "verify", "status-page", "settle", "report"
    ]
    freeze = runbook.step("freeze")
    assert freeze.timeout == timedelta(minutes=1)
    assert freeze.retry_delay == timedelta(seconds=5)
    assert freeze.approval is not None and freeze.approval.from_ == ["incident-commander"]
    assert freeze.approval.quorum == 2 and freeze.approval.timeout == timedelta(minutes=10)
    assert freeze.undo is not None and freeze.undo.action == "http.request"
    assert runbook.inputs["region"].required is False
    assert runbook.inputs["reason"].required is True
    assert runbook.triggers[0].threshold is not None
    assert runbook.triggers[0].threshold.within == timedelta(minutes=5)
    assert runbook.impact.max_tolerable_downtime == timedelta(hours=1)


def test_plan_needs(runbook: Runbook) -> None:
    plan = plan_runbook(runbook)
    assert plan.name == "payments-outage"
    assert plan.needs == {
        "announce": (),  # the first step waits for nothing
        "freeze": ("announce",),  # no `after:`: the step before it in the file
        "verify": ("status-page",),  # `after:` may name a step further down
        "status-page": (),  # `after: []` runs at once
        "settle": ("freeze", "verify"),
        "report": ("settle",),
    }


def test_plan_order_is_topological_keeping_file_order_where_free(runbook: Runbook) -> None:
    plan = plan_runbook(runbook)
    assert plan.order == ("announce", "freeze", "status-page", "verify", "settle", "report")
    position = {step: index for index, step in enumerate(plan.order)}
    for step, needs in plan.needs.items():
        assert all(position[need] < position[step] for need in needs)


def test_on_resolve_is_a_phase_of_its_own() -> None:
    """`on_resolve` plans as its own graph: its first step waits for nothing of `steps`, and its
    templates may read the outputs of on_resolve steps before them."""
    text = """
runbook: with-resolve
title: Steps to run once the incident resolves
severity: sev2
impact: {priority: P2}
steps:
  - {id: page, action: note, with: {text: paged}}
  - {id: freeze, action: note, with: {text: frozen}}
on_resolve:
  - {id: unpage, action: note, with: {text: "resolved {{ incident.id }}"}}
  - {id: all-clear, action: note, with: {text: "{{ steps.unpage.output.text }}"}}
  - {id: audit, action: note, after: [], with: {text: audit}}
"""
    runbook = parse_runbook(text, REGISTRY, file="with-resolve.yaml")
    assert runbook.impact.priority == "P2"
    respond, resolve = plan_runbook(runbook), plan_runbook(runbook, "resolve")
    assert [s.id for s in respond.steps] == ["page", "freeze"] and respond.phase == "respond"
    assert resolve.needs == {"unpage": (), "all-clear": ("unpage",), "audit": ()}
    assert resolve.order == ("unpage", "all-clear", "audit") and resolve.phase == "resolve"
    assert runbook.step("all-clear").action == "note" and resolve.step("audit").after == []
    with pytest.raises(StopIteration):
        respond.step("unpage")

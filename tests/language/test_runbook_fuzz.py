"""Property tests: whatever text it is given, `parse_runbook` returns a Runbook or raises a
RunbookError whose diagnostics are placed in the file; it never raises anything else."""

from __future__ import annotations

import copy
import io
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML
from siaga.integrations import default_registry

from siaga.runbook import Runbook, RunbookError, parse_runbook, plan_runbook

REGISTRY = default_registry()
FILE = "fuzz.yaml"
VALID = Path(__file__).parent.parent / "fixtures" / "runbooks" / "valid" / "payments_outage.yaml"

FUZZ = settings(
    # SIAGA_FUZZ_EXAMPLES=5000 digs deeper than the default run.
    max_examples=int(os.environ.get("SIAGA_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def check_outcome(text: str) -> None:
    """The property every input must satisfy."""
    try:
        runbook = parse_runbook(text, REGISTRY, file=FILE)
    except RunbookError as exc:
        assert exc.diagnostics, "a RunbookError must carry at least one diagnostic"
        lines = len(text.splitlines())
        for diagnostic in exc.diagnostics:
            assert diagnostic.file == FILE
            assert isinstance(diagnostic.code, str) and diagnostic.code
            assert diagnostic.message
            assert diagnostic.line >= 1 and diagnostic.column >= 1, diagnostic
            assert diagnostic.line <= lines + 1, diagnostic
            str(diagnostic)  # formatting a diagnostic never fails either
        lines_in_order = [(d.line, d.column) for d in exc.diagnostics]
        assert lines_in_order == sorted(lines_in_order)
    else:
        assert isinstance(runbook, Runbook)
        plan = plan_runbook(runbook)  # a valid runbook always plans: no cycle got through
        assert sorted(plan.order) == sorted(step.id for step in runbook.steps)


# --- (a) random text and YAML-ish documents ----------------------------------------------------

YAML_PIECES = [
    "runbook: r\n", "title: T\n", "severity: sev1\n", "steps:\n", "  - id: a\n",
    "    action: note\n", "    with: {text: x}\n", "    after: [a]\n", "roles:\n", "inputs:\n",
    "drill:\n", "triggers:\n", "  ", "    ", "- ", ": ", ":", "\n", "{", "}", "[", "]", ",",
    "'", '"', "&a ", "*a", "<<: *a\n", "!!python/object:os.system ", "!!str ", "!!binary ",
    "!!timestamp ", "!foo ", "%YAML 1.2\n", "---\n", "...\n", "? ", "|\n", ">-\n", "# c\n",
    "{{ ", " }}", "{% if x %}", "{% endfor %}", "inputs.", "steps['a'].", "\t", "\ufeff",
    "\x00", "\\", "@", "`", "2026-01-01", "0x1F", ".inf", "~", "null", "yes", "1e999",
]

yamlish = st.lists(
    st.one_of(st.sampled_from(YAML_PIECES), st.text(max_size=5)), max_size=40
).map("".join)


@FUZZ
@given(st.text())
def test_random_text(text: str) -> None:
    check_outcome(text)


@FUZZ
@given(yamlish)
def test_yamlish_text(text: str) -> None:
    check_outcome(text)


tricky = st.one_of(
    st.from_regex(r"\A[0-9]{1,25} ?[smhdx]\Z"),  # durations, some too long for a timedelta
    st.sampled_from(["Asia", "UTC", "Asia/Jakarta", "../etc", "a" * 300, "0 3 * * MON", "*/0 *"]),
    st.integers(0, 3000).map(lambda n: "{{ " + "(" * n + "1" + ")" * n + " }}"),
    st.integers(0, 3000).map(lambda n: "{{ " + "not " * n + "1 }}"),
    st.integers(0, 400).map(lambda n: "{% if " + "-" * n + "x %}{% endif %}"),  # was minutes
    st.integers(0, 400).map(lambda n: "{{ x" + " | upper" * n + " }}"),
    st.integers(0, 6000).map(lambda n: "{{ " + "9" * n + " }}"),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(["sev1", "note", "a", "b", "30s", "5x", "{{ inputs.region }}", "mode"]),
    tricky,
)
keys = st.one_of(
    st.text(max_size=10),
    st.sampled_from(["runbook", "steps", "id", "action", "with", "after", "from", "quorum"]),
    st.integers(),
    st.booleans(),
    st.none(),
)
structures = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=4)
    ),
    max_leaves=12,
)


def dump(data: Any) -> str:
    out = io.StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.dump(data, out)
    return out.getvalue()


@FUZZ
@given(structures)
def test_random_documents(data: Any) -> None:
    check_outcome(dump(data))


# --- (b) mutations of a valid runbook ---------------------------------------------------------


def base_runbook() -> dict[str, Any]:
    yaml = YAML(typ="safe", pure=True)
    return yaml.load(VALID.read_text(encoding="utf-8"))


BASE = base_runbook()


def places(data: Any, loc: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in `data` (the document itself included)."""
    found = [loc]
    if isinstance(data, dict):
        for key, value in data.items():
            found += places(value, (*loc, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found += places(value, (*loc, index))
    return found


def containers(data: Any) -> list[tuple[Any, ...]]:
    return [loc for loc in places(data) if isinstance(get(data, loc), dict | list)]


def get(data: Any, loc: tuple[Any, ...]) -> Any:
    for part in loc:
        data = data[part]
    return data


def put(data: Any, loc: tuple[Any, ...], value: Any) -> None:
    get(data, loc[:-1])[loc[-1]] = value


def remove(data: Any, loc: tuple[Any, ...]) -> None:
    parent = get(data, loc[:-1])
    if isinstance(parent, dict):
        parent.pop(loc[-1])
    else:
        del parent[loc[-1]]


template_pieces = st.sampled_from(
    [
        "{{", "}}", "{%", "%}", " ", "inputs", "inputs.region", "inputs.nope", ".", "[", "]",
        "'", "steps", "steps.announce", "steps['freeze']", "steps.settle.status", "alert",
        "mode", "run", "x", "for s in steps", "endfor", "if", "endif", "|", "upper", "(", ")",
        "==", "and", "not", "''.__class__", "1", "{#", "#}", "-", "+",
    ]
)
templates = st.lists(template_pieces, max_size=12).map("".join)
step_ids = st.sampled_from(["announce", "freeze", "status-page", "settle", "report", "x", ""])


@st.composite
def mutated_runbooks(draw: st.DrawFn) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(
            st.sampled_from(
                ["drop", "rename", "retype", "insert", "duplicate-step", "after", "template"]
            )
        )
        everywhere = [loc for loc in places(data) if loc]
        if kind == "drop" and everywhere:
            remove(data, draw(st.sampled_from(everywhere)))
        elif kind == "rename":
            named = [loc for loc in everywhere if isinstance(get(data, loc[:-1]), dict)]
            if named:
                loc = draw(st.sampled_from(named))
                parent = get(data, loc[:-1])
                new_key = draw(st.one_of(keys, st.just(str(loc[-1])[:-1]), st.just("aftr")))
                value = parent.pop(loc[-1])
                parent[new_key] = value
        elif kind == "retype" and everywhere:
            put(data, draw(st.sampled_from(everywhere)), draw(structures))
        elif kind == "insert":
            target = get(data, draw(st.sampled_from(containers(data))))
            value = draw(structures)
            if isinstance(target, dict):
                target[draw(keys)] = value
            else:
                target.insert(draw(st.integers(0, len(target))), value)
        elif kind == "duplicate-step" and isinstance(data.get("steps"), list) and data["steps"]:
            step = draw(st.sampled_from(data["steps"]))
            data["steps"].insert(draw(st.integers(0, len(data["steps"]))), copy.deepcopy(step))
        elif kind == "after" and isinstance(data.get("steps"), list) and data["steps"]:
            step = data["steps"][draw(st.integers(0, len(data["steps"]) - 1))]
            if isinstance(step, dict):
                step["after"] = draw(st.lists(st.one_of(step_ids, scalars), max_size=4))
        elif kind == "template":
            strings = [loc for loc in everywhere if isinstance(get(data, loc), str)]
            if strings:
                put(data, draw(st.sampled_from(strings)), draw(templates))
    return data


@FUZZ
@given(mutated_runbooks())
def test_mutated_runbooks(data: dict[str, Any]) -> None:
    try:
        text = dump(data)
    except Exception:  # noqa: BLE001 - a value the YAML dumper cannot write is not our subject
        assume(False)
    check_outcome(text)


@pytest.mark.parametrize("text", [dump(BASE), VALID.read_text(encoding="utf-8")])
def test_the_unmutated_runbook_parses(text: str) -> None:
    assert isinstance(parse_runbook(text, REGISTRY, file=FILE), Runbook)

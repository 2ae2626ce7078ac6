"""Unit tests of the language's small parts: durations, template rendering, conditions, and the
names a template reads."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jinja2 import TemplateSyntaxError, UndefinedError
from jinja2.sandbox import SecurityError
from pydantic import TypeAdapter, ValidationError

from siaga.runbook import Duration, format_duration, parse_duration
from siaga.runbook.templates import (
    MAX_NESTING,
    Reference,
    TemplateError,
    condition_source,
    evaluate_condition,
    is_template,
    references,
    render_value,
)

# --- durations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0s", 0),
        ("30s", 30),
        ("10m", 600),
        ("1h", 3600),
        ("2d", 172800),
        ("1h30m", 5400),
        ("1d2h3m4s", 93784),
        ("90m", 5400),
        (" 1h 30m ", 5400),
        ("30m1h", 5400),
    ],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (1, "1s"), (60, "1m"), (5400, "1h30m"), (86400, "1d"), (93784, "1d2h3m4s")],
)
def test_format_duration(seconds: int, text: str) -> None:
    assert format_duration(timedelta(seconds=seconds)) == text


@pytest.mark.parametrize(
    "text",
    ["", " ", "5x", "5", "h", "1.5h", "-1m", "1h-30m", "1 hour", "PT1H", "1h30", "9" * 20 + "d"],
)
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration"):
        parse_duration(text)


@pytest.mark.parametrize("value", [None, 5, 1.5, ["1h"]])
def test_parse_duration_refuses_what_is_not_text(value: object) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(value)  # type: ignore[arg-type]


@given(st.integers(min_value=0, max_value=10**12))
def test_format_then_parse_is_the_same_duration(seconds: int) -> None:
    value = timedelta(seconds=seconds)
    assert parse_duration(format_duration(value)) == value


@given(st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from("smhd")), min_size=1, max_size=5))
def test_parse_then_format_is_canonical(parts: list[tuple[int, str]]) -> None:
    text = "".join(f"{count}{unit}" for count, unit in parts)
    canonical = format_duration(parse_duration(text))
    assert parse_duration(canonical) == parse_duration(text)
    assert format_duration(parse_duration(canonical)) == canonical  # a fixed point


def test_duration_type_validates_and_serialises() -> None:
    adapter = TypeAdapter(Duration)
    assert adapter.validate_python("1h30m") == timedelta(minutes=90)
    assert adapter.validate_python(timedelta(seconds=5)) == timedelta(seconds=5)
    assert adapter.dump_python(timedelta(minutes=90)) == "1h30m"
    for bad in ("5x", 30, None):
        with pytest.raises(ValidationError):
            adapter.validate_python(bad)


# --- render_value ------------------------------------------------------------------------------

CONTEXT = {
    "inputs": {"region": "eu", "replicas": 3, "ratio": 0.5, "dry": True, "zones": ["a", "b"]},
    "steps": {"check": {"status": "completed", "output": {"code": 200, "ok": True}}},
    "mode": "drill",
}


@pytest.mark.parametrize(
    ("template", "value"),
    [
        ("{{ inputs.replicas }}", 3),
        ("{{ inputs.ratio }}", 0.5),
        ("{{ inputs.dry }}", True),
        ("{{ inputs.zones }}", ["a", "b"]),
        ("{{ steps.check.output }}", {"code": 200, "ok": True}),
        ("{{ inputs.replicas * 2 }}", 6),
        ("{{ none }}", None),
        ("  {{ inputs.region }}  ", "eu"),
        ("{{ inputs.region | upper }}", "EU"),
        ("{{ steps['check'].output.code }}", 200),
    ],
)
def test_a_whole_expression_renders_to_its_native_value(template: str, value: object) -> None:
    result = render_value(template, CONTEXT)
    assert result == value
    assert type(result) is type(value)


@pytest.mark.parametrize(
    ("template", "text"),
    [
        ("replicas={{ inputs.replicas }}", "replicas=3"),
        ("{{ inputs.replicas }}{{ inputs.region }}", "3eu"),
        ("{{ inputs.region }} / {{ mode }}", "eu / drill"),
        ("{% if inputs.dry %}dry{% endif %}", "dry"),
        ("{% for z in inputs.zones %}{{ z }},{% endfor %}", "a,b,"),
        ("{{ inputs.dry }}!", "True!"),
    ],
)
def test_mixed_templates_render_to_text(template: str, text: str) -> None:
    assert render_value(template, CONTEXT) == text


@pytest.mark.parametrize("value", ["plain text", "", "{ not a template }", 5, 1.5, True, None])
def test_values_without_templates_are_left_alone(value: object) -> None:
    assert render_value(value, CONTEXT) == value


def test_render_value_walks_nested_structures() -> None:
    raw = {
        "count": "{{ inputs.replicas }}",
        "labels": ["{{ inputs.region }}", "zone-{{ inputs.zones[0] }}", 7],
        "nested": {"deeper": {"ok": "{{ steps.check.output.ok }}", "tuple": ("{{ mode }}",)}},
        "untouched": None,
    }
    assert render_value(raw, CONTEXT) == {
        "count": 3,
        "labels": ["eu", "zone-a", 7],
        "nested": {"deeper": {"ok": True, "tuple": ["drill"]}},
        "untouched": None,
    }


def test_is_template() -> None:
    assert is_template("{{ x }}") and is_template("{% if x %}{% endif %}")
    assert not is_template("x") and not is_template(5) and not is_template("{ x }")


# --- evaluate_condition ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "truth"),
    [
        ("inputs.dry", True),
        ("{{ inputs.dry }}", True),
        ("  {{ not inputs.dry }}  ", False),
        ("inputs.replicas > 2", True),
        ("{{ inputs.replicas > 5 }}", False),
        ("steps.check.output.code == 200 and mode == 'drill'", True),
        ("inputs.region in ['us', 'ap']", False),
        ("inputs.zones", True),
        ("inputs.missing is defined", False),
        ("inputs.missing | default(true)", True),
    ],
)
def test_evaluate_condition(when: str, truth: bool) -> None:
    assert evaluate_condition(when, CONTEXT) is truth


def test_condition_source() -> None:
    assert condition_source("{{ a and b }}") == "a and b"
    assert condition_source("  a and b ") == "a and b"
    assert condition_source("{{ a }} and {{ b }}") == "{{ a }} and {{ b }}"  # not one expression


def test_a_condition_of_two_expressions_does_not_parse() -> None:
    with pytest.raises(TemplateSyntaxError):
        evaluate_condition("{{ inputs.dry }} and {{ inputs.dry }}", CONTEXT)


# --- strictness and the sandbox ----------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "{{ inputs.missing }}",  # a whole expression: not silently None
        "{{ nothing }}",
        "region: {{ inputs.missing }}",
        "{{ inputs.missing.deeper }}",
        "{{ steps.other.output }}",
        "{{ 1 if false }}",  # an if-expression without else is undefined
    ],
)
def test_undefined_names_raise(template: str) -> None:
    with pytest.raises(UndefinedError) as caught:
        render_value(template, CONTEXT)
    assert isinstance(caught.value, TemplateError)


@pytest.mark.parametrize("when", ["inputs.missing", "{{ nothing }}", "not inputs.missing"])
def test_undefined_names_in_conditions_raise(when: str) -> None:
    with pytest.raises(UndefinedError):
        evaluate_condition(when, CONTEXT)


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__ }}",
        "x {{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ inputs.zones.append('c') }}",  # the environment is immutable
        "{{ inputs.update({'region': 'us'}) }}",
        "{{ render_value.__globals__ }}",
    ],
)
def test_the_sandbox_refuses_unsafe_access(template: str) -> None:
    context = {**CONTEXT, "render_value": render_value}
    with pytest.raises(SecurityError) as caught:
        render_value(template, context)
    assert isinstance(caught.value, TemplateError)
    assert CONTEXT["inputs"]["zones"] == ["a", "b"]


def test_the_sandbox_refuses_unsafe_access_in_conditions() -> None:
    with pytest.raises(SecurityError):
        evaluate_condition("''.__class__.__mro__", CONTEXT)


# --- references --------------------------------------------------------------------------------


def test_references_finds_context_names_and_keys() -> None:
    found = references("{{ inputs.x }} {{ steps['a-b'].output }} {{ alert.labels.region }}")
    assert set(found) == {
        Reference("inputs", None),
        Reference("inputs", "x"),
        Reference("steps", None),
        Reference("steps", "a-b"),
        Reference("alert", None),
        Reference("alert", "labels"),
    }


def test_references_of_an_expression() -> None:
    assert set(references("inputs.flag and steps.check.status == 'ok'", expression=True)) == {
        Reference("inputs", None),
        Reference("inputs", "flag"),
        Reference("steps", None),
        Reference("steps", "check"),
    }
    assert set(references("{{ mode == 'drill' }}", expression=True)) == {Reference("mode", None)}


def test_references_ignore_loop_variables_and_set_names() -> None:
    found = references(
        "{% for s in steps %}{{ s.output }}{{ s['id'] }}{% endfor %}"
        "{% set first = inputs.zones[0] %}{{ first.name }}"
        "{% macro m(arg) %}{{ arg.field }}{% endmacro %}"
    )
    assert set(found) == {
        Reference("steps", None),
        Reference("inputs", None),
        Reference("inputs", "zones"),
    }


def test_a_loop_variable_named_like_a_context_root_is_not_that_root() -> None:
    assert references("{% for inputs in [1] %}{{ inputs.shadowed }}{% endfor %}") == []


@pytest.mark.xfail(
    strict=True,
    reason="known limitation: keys are matched to names per template, not per scope, so a name "
    "that is both read from the context and a loop variable in the same template counts as both",
)
def test_a_shadowing_loop_variable_next_to_the_context_root() -> None:
    found = references("{{ inputs.zones }}{% for inputs in [1] %}{{ inputs.shadowed }}{% endfor %}")
    assert Reference("inputs", "shadowed") not in found


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "source",
    [
        "{% if " + "-" * 300 + "x %}{% endif %}",  # took Jinja's optimizer ~10 s
        "{{ x" + " | upper" * 300 + " }}",
        "{{ " + " and ".join(["x"] * 300) + " }}",
    ],
)
def test_references_refuse_templates_nested_too_deeply(source: str) -> None:
    with pytest.raises(TemplateError, match=f"nested too deeply \\(over {MAX_NESTING} levels\\)"):
        references(source)


def test_references_accept_templates_nested_less_than_the_limit() -> None:
    depth = MAX_NESTING - 8
    found = references("{% if " + "-" * depth + "inputs.n %}{% endif %}")
    assert Reference("inputs", "n") in found


def test_references_of_text_without_templates() -> None:
    assert references("just text") == []


@pytest.mark.parametrize(
    "source",
    [
        "{{ inputs.x }",
        "{% if x %}",
        "{{ x | no_such_filter }}",
        "{{ " + "not " * 2000 + "x }}",  # deeper than Jinja can parse
        "{{ " + "(" * 2000 + "1" + ")" * 2000 + " }}",
        "{{ " + "9" * 5000 + " }}",  # more digits than Python converts
    ],
)
def test_references_raise_template_error_for_what_does_not_parse(source: str) -> None:
    with pytest.raises(TemplateError):
        references(source)

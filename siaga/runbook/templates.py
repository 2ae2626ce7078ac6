"""`{{ }}` templates and `when:` conditions, in a sandboxed Jinja environment with no I/O.

A string that is exactly one ``{{ expression }}`` renders to the expression's native value (a
number stays a number); any other string containing ``{{`` or ``{%`` renders to text.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, Undefined, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

CONTEXT_ROOTS = frozenset({"inputs", "alert", "incident", "steps", "runbook", "mode", "run"})
"""The names a template can start from."""

_WHOLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*?)\}\}\s*$", re.DOTALL)

MAX_NESTING = 64
"""How deep a template's syntax tree may go: Python cannot compile the code Jinja makes of a
few hundred levels, and a walk over them runs out of stack."""
_TOO_DEEP = f"the template is nested too deeply (over {MAX_NESTING} levels)"

__all__ = [
    "CONTEXT_ROOTS",
    "Reference",
    "TemplateError",
    "condition_source",
    "evaluate_condition",
    "is_template",
    "references",
    "render_value",
]


@cache
def _environment() -> ImmutableSandboxedEnvironment:
    # Jinja's constant-folding optimizer takes time cubic in an expression's depth.
    return ImmutableSandboxedEnvironment(
        undefined=StrictUndefined, autoescape=False, optimized=False, trim_blocks=True, lstrip_blocks=True
    )


class _NameTracker(meta.TrackingCodeGenerator):
    """`meta.find_undeclared_variables`, without the optimizer it always switches on."""

    def __init__(self, environment: ImmutableSandboxedEnvironment) -> None:
        super().__init__(environment)
        self.optimizer = None


def _context_names(tree: nodes.Template) -> set[str]:
    tracker = _NameTracker(_environment())
    tracker.visit(tree)
    return tracker.undeclared_identifiers


def is_template(value: object) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def condition_source(when: str) -> str:
    """A `when:` may be written ``{{ expr }}`` or bare ``expr``; return the bare expression."""
    whole = _WHOLE_EXPRESSION.match(when)
    return whole.group("expr").strip() if whole and "{{" not in whole.group("expr") else when.strip()


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every template inside `value` (strings, lists, mappings); raise TemplateError."""
    if isinstance(value, str):
        if not is_template(value):
            return value
        whole = _WHOLE_EXPRESSION.match(value)
        if whole and "{{" not in whole.group("expr") and "{%" not in value:
            return _evaluate(whole.group("expr"), context)
        return _environment().from_string(value).render(**context)
    if isinstance(value, Mapping):
        return {key: render_value(item, context) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [render_value(item, context) for item in value]
    return value


def evaluate_condition(when: str, context: Mapping[str, Any]) -> bool:
    """The truth of a `when:` condition over `context`; raise TemplateError."""
    return bool(_evaluate(condition_source(when), context))


def _evaluate(expression: str, context: Mapping[str, Any]) -> Any:
    """The value of one expression. Jinja's default would turn an undefined result (a missing
    key, or an attribute the sandbox refuses) into None: here it raises, as in text."""
    value = _environment().compile_expression(expression, undefined_to_none=False)(**context)
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    return value


@dataclass(frozen=True)
class Reference:
    """A name a template reads: ``inputs.region`` is Reference("inputs", "region")."""

    root: str
    key: str | None


def references(source: str, *, expression: bool = False) -> list[Reference]:
    """Every context name `source` reads; raise TemplateError if it does not parse."""
    text = "{{ " + condition_source(source) + " }}" if expression else source
    try:
        tree = _environment().parse(text)
        if _depth(tree) > MAX_NESTING:
            raise TemplateError(_TOO_DEEP)
        context_names = _context_names(tree)  # not loop variables, not `set` names
        found = [Reference(name, None) for name in sorted(context_names)]
        found += [ref for ref in _keyed(tree) if ref.root in context_names]
    except RecursionError:
        raise TemplateError(_TOO_DEEP) from None
    except ValueError as exc:  # the lexer's int(): a literal longer than Python converts
        raise TemplateError(str(exc)) from None
    return found


def _depth(tree: nodes.Node) -> int:
    deepest, pending = 0, [(tree, 1)]
    while pending:
        node, depth = pending.pop()
        deepest = max(deepest, depth)
        pending.extend((child, depth + 1) for child in node.iter_child_nodes())
    return deepest


def _keyed(tree: nodes.Node) -> Iterator[Reference]:
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if not isinstance(node.node, nodes.Name) or node.node.ctx != "load":
            continue
        if isinstance(node, nodes.Getattr):
            yield Reference(node.node.name, node.attr)
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            yield Reference(node.node.name, node.arg.value)

"""Read YAML into plain data while remembering where every key and value stood."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, merge_attrib
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from .diagnostics import Diagnostic, Loc


@dataclass
class Positions:
    """Where each place of a document stands: 1-based (line, column) of values and of keys."""

    values: dict[Loc, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Loc, tuple[int, int]] = field(default_factory=dict)

    def of(self, loc: Loc, *, key: bool = False) -> tuple[int, int]:
        """The position of `loc`, or of its nearest ancestor that exists in the document."""
        table = self.keys if key else self.values
        if loc in table:
            return table[loc]
        for cut in range(len(loc) - 1, -1, -1):
            found = self.keys.get(loc[:cut]) or self.values.get(loc[:cut])
            if found:
                return found
        return (1, 1)


@dataclass(frozen=True)
class Document:
    """A parsed YAML document: plain Python data and the positions of its parts."""

    data: Any
    positions: Positions
    file: str

    def diagnostic(
        self, code: str, message: str, loc: Loc, *, hint: str | None = None, key: bool = False
    ) -> Diagnostic:
        line, column = self.positions.of(tuple(loc), key=key)
        return Diagnostic(code, message, tuple(loc), self.file, line, column, hint)


class YamlSyntaxError(Exception):
    """The text is not one well-formed YAML document."""

    def __init__(self, diagnostic: Diagnostic) -> None:
        self.diagnostic = diagnostic
        super().__init__(str(diagnostic))


def read_yaml(text: str, file: str = "<runbook>") -> Document:
    """Parse `text` as one YAML document; raise YamlSyntaxError with its location if it is not."""
    yaml = YAML(typ="rt", pure=True)
    try:
        documents = list(yaml.load_all(text))
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        raise YamlSyntaxError(
            Diagnostic("yaml-syntax", problem.strip(), (), file, line, column)
        ) from None
    except (YAMLError, ValueError, TypeError, RecursionError) as exc:
        raise YamlSyntaxError(Diagnostic("yaml-syntax", str(exc) or "invalid YAML", (), file)) from None
    if len(documents) != 1:
        what = "no YAML document" if not documents else f"{len(documents)} YAML documents"
        raise YamlSyntaxError(
            Diagnostic("yaml-syntax", f"expected one YAML document, found {what}", (), file)
        )
    positions = Positions()
    data = _plain(documents[0], (), positions)
    return Document(data, positions, file)


def _plain(node: Any, loc: Loc, positions: Positions) -> Any:
    """Copy ruamel's round-trip nodes into plain dicts, lists and scalars, noting positions."""
    if isinstance(node, CommentedMap):
        positions.values.setdefault(loc, (node.lc.line + 1, node.lc.col + 1))
        out: dict[Any, Any] = {}
        for key, value in node.items():
            plain_key = _scalar(key)
            child = (*loc, plain_key)
            key_line, key_col, value_line, value_col = _marks(node, key)
            positions.keys[child] = (key_line + 1, key_col + 1)
            positions.values[child] = (value_line + 1, value_col + 1)
            out[plain_key] = _plain(value, child, positions)
        return out
    if isinstance(node, CommentedSeq):
        positions.values.setdefault(loc, (node.lc.line + 1, node.lc.col + 1))
        items = []
        for index, value in enumerate(node):
            child = (*loc, index)
            line, col = node.lc.item(index)
            positions.values[child] = (line + 1, col + 1)
            items.append(_plain(value, child, positions))
        return items
    if isinstance(node, Mapping):
        return {_scalar(k): _plain(v, (*loc, _scalar(k)), positions) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [_plain(v, (*loc, i), positions) for i, v in enumerate(node)]
    return _scalar(node)


def _marks(node: CommentedMap, key: Any) -> tuple[int, int, int, int]:
    """0-based (line, column) of `key` in `node` and of its value. A key merged in with
    ``<<: *anchor`` has no place in `node` itself: it stands where the anchored mapping has it."""
    try:
        return (*node.lc.key(key), *node.lc.value(key))
    except KeyError:
        pass
    for merged in getattr(node, merge_attrib, ()):
        source = merged[1] if isinstance(merged, tuple) else merged  # ruamel < 0.19: (pos, map)
        if isinstance(source, CommentedMap) and key in source:
            return _marks(source, key)
    return (node.lc.line, node.lc.col, node.lc.line, node.lc.col)


def _scalar(value: Any) -> Any:
    """ruamel's scalar subclasses (ScalarFloat, LiteralScalarString...) as builtin types."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    if isinstance(value, tuple):
        return str(value)
    return value

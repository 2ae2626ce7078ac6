"""Read YAML into plain data while remembering where every key and value stood."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .diagnostics import Diagnostic, Loc, Severity


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
        self, code: str, message: str, loc: Loc, *, hint: str | None = None, key: bool = False,
        severity: Severity = "error",
    ) -> Diagnostic:
        line, column = self.positions.of(tuple(loc), key=key)
        return Diagnostic(code, message, tuple(loc), self.file, line, column, hint, severity)


class YamlSyntaxError(Exception):
    """The text is not one well-formed YAML document."""

    def __init__(self, diagnostic: Diagnostic) -> None:
        self.diagnostic = diagnostic
        super().__init__(str(diagnostic))


def read_yaml(text: str, file: str = "<runbook>") -> Document:
    """Parse `text` as one YAML document; raise YamlSyntaxError with its location if it is not.

    The document is composed into nodes (by ruamel's C parser where it can, else its pure YAML 1.2
    parser) and turned into plain data here, so every key and value keeps its position.
    """
    yaml = YAML(typ="safe")
    try:
        try:
            nodes = list(yaml.compose_all(text))
        except MarkedYAMLError:
            # libyaml (the C parser) follows YAML 1.1 and refuses some YAML 1.2 the pure parser
            # accepts, such as `{secret: secret://name}`: the pure parser has the last word.
            yaml = YAML(typ="safe", pure=True)
            nodes = list(yaml.compose_all(text))
        if len(nodes) != 1:
            what = "no YAML document" if not nodes else f"{len(nodes)} YAML documents"
            raise YamlSyntaxError(
                Diagnostic("yaml-syntax", f"expected one YAML document, found {what}", (), file)
            )
        positions = Positions()
        data = _Builder(yaml.constructor, positions, file).build(nodes[0], ())
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        raise YamlSyntaxError(
            Diagnostic("yaml-syntax", problem.strip(), (), file, line, column)
        ) from None
    except (YAMLError, ValueError, TypeError, RecursionError) as exc:
        raise YamlSyntaxError(Diagnostic("yaml-syntax", str(exc) or "invalid YAML", (), file)) from None
    return Document(data, positions, file)


class _Builder:
    """Turns composed YAML nodes into plain dicts, lists and scalars, noting positions."""

    def __init__(self, constructor: Any, positions: Positions, file: str) -> None:
        self.constructor = constructor
        self.positions = positions
        self.file = file
        self.path: set[int] = set()

    def build(self, node: Node, loc: Loc) -> Any:
        if id(node) in self.path:
            raise YamlSyntaxError(self._error("yaml-syntax", "an alias refers to itself", node, loc))
        self.positions.values.setdefault(loc, _position(node))
        if isinstance(node, ScalarNode):
            return _scalar(self.constructor.construct_object(node, deep=True))
        self.path.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                return [self.build(item, (*loc, index)) for index, item in enumerate(node.value)]
            if isinstance(node, MappingNode):
                return self._mapping(node, loc)
        finally:
            self.path.discard(id(node))
        raise YamlSyntaxError(self._error("yaml-syntax", f"unexpected YAML node {node.id}", node, loc))

    def _mapping(self, node: MappingNode, loc: Loc) -> dict[Any, Any]:
        own = {id(key) for key, _ in node.value}
        self.constructor.flatten_mapping(node)  # `<<: *anchor` merges come first, then own keys
        out: dict[Any, Any] = {}
        merged: set[Any] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                raise YamlSyntaxError(self._error("yaml-syntax", "a key must be a plain value", key_node, loc))
            key = _scalar(self.constructor.construct_object(key_node, deep=True))
            if id(key_node) not in own:
                if key in out:
                    continue  # an earlier merge wins over a later one
                merged.add(key)
            elif key in merged:
                merged.discard(key)  # a mapping's own key overrides a merged one
            elif key in out:
                raise YamlSyntaxError(
                    self._error("duplicate-key", f"key `{key}` appears twice in this mapping", key_node, (*loc, key))
                )
            child = (*loc, key)
            self.positions.keys[child] = _position(key_node)
            self.positions.values[child] = _position(value_node)
            out[key] = self.build(value_node, child)
        return out

    def _error(self, code: str, message: str, node: Node, loc: Loc) -> Diagnostic:
        line, column = _position(node)
        return Diagnostic(code, message, loc, self.file, line, column)


def _position(node: Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _scalar(value: Any) -> Any:
    """Dates and times as ISO text; everything else as the constructor made it."""
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value

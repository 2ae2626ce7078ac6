"""From YAML text to a validated runbook, with every problem placed at file:line:col.

Reading files happens at the edge (`load_runbook`, `inspect_runbook_file`); `parse_runbook` and
`inspect_runbook` work on text alone. `inspect_*` hand back every diagnostic, errors and warnings;
`parse_runbook` / `load_runbook` raise the errors once (`RunbookError`) and return the runbook.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..actions import ActionRegistry
from .checks import check_runbook
from .comms import TEMPLATE_SUFFIX
from .diagnostics import Diagnostic, Loc, RunbookError, did_you_mean
from .models import Runbook
from .revision import attach_revision
from .roster import Roster, parse_roster
from .source import Document, YamlSyntaxError, read_yaml

RUNBOOK_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Inspection:
    """A runbook source checked: the runbook when it has no errors, and every diagnostic (errors
    and warnings) in file order."""

    runbook: Runbook | None
    diagnostics: tuple[Diagnostic, ...]

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if not d.is_error]


def inspect_runbook(
    text: str,
    registry: ActionRegistry,
    *,
    file: str = "<runbook>",
    roster: Roster | None = None,
    templates: Mapping[str, str] | None = None,
) -> Inspection:
    """Check runbook `text` (against `roster` and the message `templates` by file name, if
    given); never raises for a problem in the text."""
    try:
        doc = read_yaml(text, file)
    except YamlSyntaxError as exc:
        return Inspection(None, (exc.diagnostic,))
    if not isinstance(doc.data, Mapping):
        problem = doc.diagnostic("not-a-mapping", "a runbook is a mapping of keys such as `runbook:` and `steps:`", ())
        return Inspection(None, (problem,))
    runbook, diagnostics, patched = _validate_shape(doc)
    if runbook is not None:
        diagnostics += [
            d for d in check_runbook(runbook, doc, registry, roster, templates)
            if not any(d.loc[: len(loc)] == loc for loc in patched)
        ]
    ordered = tuple(sorted(diagnostics, key=lambda d: (d.file, d.line, d.column)))
    if runbook is None or any(d.is_error for d in ordered):
        return Inspection(None, ordered)
    return Inspection(attach_revision(runbook, text, templates), ordered)


def parse_runbook(
    text: str,
    registry: ActionRegistry,
    *,
    file: str = "<runbook>",
    roster: Roster | None = None,
    templates: Mapping[str, str] | None = None,
) -> Runbook:
    """Validate runbook `text` (against `roster` and the message `templates` by file name, if
    given); raise RunbookError carrying every error found (warnings are `inspect_runbook`'s)."""
    return _usable(inspect_runbook(text, registry, file=file, roster=roster, templates=templates))


def inspect_runbook_file(path: str | Path, registry: ActionRegistry, roster: Roster | None = None) -> Inspection:
    """Read and check the runbook file at `path` (against `roster` if given, and the message
    templates in ``templates/`` next to it)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return Inspection(None, (Diagnostic("unreadable", f"cannot read the file: {exc}", (), str(path)),))
    return inspect_runbook(text, registry, file=str(path), roster=roster, templates=read_templates(path.parent))


def load_runbook(path: str | Path, registry: ActionRegistry, roster: Roster | None = None) -> Runbook:
    """Read and validate the runbook file at `path` (against `roster` if given, and the message
    templates in ``templates/`` next to it); raise RunbookError carrying every error."""
    return _usable(inspect_runbook_file(path, registry, roster))


def _usable(inspection: Inspection) -> Runbook:
    if inspection.errors:
        raise RunbookError(inspection.errors)
    assert inspection.runbook is not None
    return inspection.runbook


def read_templates(folder: str | Path) -> dict[str, str]:
    """The message templates of a runbook folder (``templates/*.md.j2``), by file name."""
    found: dict[str, str] = {}
    for path in sorted((Path(folder) / "templates").glob(f"*{TEMPLATE_SUFFIX}")):
        try:
            found[path.name] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue  # the draft step reports it, with the reason, when it reads it
    return found


def load_roster(path: str | Path) -> Roster:
    """Read and validate the roster file at `path`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RunbookError([Diagnostic("unreadable", f"cannot read the file: {exc}", (), str(path))]) from None
    return parse_roster(text, str(path))


def runbook_files(*paths: str | Path) -> list[Path]:
    """The runbook files named by `paths`: files as given, folders searched for *.yaml / *.yml."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix in RUNBOOK_SUFFIXES and _is_runbook(p))
        else:
            found.append(path)
    return found


def _is_runbook(path: Path) -> bool:
    """Folders also hold rosters, connections and templates: a runbook starts with `runbook:`."""
    try:
        head = path.read_text(encoding="utf-8")[:4096]
    except (OSError, UnicodeDecodeError):
        return True
    return any(line.startswith("runbook:") for line in head.splitlines())


def _validate_shape(doc: Document) -> tuple[Runbook | None, list[Diagnostic], set[Loc]]:
    """Validate the document against the models.

    When some fields are wrong, the rest is still checked: each wrong field is set aside (or,
    when required, stood in for by a valid placeholder) and the shape validated again, so that
    one typo does not hide the file's other problems. Returns the places so patched.

    An error inside a place already patched is the placeholder's own (it could not be made
    valid): it is not reported, and the place holding the placeholder is set aside instead.
    """
    data = doc.data
    diagnostics: list[Diagnostic] = []
    patched: set[Loc] = set()
    for _ in range(4):
        try:
            runbook = Runbook.model_validate(data)
        except ValidationError as exc:
            errors = [(e, _data_loc(data, tuple(e["loc"]), e["type"])) for e in exc.errors()]
            fresh = [(e, loc) for e, loc in errors if not _within(loc, patched)]
            diagnostics += [_diagnostic(doc, e, loc) for e, loc in fresh]
            locs = {_patched_parent(loc, patched) or loc for _, loc in errors}
            data = _patched(data, locs)
            if data is None:
                return None, _unique(diagnostics), patched
            patched |= locs
        else:
            return runbook, _unique(diagnostics), patched
    return None, _unique(diagnostics), patched


def _within(loc: Loc, places: set[Loc]) -> bool:
    return any(loc[: len(place)] == place for place in places)


def _patched_parent(loc: Loc, patched: set[Loc]) -> Loc | None:
    """For an error inside the patched place P, the place holding P."""
    inside = [place for place in patched if loc[: len(place)] == place]
    return min(inside, key=len)[:-1] if inside else None


def _unique(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    return list(dict.fromkeys(diagnostics))


def _diagnostic(doc: Document, error: Any, loc: Loc) -> Diagnostic:
    kind = error["type"]
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        known = _known_keys(loc[:-1])
        return doc.diagnostic(
            "unknown-key",
            f"unknown key `{loc[-1]}`",
            loc,
            key=True,
            hint=did_you_mean(str(loc[-1]), known) or ("expected one of: " + ", ".join(known) if known else None),
        )
    if kind == "missing":
        return doc.diagnostic("missing-key", f"`{loc[-1]}` is required", loc)
    about_key = kind == "invalid_key" or tuple(error["loc"])[-1:] == ("[key]",)
    return doc.diagnostic("invalid", message, loc, key=about_key)


def _data_loc(data: Any, loc: Loc, kind: str) -> Loc:
    """Pydantic's loc with union-member tags removed, so it names a place in the document."""
    out: list[str | int] = []
    for index, part in enumerate(loc):
        last = index == len(loc) - 1
        if isinstance(data, Mapping) and part not in data:
            # pydantic names a key that is neither text nor an integer (None, 1.5) by its repr
            part = next((key for key in data if repr(key) == part), part)
        if isinstance(data, Mapping) and part in data or isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        elif last and kind in {"missing", "extra_forbidden"}:
            pass
        else:
            continue
        out.append(part)
    return tuple(out)


def _patched(data: Any, locs: set[Loc]) -> Any | None:
    """A copy of `data` with each place at `locs` removed, or replaced by a placeholder when the
    schema requires it; None when a place cannot be patched."""
    if any(not loc for loc in locs):
        return None
    copy = _deep_copy(data)
    for loc in sorted(locs, key=len, reverse=True):
        parent = copy
        for part in loc[:-1]:
            try:
                parent = parent[part]
            except (KeyError, IndexError, TypeError):
                return None
        if not isinstance(parent, dict):
            return None
        if _is_required(loc):
            parent[loc[-1]] = _placeholder(loc)
        else:
            parent.pop(loc[-1], None)
    return copy


def _is_required(loc: Loc) -> bool:
    return any(loc[-1] in node.get("required", ()) for node in _schema_nodes(_schema(), loc[:-1]))


def _placeholder(loc: Loc) -> Any:
    """A value of the schema's type at `loc` that validates, to stand in for a wrong one."""
    for node in _schema_nodes(_schema(), loc):
        if "enum" in node:
            return node["enum"][0]
        kind = node.get("type")
        if kind == "string":
            return "placeholder-" + "-".join(map(str, loc)).replace("_", "-")
        if kind == "integer":
            return max(1, node.get("minimum", 1))
        if kind == "array":
            return [] if not node.get("minItems") else None
        if kind == "object":
            return {}
    return None


def _deep_copy(data: Any) -> Any:
    if isinstance(data, Mapping):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


@cache
def _schema() -> dict[str, Any]:
    return Runbook.model_json_schema(by_alias=True)


def _known_keys(loc: Loc) -> list[str]:
    """The keys the runbook schema allows at `loc`."""
    for node in _schema_nodes(_schema(), loc):
        if "properties" in node:
            return list(node["properties"])
    return []


def _schema_nodes(node: dict[str, Any], loc: Loc) -> Iterator[dict[str, Any]]:
    node = _resolve(node)
    if "anyOf" in node:
        for option in node["anyOf"]:
            yield from _schema_nodes(option, loc)
        return
    if not loc:
        yield node
        return
    head, rest = loc[0], loc[1:]
    if isinstance(head, int) and "items" in node:
        yield from _schema_nodes(node["items"], rest)
    elif isinstance(head, str) and head in node.get("properties", {}):
        yield from _schema_nodes(node["properties"][head], rest)
    elif isinstance(head, str) and isinstance(node.get("additionalProperties"), dict):
        yield from _schema_nodes(node["additionalProperties"], rest)


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref:
        return _schema()["$defs"][ref.rsplit("/", 1)[-1]]
    return node

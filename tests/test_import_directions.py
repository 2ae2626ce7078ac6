"""Imports go only the directions `docs/parts.toml` allows: every module belongs to one part, and an
import from one part to another (or to a checked third-party package) is an allowed arrow or a
named debt. Imports are read from the source (top-level and inside functions alike), so an arrow
drawn lazily counts too; a failure names the file and line that drew it."""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PARTS_FILE = REPO / "docs" / "parts.toml"
PACKAGES = {"siaga": REPO / "siaga", "siaga.flows": REPO / "flows", "siaga.integrations": REPO / "integrations"}
"""Installed package -> the folder it is installed from (pyproject's package-dir)."""
CHECKED = ("prefect", "httpx", "boto3", "fastapi", "sqlalchemy", "uvicorn", "alembic")


@dataclass(frozen=True)
class Arrow:
    source: str  # a part
    target: str  # a part or a checked third-party package
    where: str  # file:line


def _module_name(path: Path) -> str:
    for package, folder in sorted(PACKAGES.items(), key=lambda item: -len(str(item[1]))):
        if path.is_relative_to(folder):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            return ".".join([package, *parts])
    raise ValueError(path)


def _modules() -> Iterator[tuple[str, Path]]:
    for folder in PACKAGES.values():
        for path in sorted(folder.rglob("*.py")):
            if "versions" in path.parts:  # Alembic revision scripts are loaded by Alembic, not imported
                continue
            if path.is_relative_to(REPO / "siaga") and any(
                path.is_relative_to(other) for other in PACKAGES.values() if other != REPO / "siaga"
            ):
                continue
            name = _module_name(path)
            if name == "siaga":  # the namespace's root holds no code
                assert not path.read_text().strip(), "siaga/__init__.py must stay empty (it belongs to no part)"
                continue
            yield name, path


def _imports(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """Every module name `path` imports, with its line."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                if path.name != "__init__.py":
                    base.pop()
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target, node.lineno
            for alias in node.names:  # `from siaga import store` imports siaga.store
                yield f"{target}.{alias.name}", node.lineno


def _parts() -> dict:
    return tomllib.loads(PARTS_FILE.read_text())


def _part_of(module: str, parts: dict) -> str | None:
    best = None
    for name, part in parts["parts"].items():
        for prefix in part["modules"]:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[1])):
                best = (name, prefix)
    return best[0] if best else None


def _arrows_of(module: str, path: Path, parts: dict) -> list[Arrow]:
    """The arrows module `module` (read from `path`) draws out of its part."""
    source = _part_of(module, parts)
    assert source is not None, f"{path}: module {module} belongs to no part in docs/parts.toml"
    shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    found = []
    for target_module, line in _imports(module, path):
        top = target_module.split(".")[0]
        target = _part_of(target_module, parts) if top == "siaga" else top if top in CHECKED else None
        if target is not None and target != source:
            found.append(Arrow(source, target, f"{shown}:{line}"))
    return found


def _arrows(parts: dict) -> list[Arrow]:
    return [arrow for module, path in _modules() for arrow in _arrows_of(module, path, parts)]


def _allowed(arrow: Arrow, parts: dict) -> bool:
    part = parts["parts"][arrow.source]
    return arrow.target in part["imports"] or arrow.target in part.get("third_party", [])


def test_every_import_goes_an_allowed_direction() -> None:
    parts = _parts()
    debts = {(d["source"], d["target"]) for d in parts.get("debts", [])}
    arrows = _arrows(parts)
    forbidden = sorted({
        f"{a.where}: {a.source} imports {a.target}"
        for a in arrows
        if not _allowed(a, parts) and (a.source, a.target) not in debts
    })
    assert not forbidden, "imports docs/parts.toml does not allow:\n" + "\n".join(forbidden)
    drawn = {(a.source, a.target) for a in arrows}
    paid = sorted(f"{s} -> {t}" for s, t in debts if (s, t) not in drawn)
    assert not paid, "debts in docs/parts.toml no import draws any more (remove them): " + ", ".join(paid)


def test_the_parts_file_names_only_parts_it_defines() -> None:
    parts = _parts()
    names = set(parts["parts"])
    for name, part in parts["parts"].items():
        unknown = set(part["imports"]) - names
        assert not unknown, f"part {name} imports unknown parts {unknown}"
        assert set(part.get("third_party", [])) <= set(CHECKED), name
    for debt in parts.get("debts", []):
        assert debt["source"] in names and (debt["target"] in names or debt["target"] in CHECKED), debt


@pytest.mark.parametrize(
    ("module", "text", "source", "target"),
    [
        ("siaga.runbook.probe", "from siaga.store import engine", "language", "store"),
        ("siaga.incidents.probe", "import siaga.alerts.receiver", "incidents", "alerts"),
        ("siaga.incidents.probe", "from siaga import alerts", "incidents", "alerts"),
        ("siaga.runbook.probe", "def f():\n    import prefect", "language", "prefect"),
        ("siaga.audit.probe", "from ..incidents import recording", "audit", "incidents"),
    ],
)
def test_the_check_sees_a_forbidden_arrow(tmp_path: Path, module: str, text: str, source: str, target: str) -> None:
    """The same reading, on a probe module placed in a part, finds the arrow it draws and refuses it
    (so the test above can fail), with the probe's file and line."""
    probe = tmp_path / "probe.py"
    probe.write_text(text + "\n")
    parts = _parts()
    arrows = [a for a in _arrows_of(module, probe, parts) if (a.source, a.target) == (source, target)]
    assert arrows, _arrows_of(module, probe, parts)
    assert arrows[0].where == f"{probe}:{text.count(chr(10)) + 1}"
    assert not _allowed(arrows[0], parts)


@pytest.mark.parametrize("folder", ["benchmarks", "testkit", "cluster"])
def test_benchmarks_and_what_they_share_never_import_the_tests(folder: str) -> None:
    """The benchmarks, `testkit/` and `cluster/` stand beside the tests, not on them: what both need
    lives in `testkit/` (or `cluster/`), so a test's helper can change without breaking a benchmark."""
    drawn = [f"{path.relative_to(REPO)}:{line}" for path in sorted((REPO / folder).rglob("*.py"))
             for target, line in _imports(path.stem, path) if target.split(".")[0] == "tests"]
    assert not drawn, f"imports of tests/: {drawn}"

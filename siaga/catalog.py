"""The runbook library on disk: every runbook in a folder, found by id or by path."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .actions import ActionRegistry
from .runbook import Roster, Runbook, RunbookError, load_runbook, runbook_files
from .runbook.diagnostics import Diagnostic
from .settings import Settings
from .team import find_roster


class RunbookNotFound(LookupError):
    """No runbook has that id or path."""


@dataclass(frozen=True)
class Catalog:
    """The valid runbooks of a folder, and the problems of the others."""

    folder: Path
    runbooks: dict[str, Runbook] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)
    problems: list[Diagnostic] = field(default_factory=list)

    roster: Roster | None = None

    @classmethod
    def load(cls, folder: Path, registry: ActionRegistry, settings: Settings | None = None) -> Catalog:
        """The runbooks of `folder`, with the roster `settings` name (without them: the roster
        beside the runbooks)."""
        try:
            catalog = cls(folder, roster=find_roster(folder, settings))
        except RunbookError as exc:
            return cls(folder, problems=list(exc.diagnostics))
        for path in runbook_files(folder) if folder.is_dir() else []:
            try:
                runbook = load_runbook(path, registry, catalog.roster)
            except RunbookError as exc:
                catalog.problems.extend(exc.diagnostics)
                continue
            if runbook.id in catalog.runbooks:
                catalog.problems.append(
                    Diagnostic("duplicate-runbook", f"runbook id `{runbook.id}` is also used by "
                               f"{catalog.paths[runbook.id]}", ("runbook",), str(path))
                )
                continue
            catalog.runbooks[runbook.id] = runbook
            catalog.paths[runbook.id] = path
        return catalog


def find_runbook(
    reference: str, folder: Path, registry: ActionRegistry, settings: Settings | None = None,
) -> tuple[Runbook, Path]:
    """The runbook named by `reference`: a file path, or an id from `folder` (with the roster
    `settings` name). Raises RunbookError if it is broken and RunbookNotFound if there is none."""
    path = Path(reference)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise RunbookNotFound(f"no runbook file {reference}")
        return load_runbook(path, registry, find_roster(path.parent, settings)), path
    for candidate in (folder / f"{reference}.yaml", folder / f"{reference}.yml"):
        if candidate.is_file():
            runbook = load_runbook(candidate, registry, find_roster(folder, settings))
            if runbook.id == reference:
                return runbook, candidate
    catalog = Catalog.load(folder, registry, settings)
    if reference in catalog.runbooks:
        return catalog.runbooks[reference], catalog.paths[reference]
    broken = [d for d in catalog.problems if Path(d.file).stem == reference]
    if broken:
        raise RunbookError(broken)
    known = ", ".join(sorted(catalog.runbooks)) or "none"
    raise RunbookNotFound(f"no runbook `{reference}` in {folder} (runbooks there: {known})")

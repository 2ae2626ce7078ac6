"""Runbook errors: every problem is a `Diagnostic` with a place, and all of a file's come together.

Our error hierarchy:

* RunbookError (ValueError): one or more diagnostics for a runbook source; raised once, at the
  boundary that asked (`parse_runbook`, `load_runbook`), never from inside a check.

A diagnostic is an error (the runbook cannot be used) or a warning (it can, but something in it
does not do what it seems to: a trigger that never decides). Only errors are raised; warnings are
for whoever inspects the runbook (`inspect_runbook`, ``siaga validate``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]

Loc = tuple[str | int, ...]
"""A place in the runbook document: ``("steps", 3, "approval", "quorum")``."""


def format_path(loc: Loc) -> str:
    """``("steps", 3, "approval", "quorum")`` -> ``steps[3].approval.quorum``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif out:
            out += f".{part}"
        else:
            out = str(part)
    return out or "(document)"


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """A hint naming the closest of `choices` to `word`, if any is close."""
    match = difflib.get_close_matches(str(word), sorted(set(choices)), n=1, cutoff=0.6)
    return f"did you mean `{match[0]}`?" if match else None


@dataclass(frozen=True)
class Diagnostic:
    """One problem in a runbook: what, where (file, 1-based line and column, field path), a hint,
    and whether it is an error or a warning."""

    code: str
    message: str
    loc: Loc
    file: str = "<runbook>"
    line: int = 1
    column: int = 1
    hint: str | None = None
    severity: Severity = "error"

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    @property
    def path(self) -> str:
        return format_path(self.loc)

    def __str__(self) -> str:
        warning = "" if self.is_error else "warning: "
        text = f"{self.file}:{self.line}:{self.column}: {warning}{self.path}: {self.message}"
        return f"{text} ({self.hint})" if self.hint else text

    def as_dict(self) -> dict[str, object]:
        return {
            "code": self.code,
            "message": self.message,
            "path": self.path,
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "hint": self.hint,
            "severity": self.severity,
        }


class RunbookError(ValueError):
    """A runbook that cannot be used; `diagnostics` holds every problem found, in file order."""

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics = tuple(sorted(diagnostics, key=lambda d: (d.file, d.line, d.column)))
        super().__init__("\n".join(str(d) for d in self.diagnostics))

"""What every command shares: the consoles, the exit codes, how diagnostics are printed."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from rich.console import Console
from rich.markup import escape

from siaga.runbook.diagnostics import Diagnostic
from siaga.wiring import Wiring

OK, RUN_FAILED, BAD_INPUT = 0, 1, 2
TERMINATED = 128 + 15  # as a shell reports a process ended by SIGTERM

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

Handler = Callable[[argparse.Namespace, Wiring], int]
"""A command: its parsed arguments and the entry point's wiring in, its exit code out."""


def print_diagnostics(diagnostics: Sequence[Diagnostic]) -> None:
    for d in diagnostics:
        # the message and hint quote YAML (`{from: [liaison, commander]}`): escaped, not read as markup
        hint = f" [dim]({escape(d.hint)})[/dim]" if d.hint else ""
        warning = "" if d.is_error else "[yellow]warning[/yellow]: "
        err.print(f"[bold]{escape(str(d.file))}:{d.line}:{d.column}[/bold]: {warning}[cyan]{escape(d.path)}[/cyan]: "
                  f"{escape(d.message)}{hint}", markup=True)

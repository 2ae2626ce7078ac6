"""Running runbooks and their drills: ``siaga run | drill | drills``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from siaga.catalog import find_runbook
from siaga.errors import BadInput, Terminated
from siaga.runbook import Runbook
from siaga.wiring import Wiring

from .common import OK, RUN_FAILED, TERMINATED, err, out

__all__ = ["cmd_drills", "cmd_run", "parse_inputs"]


def parse_inputs(runbook: Runbook, pairs: Sequence[str], *, drill: bool = False) -> dict[str, Any]:
    """``key=value`` pairs checked against the runbook's inputs (a drill starts from the runbook's
    `drill.inputs`); raise BadInput naming each problem."""
    problems: list[str] = []
    values: dict[str, Any] = dict(runbook.drill.inputs) if drill else {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep:
            problems.append(f"--input {pair!r}: write it as name=value")
        elif name not in runbook.inputs:
            known = ", ".join(runbook.inputs) or "none"
            problems.append(f"unknown input `{name}` (inputs of {runbook.id}: {known})")
        else:
            try:
                values[name] = runbook.inputs[name].coerce(text)
            except ValueError as exc:
                problems.append(f"input `{name}`: {exc}")
    for name, spec in runbook.inputs.items():
        if spec.required and name not in values:
            problems.append(f"input `{name}` is required: pass --input {name}=...")
    if problems:
        raise BadInput("\n".join(problems))
    return values


def cmd_run(args: argparse.Namespace, wiring: Wiring) -> int:
    registry = wiring.registry
    runbook, _ = find_runbook(args.runbook, wiring.folder(args.runbooks), registry, wiring.settings)
    inputs = parse_inputs(runbook, args.input or [], drill=args.drill)
    mode = "drill" if args.drill else "live"
    requester = args.as_ or wiring.settings.user
    if mode == "live" and not requester and any(step.approval for step in (*runbook.steps, *runbook.on_resolve)):
        raise BadInput(f"{runbook.id} has approval gates: a live run must say who asks for it: pass --as ID "
                       "(your roster id) or set SIAGA_USER; the person who asks never approves its gates")
    if requester:
        inputs = {**inputs, "requested_by": requester}
    if args.local:
        from siaga.flows.running import run_local

        summary = run_local(runbook, registry, inputs, mode, echo=err.print if args.json else out.print,
                            home=wiring.home)
        if not args.json:
            _said_where_the_run_is(summary)
    else:
        from siaga.flows.running import run_on_stack

        try:
            summary = run_on_stack(runbook, inputs, mode, wiring, echo=None if args.json else out.print)
        except Terminated:
            err.print("siaga run: stopped following the run (SIGTERM); the run goes on on the stack",
                      markup=False)
            return TERMINATED
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    rejected = summary.get("state") == "Rejected"  # people said no to a step: not everything was done
    return OK if summary.get("ok") and not rejected else RUN_FAILED


def _said_where_the_run_is(summary: dict[str, Any]) -> None:
    out.print(f"Run {summary['state']}: {summary['url']}", markup=False)
    if summary.get("temporary_server"):
        out.print(f"(its temporary Prefect server, {summary['temporary_server']}, stopped with the run: "
                  "the link opens once `siaga up` runs over the same Siaga home)", markup=False)


def cmd_drills(args: argparse.Namespace, wiring: Wiring) -> int:
    """Past drills and their scores; with --chart, the trend as an SVG chart."""
    from siaga.drills.chart import chart_svg
    from siaga.drills.records import DrillRecords

    drills = DrillRecords(wiring.engine).find(args.runbook, limit=args.limit)
    if args.chart:
        path = Path(args.chart)
        if path.suffix.lower() != ".svg":
            raise BadInput(f"--chart writes SVG: name a .svg file, not {path.name}")
        title = f"Drills of {args.runbook}" if args.runbook else "Drill scores"
        path.write_text(chart_svg(drills, title), encoding="utf-8")
        out.print(f"wrote {path} ({sum(d['state'] == 'scored' for d in drills)} scored drills)")
        return OK
    if args.json:
        print(json.dumps(drills, indent=2, default=str))
        return OK
    if not drills:
        out.print("no drills yet" + (f" of {args.runbook}" if args.runbook else ""))
        return OK
    from rich.table import Column

    table = Table(Column("started (UTC)", no_wrap=True), Column("runbook", no_wrap=True), Column("score", no_wrap=True),
                  Column("page", no_wrap=True), "statement", "gates", "failed", "missed", "run / why skipped")
    for d in drills:
        f = d["figures"]
        if d["state"] == "skipped":
            table.add_row(f"{d['started_at']:%Y-%m-%d %H:%M}", d["runbook_id"], "skipped", "", "", "", "", "",
                          d["reason"] or "")
            continue
        gates = ", ".join(f"{g['step']} {_took(g['decision_s'])}" for g in f.get("gates", []))
        table.add_row(
            f"{d['started_at']:%Y-%m-%d %H:%M}", d["runbook_id"], str(d["score"]),
            _took(f.get("time_to_first_page_s")), _took(f.get("time_to_public_statement_s")), gates,
            ", ".join(f.get("steps_failed", [])), ", ".join(f.get("deadlines_missed", [])), d["run_id"],
        )
    out.print(table)
    return OK


def _took(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds / 60:.1f}m" if seconds >= 60 else f"{seconds:.0f}s"

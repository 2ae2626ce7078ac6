"""Approval gates from the command line: ``siaga approvals | approve``."""

from __future__ import annotations

import argparse
import json

from siaga.approvals.records import GateRecords
from siaga.wiring import Wiring

from .common import BAD_INPUT, OK, err, out

__all__ = ["cmd_approvals", "cmd_approve"]


def cmd_approvals(args: argparse.Namespace, wiring: Wiring) -> int:
    from siaga.flows.approving import open_gates

    gates = open_gates(GateRecords(wiring.engine, wiring.seal_key))
    if args.json:
        print(json.dumps(gates, indent=2))
        return OK
    if not gates:
        out.print("no gate is waiting")
        return OK
    for g in gates:  # a block per gate, whole at any terminal width: ids are there to be copied
        where = f"incident {g['incident']}, run {g['run_id']}" if g["incident"] else f"run {g['run_id']}"
        out.print(f"[bold]{g['step']}[/bold] ({g['action'] or 'no action'}) of {g['runbook']}, {where}")
        out.print(f"  {g['rule']}", markup=False)
        out.print(f"  may approve: {', '.join(g['may_approve']) or 'nobody now'}"
                  + (f"; decided: {', '.join(g['decided'])}" if g["decided"] else ""), markup=False)
        out.print(f"  deadline: {g['deadline']}   in the UI: {g['url']}", markup=False)
        out.print(f"  siaga approve {g['incident'] or g['run_id']} {g['step']} --as ID --code CODE [--reject]", markup=False)
        if args.evidence:
            out.print("", markup=False)
            out.print(g["evidence"], markup=False)
            out.print("", markup=False)
    return OK


def cmd_approve(args: argparse.Namespace, wiring: Wiring) -> int:
    from siaga.flows.approving import answer_gate
    from siaga.logs import configure_logging

    configure_logging(wiring.home, console=False)  # the vote's record goes to the log file; the person reads the answer

    answered = answer_gate(GateRecords(wiring.engine, wiring.seal_key), args.run, args.step, args.as_, args.code, reject=args.reject, comment=args.comment or "")
    gate = answered.gate
    if answered.outcome == "refused":
        err.print(f"[red]refused[/red]: {answered.reason}", markup=True)
        return BAD_INPUT
    verb = "rejection" if args.reject else "approval"
    out.print(f"{args.as_}'s {verb} of step {gate.step_id} of run {gate.run_id} counted", markup=False)
    if gate.state == "open":
        out.print(f"the gate is still open: {answered.reason}", markup=False)
    else:
        out.print(f"the gate is {gate.state}: {gate.decision}", markup=False)
    return OK

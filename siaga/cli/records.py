"""What Siaga recorded: ``siaga ledger | audit | deadlines``."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from rich.table import Table

from siaga.errors import BadInput
from siaga.wiring import Wiring

from .common import OK, RUN_FAILED, err, out

__all__ = ["add_audit_parser", "cmd_audit", "cmd_deadlines", "cmd_ledger"]


def cmd_ledger(args: argparse.Namespace, wiring: Wiring) -> int:
    from siaga.audit.ledger import resolve

    ledger = wiring.ledger
    if args.resolve:
        if args.done == args.retry:
            raise BadInput("say what happened: --done (it took effect) or --retry (it did not)")
        try:
            entry = resolve(ledger, args.resolve, done=args.done, note=args.note or "resolved with siaga ledger")
        except KeyError as exc:
            raise BadInput(str(exc)) from None
        out.print(f"{entry.key}: {entry.state}")
        return OK
    entries = ledger.entries(unsettled=args.unsettled)
    if args.json:
        print(json.dumps([e.__dict__ for e in entries], indent=2, default=str))
        return OK
    if not entries:
        out.print("no call waits to be settled" if args.unsettled else "the ledger is empty")
        return OK
    for e in entries:  # a block per entry, whole at any terminal width: the key is there to be copied
        out.print(e.key, markup=False)
        state = "intent, outcome unknown" if e.state == "intent" else e.state
        out.print(f"  {e.action}, {state} since {e.updated_at:%Y-%m-%d %H:%M:%S} UTC"
                  + (f", run {e.run_id}" if e.run_id else ""), markup=False)
        if e.error:
            out.print(f"  error: {e.error}", markup=False)
        if e.state == "intent":  # its outcome is unknown: a person settles it
            resolve = f"siaga ledger --resolve {shlex.quote(e.key)}"
            out.print(f"  {resolve} --done --note 'what you checked'    # it took effect", markup=False)
            out.print(f"  {resolve} --retry --note 'what you checked'   # it did not", markup=False)
    return OK


def cmd_audit(args: argparse.Namespace, wiring: Wiring) -> int:
    from siaga.audit import read_export, timeline_markdown, verify

    audit = wiring.audit
    if args.audit_command == "verify":
        if args.file:
            try:
                with open(args.file, encoding="utf-8") as lines:
                    records, head = read_export(lines)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise BadInput(f"{args.file} is not a readable audit export: {exc}") from None
            breach = verify(records, head=args.head or head)
            chains = {records[0].chain: (len(records), records[-1].hash)} if records else {}
        else:
            names = [args.incident] if args.incident else audit.chains()
            if args.incident and not audit.count(args.incident):
                raise BadInput(f"no audit records for {args.incident}")
            breach = audit.verify(args.incident, head=args.head)
            chains = {name: audit.head(name) for name in names}
        if breach is not None:
            err.print(f"BROKEN {breach}", markup=False)
            return RUN_FAILED
        for name, (count, head_hash) in chains.items():
            out.print(f"OK {name}: {count} records, head {head_hash}", markup=False)
        if not chains:
            out.print("OK: the audit trail is empty")
        return OK
    if not audit.count(args.incident):
        raise BadInput(f"no audit records for {args.incident}")
    if args.audit_command == "export":
        if args.output and args.output != "-":
            head = audit.export(args.incident, Path(args.output))
            err.print(f"wrote {args.output}: chain {args.incident}, head {head}", markup=False)
        else:
            audit.export(args.incident, sys.stdout)
        return OK
    records = audit.records(args.incident)
    if args.markdown:
        print(timeline_markdown(records, f"Audit trail of {args.incident}"), end="")
        return OK
    from siaga.audit.render import describe

    table = Table("#", "time (UTC)", "event", "run", "by", "details", title=f"Audit trail of {args.incident}")
    for r in records:
        by = " / ".join(part for part in (r.actor, r.channel) if part)
        table.add_row(str(r.seq), f"{r.at:%Y-%m-%d %H:%M:%S}", r.kind, (r.run_id or "")[:8], by, describe(r))
    out.print(table)
    out.print(f"head {records[-1].hash}", markup=False)
    return OK


def add_audit_parser(commands: Any) -> None:
    p = commands.add_parser("audit", help="the hash-chained audit trail: verify, export, show an incident's records")
    audit = p.add_subparsers(dest="audit_command", required=True, metavar="AUDIT_COMMAND")
    q = audit.add_parser("verify", help="check every chain (or one); name the first record that does not match")
    q.add_argument("--incident", metavar="ID", help="only this incident's chain (or run:<flow run id>)")
    q.add_argument("--file", metavar="EXPORT", help="check an export written by `siaga audit export` instead")
    q.add_argument("--head", metavar="HASH", help="the head hash you kept: the chain must end there")
    q = audit.add_parser("export", help="write an incident's chain as JSON lines, ending with its head hash")
    q.add_argument("incident", metavar="INCIDENT", help="incident id (or run:<flow run id>)")
    q.add_argument("-o", "--output", metavar="FILE", help="default: standard output")
    q = audit.add_parser("show", help="an incident's timeline")
    q.add_argument("incident", metavar="INCIDENT", help="incident id (or run:<flow run id>)")
    q.add_argument("--markdown", action="store_true", help="as a Markdown table")
    p.set_defaults(handler=cmd_audit)


def cmd_deadlines(args: argparse.Namespace, wiring: Wiring) -> int:
    """Statement deadlines (comms): per incident and audience, whether they were met."""
    from siaga.report.deadlines import DeadlineRecords

    found = DeadlineRecords(wiring.engine).find(incident_id=args.incident, run_id=args.run, state=args.state)
    if args.json:
        print(json.dumps([d.as_dict() for d in found], indent=2))
        return OK
    table = Table()
    for name in ("incident or run", "runbook", "deadline", "mode", "due (UTC)", "state", "statement sent", "reminded", "escalated"):
        table.add_column(name, overflow="fold")
    for d in found:
        sent = f"{d.met_at:%Y-%m-%d %H:%M:%S} ({d.met_by})" if d.met_at else ""
        state = "missed, sent late" if d.state == "missed" and d.met_at else d.state
        table.add_row(d.incident_id or d.run_id, d.runbook_id, d.name, d.mode, f"{d.due_at:%Y-%m-%d %H:%M:%S}", state,
                      sent, str(d.reminders), str(d.escalated))
    out.print(table)
    return OK

"""The command line: ``siaga validate | schema | actions | runbooks | run | drill | drills | up | receiver | incidents |
incident | alert send | approvals | approve | audit | deadlines | voices | report | sitrep | db | maintenance |
heartbeats`` (the last two in `siaga.quiet_cli`).

Exit codes: 0 ok, 1 the run failed, 2 bad input (a broken runbook, unknown inputs, no stack).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .actions import ActionRegistry
from .catalog import Catalog, RunbookNotFound, find_runbook
from .errors import BadInput, StackUnavailable, Terminated
from .home import prepare_prefect_environment, runbook_folder, siaga_home
from .quiet_cli import add_parsers as add_quiet_parsers
from .runbook import Runbook, RunbookError, inspect_runbook_file, runbook_files
from .runbook.diagnostics import Diagnostic
from .team import find_roster

OK, RUN_FAILED, BAD_INPUT = 0, 1, 2
TERMINATED = 128 + 15  # as a shell reports a process ended by SIGTERM

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _registry() -> ActionRegistry:
    from .integrations import default_registry

    return default_registry()


def _print_diagnostics(diagnostics: Sequence[Diagnostic]) -> None:
    for d in diagnostics:
        # the message and hint quote YAML (`{from: [liaison, commander]}`): escaped, not read as markup
        hint = f" [dim]({escape(d.hint)})[/dim]" if d.hint else ""
        warning = "" if d.is_error else "[yellow]warning[/yellow]: "
        err.print(f"[bold]{escape(str(d.file))}:{d.line}:{d.column}[/bold]: {warning}[cyan]{escape(d.path)}[/cyan]: "
                  f"{escape(d.message)}{hint}", markup=True)


def cmd_validate(args: argparse.Namespace) -> int:
    registry = _registry()
    files = runbook_files(*args.paths)
    results: list[dict[str, Any]] = []
    failed = 0
    for path in files:
        inspection = inspect_runbook_file(path, registry, find_roster(path.parent))
        warnings = [d.as_dict() for d in inspection.warnings]
        if inspection.runbook is None:
            failed += 1
            results.append({"file": str(path), "ok": False, "errors": [d.as_dict() for d in inspection.errors],
                            "warnings": warnings})
        else:
            runbook = inspection.runbook
            results.append({"file": str(path), "ok": True, "runbook": runbook.id, "steps": len(runbook.steps),
                            "warnings": warnings})
        if args.json:
            continue
        _print_diagnostics(inspection.diagnostics)
        if inspection.runbook is not None:
            said = f", {len(warnings)} warnings" if warnings else ""
            out.print(f"[green]ok[/green] {path} ({inspection.runbook.id}, {len(inspection.runbook.steps)} steps{said})")
    if args.json:
        print(json.dumps(results, indent=2))
    elif not files:
        err.print("no runbook files found in " + ", ".join(args.paths))
    elif failed:
        err.print(f"{failed} of {len(files)} runbooks have errors")
    return BAD_INPUT if failed or not files else OK


def cmd_schema(args: argparse.Namespace) -> int:
    from .runbook.schema import runbook_schema

    print(json.dumps(runbook_schema(_registry()), indent=2))
    return OK


def cmd_actions(args: argparse.Namespace) -> int:
    registry = _registry()
    if args.json:
        print(json.dumps([spec.describe() for spec in registry], indent=2))
        return OK
    table = Table("action", "risk", "undo", "in a drill", "parameters", "what it does")
    for spec in registry:
        schema = spec.params.model_json_schema(by_alias=True)
        required = set(schema.get("required", ()))
        params = ", ".join(f"{name}{'' if name in required else '?'}" for name in schema.get("properties", {}))
        table.add_row(spec.name, str(spec.risk), spec.undo or "", str(spec.drill_behaviour), params, spec.summary)
    out.print(table)
    return OK


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


def cmd_run(args: argparse.Namespace) -> int:
    registry = _registry()
    runbook, _ = find_runbook(args.runbook, Path(args.runbooks) if args.runbooks else runbook_folder(), registry)
    inputs = parse_inputs(runbook, args.input or [], drill=args.drill)
    mode = "drill" if args.drill else "live"
    if mode == "live" and not args.as_ and any(step.approval for step in (*runbook.steps, *runbook.on_resolve)):
        raise BadInput(f"{runbook.id} has approval gates: a live run must say who asks for it: pass --as ID "
                       "(your roster id) or set SIAGA_USER; the person who asks never approves its gates")
    if args.as_:
        inputs = {**inputs, "requested_by": args.as_}
    if args.local:
        from .flows.running import run_local

        summary = run_local(runbook, registry, inputs, mode, echo=err.print if args.json else out.print)
        if not args.json:
            _said_where_the_run_is(summary)
    else:
        from .flows.running import run_on_stack

        try:
            summary = run_on_stack(runbook, inputs, mode, echo=None if args.json else out.print)
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


def cmd_runbooks(args: argparse.Namespace) -> int:
    registry = _registry()
    folder = Path(args.runbooks) if args.runbooks else runbook_folder()
    catalog = Catalog.load(folder, registry)
    from .flows.running import last_runs

    states = last_runs(list(catalog.runbooks))
    rows = [
        {
            "id": rb.id,
            "title": rb.title,
            "severity": str(rb.severity),
            "steps": len(rb.steps),
            "drill_schedule": rb.drill.schedule,
            "file": str(catalog.paths[rb.id]),
            "last_run": states.get(rb.id),
        }
        for rb in catalog.runbooks.values()
    ]
    if args.json:
        print(json.dumps({"runbooks": rows, "errors": [d.as_dict() for d in catalog.problems]}, indent=2, default=str))
    else:
        table = Table("runbook", "title", "severity", "steps", "drill schedule", "last run")
        for row in rows:
            last = row["last_run"]
            shown = f"{last['state']} ({last['mode']}, {last['when']})" if last else "never / unknown"
            table.add_row(row["id"], row["title"], row["severity"], str(row["steps"]), row["drill_schedule"] or "", shown)
        out.print(table)
        _print_diagnostics(catalog.problems)
    return BAD_INPUT if catalog.problems else OK


def cmd_prefect_yaml(args: argparse.Namespace) -> int:
    from ruamel.yaml import YAML

    from .flows.deployments import prefect_yaml

    catalog = Catalog.load(Path(args.runbooks) if args.runbooks else runbook_folder(), _registry())
    if catalog.problems:
        _print_diagnostics(catalog.problems)
        return BAD_INPUT
    print("# Generated by `siaga prefect-yaml > prefect.yaml`: one deployment per runbook in runbooks/.")
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.dump(prefect_yaml(catalog.runbooks.values()), sys.stdout)
    return OK


def cmd_approvals(args: argparse.Namespace) -> int:
    from .flows.approving import open_gates

    gates = open_gates()
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


def cmd_approve(args: argparse.Namespace) -> int:
    from .flows.approving import answer_gate
    from .logs import configure_logging

    configure_logging(siaga_home(), console=False)  # the vote's record goes to the log file; the person reads the answer

    answered = answer_gate(args.run, args.step, args.as_, args.code, reject=args.reject, comment=args.comment or "")
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


def cmd_ledger(args: argparse.Namespace) -> int:
    from .ledger import Ledger, resolve
    from .store import engine

    ledger = Ledger(engine())
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


def cmd_drills(args: argparse.Namespace) -> int:
    """Past drills and their scores; with --chart, the trend as an SVG chart."""
    from .drills.chart import chart_svg
    from .drills.records import DrillRecords
    from .store import engine

    drills = DrillRecords(engine()).find(args.runbook, limit=args.limit)
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


def cmd_up(args: argparse.Namespace) -> int:
    from .flows.stack import StackOptions, run_stack

    options = StackOptions(
        host=args.host,
        port=args.port,
        runbooks=Path(args.runbooks) if args.runbooks else runbook_folder(),
        drill=args.drill,
        exit_after_drill=args.exit_after_drill,
        receiver=not args.no_receiver,
        receiver_host=args.receiver_host,
        receiver_port=args.receiver_port,
        max_runs=args.max_runs,
    )
    try:
        return run_stack(options, echo=out.print)
    except Terminated:  # before the stack was up (once up, it stops itself): its server is stopped
        out.print("Siaga stopped (SIGTERM) before it was up.")
        return OK


def cmd_receiver(args: argparse.Namespace) -> int:
    import uvicorn

    from .alerts.receiver import ReceiverConfig, create_app

    folder = Path(args.runbooks) if args.runbooks else runbook_folder()
    catalog = Catalog.load(folder, _registry())
    _print_diagnostics(catalog.problems)
    config = ReceiverConfig.from_env()
    for warning in config.warnings():
        err.print(f"warning: {warning}")
    host, port = args.host or config.host, args.port or config.port
    out.print(f"Alert receiver: http://{host}:{port} ({len(catalog.runbooks)} runbooks from {folder})")
    uvicorn.run(create_app(catalog.runbooks, config), host=host, port=port, log_level="info")
    return OK


def cmd_node(args: argparse.Namespace) -> int:
    from .flows.node import NodeOptions, run_node

    config_host, config_port = os.environ.get("SIAGA_RECEIVER_HOST"), os.environ.get("SIAGA_RECEIVER_PORT")
    options = NodeOptions(
        host=args.host or config_host or "127.0.0.1",
        port=args.port or int(config_port or 8787),
        runbooks=Path(args.runbooks) if args.runbooks else runbook_folder(),
        name=args.name or "",
        inbox_stale=args.inbox_stale,
    )
    return run_node(options, echo=out.print)


def cmd_worker(args: argparse.Namespace) -> int:
    import asyncio

    from .flows.worker import run_worker

    try:
        asyncio.run(run_worker(args.pool, args.queue or [], name=args.name, limit=args.limit, drain_seconds=args.drain))
    except KeyboardInterrupt:
        pass
    return OK


def cmd_deploy(args: argparse.Namespace) -> int:
    import asyncio

    from .flows.deployments import deploy_to_pool

    if not os.environ.get("PREFECT_API_URL"):
        raise StackUnavailable("siaga deploy applies deployments on the Prefect server PREFECT_API_URL names: set it")
    folder = Path(args.runbooks) if args.runbooks else runbook_folder()
    catalog = Catalog.load(folder, _registry())
    _print_diagnostics(catalog.problems)
    names = asyncio.run(deploy_to_pool(catalog.runbooks.values(), args.pool))
    out.print(f"{len(names)} deployments on the work pool {args.pool} (queues live and drill): " + ", ".join(names))
    return OK


def cmd_incidents(args: argparse.Namespace) -> int:
    from .alerts.inbox import losses
    from .incidents.views import list_incidents
    from .store import engine

    store = engine()
    rows = list_incidents(store, args.state, args.limit)
    lost = losses(store)
    if lost.webhooks:  # on stderr, so that --json stays one document
        known = f" ({lost.alerts} of their alerts)" if lost.alerts else ""
        err.print(f"[bold red]{lost.webhooks} webhooks taken in could not be recorded{known}[/bold red]; why:")
        for why, count in lost.reasons:
            err.print(f"  {count} x {why}", markup=False)
        err.print("  (kept in the inbox table with their bodies; not tried again)")
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return OK
    table = Table("rank", "incident", "runbook", "group", "state", "severity", "priority", "alerts", "opened",
                  "resolved", "run", "resolve run")
    for r in rows:
        run = r["flow_run_id"] or (f"not started: {r['run_error'][:60]}" if r["run_error"] else "starting")
        resolving = r["resolve_run_id"] or (
            (f"not started: {r['resolve_error'][:60]}" if r["resolve_error"] else "starting") if r["resolve_due"] else "")
        table.add_row(
            str(r["rank"] or ""), r["id"], r["runbook_id"], r["group_key"], r["state"], r["severity"] or "",
            r["priority"] or "", str(r["alerts"]), f"{r['opened_at']:%Y-%m-%d %H:%M:%S}",
            f"{r['resolved_at']:%Y-%m-%d %H:%M:%S}" if r["resolved_at"] else "", run, resolving,
        )
    out.print(table)
    return OK


# --- siaga audit ---------------------------------------------------------------------------------


def cmd_audit(args: argparse.Namespace) -> int:
    from .audit import read_export, timeline_markdown, trail, verify

    audit = trail()
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
    from .audit.render import describe

    table = Table("#", "time (UTC)", "event", "run", "by", "details", title=f"Audit trail of {args.incident}")
    for r in records:
        by = " / ".join(part for part in (r.actor, r.channel) if part)
        table.add_row(str(r.seq), f"{r.at:%Y-%m-%d %H:%M:%S}", r.kind, (r.run_id or "")[:8], by, describe(r))
    out.print(table)
    out.print(f"head {records[-1].hash}", markup=False)
    return OK


def _add_audit_parser(commands: Any) -> None:
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


# --- end of siaga audit ----------------------------------------------------------------------------




def cmd_deadlines(args: argparse.Namespace) -> int:
    """Statement deadlines (comms): per incident and audience, whether they were met."""
    from .deadlines import DeadlineRecords
    from .store import engine

    found = DeadlineRecords(engine()).find(incident_id=args.incident, run_id=args.run, state=args.state)
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


# --- siaga voices -------------------------------------------------------------------------------

VOICE_ACTIONS = ("draft", "dismiss", "answered")


def cmd_voices(args: argparse.Namespace) -> int:
    """Voices to answer: listed by time left (taking new ones in first), drafted, dismissed, answered."""
    from datetime import UTC, datetime

    from .incident_report import find_incident_id
    from .report.gather import learn_environment_secrets
    from .store import engine
    from .voices.intake import take_in
    from .voices.records import VoiceRecords

    learn_environment_secrets()  # a mention may quote a credential back: what is printed is redacted
    store = engine()
    words = list(args.words)
    action = words.pop(0) if words and words[0] in VOICE_ACTIONS else None
    actor = args.as_ or os.environ.get("SIAGA_USER")
    if action in ("dismiss", "answered"):
        if not words:
            raise BadInput(f"siaga voices {action}: name the voices (ids as `siaga voices` lists them)")
        if not actor:
            raise BadInput(f"siaga voices {action}: say who you are (--as PERSON, or SIAGA_USER): the audit trail keeps it")
        records = VoiceRecords(store)
        wanted = records.resolve(words)
        if action == "dismiss":
            changes = records.dismiss(wanted, reason=args.reason or "", by=actor)
        else:
            changes = records.answer(wanted, by=actor, url=args.url)
        for change in changes:
            (out if change.done else err).print(change.said, markup=False)
        return OK if all(c.done for c in changes) else BAD_INPUT
    if len(words) > 1:
        raise BadInput(f"siaga voices: one incident at most, got {' '.join(words)}")
    folder = Path(args.runbooks) if args.runbooks else runbook_folder()
    catalog = Catalog.load(folder, _registry())
    incident = find_incident_id(store, words[0]) if words else None
    take_in(store, catalog.runbooks, roster=catalog.roster)
    if action == "draft":
        return _draft_voices(store, catalog, incident, args.json)
    return _list_voices(store, incident, args.all, args.json, datetime.now(UTC))


def _list_voices(store: Any, incident: str | None, include_closed: bool, as_json: bool, now: Any) -> int:
    from rich.text import Text

    from .secrets import REDACTOR
    from .voices.views import excerpt, list_voices, time_left, voice_json

    listed = list_voices(store, incident_id=incident, include_closed=include_closed, now=now)
    if as_json:
        print(REDACTOR.text(json.dumps([voice_json(v, now) for found in listed for v in found.voices], indent=2)))
        return OK
    if not listed:
        out.print(f"no voices of {incident}" if incident else "no voices: no incident of a runbook with `voices:` "
                  "has had a mention", markup=False)
        return OK
    for found in listed:
        late = f", resolved {found.resolved_at:%Y-%m-%d %H:%M} UTC" if found.resolved_at else ""
        out.print(f"[bold]{found.incident_id}[/bold] {found.runbook_id} ({found.state}{late}): "
                  f"{found.open} open, {found.overdue} overdue, {found.closed} closed", highlight=False)
        if found.voices:
            table = Table(box=None, pad_edge=False)
            cells = {"voice": [v.id for v in found.voices], "left": [time_left(v, now) for v in found.voices],
                     "platform": [v.platform or "-" for v in found.voices],
                     "state": [v.state + (" (late)" if v.late else "") for v in found.voices]}
            widths = {name: max(len(name), *map(len, values)) for name, values in cells.items()}
            for name, width in widths.items():  # whole: ids are there to be copied
                table.add_column(name, no_wrap=True, min_width=width)
            table.add_column("author: text", no_wrap=True)
            room = max(12, out.width - sum(widths.values()) - 2 * len(widths))
            for row, v in enumerate(found.voices):
                said = f"{v.problem}: {v.text}" if v.state == "refused" else f"{v.author or '-'}: {v.text}"
                if v.problem and v.is_open:  # its approved reply could not be posted: why
                    said = f"NOT POSTED ({v.problem}) {said}"
                left = v.left(now)
                table.add_row(*(Text(cells[name][row]) for name in cells), Text(excerpt(REDACTOR.text(said), room)),
                              style="red" if left is not None and left.total_seconds() < 0 else None)
            out.print(table)
        hidden = found.closed if not include_closed else 0
        if hidden:
            out.print(f"  `siaga voices {found.incident_id} --all` shows the {hidden} closed", markup=False)
    return OK


def _draft_voices(store: Any, catalog: Catalog, incident: str | None, as_json: bool) -> int:

    from .runbook.loader import read_templates
    from .secrets import REDACTOR
    from .voices.drafting import draft_replies

    done = draft_replies(store, catalog.runbooks, read_templates(catalog.folder), incident_id=incident)
    if as_json:
        print(REDACTOR.text(json.dumps({"drafts": [d.as_dict() for d in done.drafts], "problems": done.problems},
                                       indent=2)))
    else:
        for d in done.drafts:
            out.print(f"[bold]{d.id}[/bold] {d.incident_id} {escape(d.topic)} {d.language}: {len(d.voices)} voice(s), "
                      f"text sha256 {d.text_hash}", highlight=False)
            out.print(REDACTOR.text(d.text), markup=False)
            out.print("  answers " + " ".join(d.voices), markup=False)
        if not done.drafts and not done.problems:
            out.print("nothing to draft: no voice is new or drafted", markup=False)
    for problem in done.problems:
        err.print(problem, markup=False)
    return BAD_INPUT if done.problems else OK


def cmd_db(args: argparse.Namespace) -> int:
    from sqlalchemy import make_url

    from .store import database_url, migrate

    url = database_url()
    before, after = migrate(url)
    where = make_url(url).render_as_string(hide_password=True)
    if before == after:
        out.print(f"store {where}: already at migration {after}")
    else:
        out.print(f"store {where}: migrated from {before or 'nothing'} to {after}")
    return OK


# --- siaga incident ID ------------------------------------------------------------------------


def cmd_incident(args: argparse.Namespace) -> int:
    import os

    from .incident_report import incident_report, labels_summary
    from .runbook.durations import human_duration
    from .store import engine

    report = incident_report(engine(), args.id, os.environ.get("PREFECT_API_URL"))
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return OK
    opened = f"{report['opened_at']:%Y-%m-%d %H:%M:%S} UTC"
    resolved = f"{report['resolved_at']:%Y-%m-%d %H:%M:%S} UTC" if report["resolved_at"] else "not yet"
    out.print(f"[bold]{report['id']}[/bold]  {report['runbook_id']}  group {report['group_key']}")
    out.print(f"state      {report['state']}  ({'lasted' if report['resolved_at'] else 'open for'} {human_duration(report['age_seconds'])})")
    out.print(f"severity   {report['severity'] or '-'}  priority {report['priority'] or '-'}")
    out.print(f"opened     {opened}\nresolved   {resolved}")
    out.print(f"inputs     {json.dumps(report['inputs'])}")
    run = report["run"]
    if run is None:
        out.print(f"run        not started{': ' + report['run_error'] if report['run_error'] else ' yet'}")
    else:
        out.print(f"run        {run['id']}  {run.get('state') or ''}\n           {run['url']}")
        if run.get("revision"):
            out.print(f"revision   {run['revision'][:12]}  (of the runbook, as the run was started with it)")
        if run.get("error"):
            out.print(f"           [yellow]{run['error']}[/yellow]")
    resolving = report["resolve_run"]
    if resolving is not None:
        out.print(f"resolve    {resolving['id']}  {resolving.get('state') or ''}\n           {resolving['url']}")
        if resolving.get("revision"):
            out.print(f"revision   {resolving['revision'][:12]}")
        if resolving.get("error"):
            out.print(f"           [yellow]{resolving['error']}[/yellow]")
    elif report["resolve_due"]:
        why = report["resolve_error"]
        out.print(f"resolve    not started{': ' + why if why else ' yet'}")
    if report["gates"]:
        gates = Table("step", "state", "approved by", "rejected by", "deadline (UTC)", "decided (UTC)", "run",
                      title=f"{len(report['gates'])} approval gates")
        for g in report["gates"]:
            gates.add_row(g["step"], g["state"], ", ".join(g["approved_by"]), ", ".join(g["rejected_by"]),
                          f"{g['deadline']:%Y-%m-%d %H:%M:%S}", f"{g['decided_at']:%H:%M:%S}" if g["decided_at"] else "",
                          g["url"])
        out.print(gates)
    if report["deadlines"]:
        statements = Table("statement", "due (UTC)", "state", "sent (UTC)", "reminded", "escalated",
                           title=f"{len(report['deadlines'])} statement deadlines")
        for d in report["deadlines"]:
            sent = f"{d['met_at'][:19].replace('T', ' ')} ({d['met_by']})" if d["met_at"] else ""
            statements.add_row(d["name"], d["due_at"][:19].replace("T", " "), d["state"], sent, str(d["reminders"]),
                               str(d["escalated"]))
        out.print(statements)
    table = Table("source", "alert", "fingerprint", "status", "starts at", "received", "labels", title=f"{len(report['alert_list'])} alerts")
    for a in report["alert_list"]:
        table.add_row(
            a["source"], a["labels"].get("alertname", ""), a["fingerprint"],
            a["status"] + (" (resolved)" if a["resolved_at"] else ""),
            f"{a['starts_at']:%Y-%m-%d %H:%M:%S}" if a["starts_at"] else "", f"{a['received_at']:%H:%M:%S}",
            labels_summary(a["labels"]),
        )
    out.print(table)
    out.print("[bold]timeline[/bold]")
    for entry in report["timeline"]:
        out.print(f"  {entry['at']:%Y-%m-%d %H:%M:%S}  {entry['event']}", markup=False)
    if report["next"]:
        out.print("[bold]what a person must do next[/bold]")
        for item in report["next"]:  # whole lines: keys are there to be copied
            out.print(f"  {item}", markup=False, soft_wrap=True)
    return OK


# --- siaga report ------------------------------------------------------------------------------


def cmd_report(args: argparse.Namespace) -> int:
    """The post-incident report of an incident (or run), built from its audit trail."""
    import base64
    import hashlib

    from .audit import AuditTrail
    from .report import report_html, report_markdown, tell, timeline_svg
    from .report.gather import gather, learn_environment_secrets
    from .secrets import REDACTOR
    from .store import engine

    learn_environment_secrets()
    store = engine()
    facts = gather(store, args.incident, folder=Path(args.runbooks) if args.runbooks else None)
    story = tell(facts)
    output = Path(args.output) if args.output and args.output != "-" else None
    written: list[Path] = []
    if args.format == "html":
        text = REDACTOR.text(report_html(story))
    else:
        svg = REDACTOR.text(timeline_svg(story))
        if output is None:
            picture = "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")
        else:
            picture_path = output.with_name(f"{output.stem}.timeline.svg")
            picture_path.write_text(svg, encoding="utf-8")
            written.append(picture_path)
            picture = picture_path.name
        text = REDACTOR.text(report_markdown(story, picture))
    if output is None:
        sys.stdout.write(text)
        return OK
    output.write_text(text, encoding="utf-8")
    written.insert(0, output)
    run_id = facts.chain.removeprefix("run:") if facts.chain.startswith("run:") else None
    AuditTrail(store).append(
        "report.generated", chain=facts.chain, incident_id=facts.incident.id if facts.incident else None,
        run_id=run_id, actor=os.environ.get("SIAGA_USER"), channel="cli",
        data={"format": args.format, "files": [str(p) for p in written], "records": len(facts.records),
              "head": facts.head, "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()},
    )
    err.print(f"wrote {', '.join(str(p) for p in written)}: {len(facts.records)} records up to head {facts.head}",
              markup=False)
    return OK


# --- siaga sitrep ------------------------------------------------------------------------------


def cmd_sitrep(args: argparse.Namespace) -> int:
    """A situation report of an open incident: shown, or (--send) sent to the liaison and commander."""
    from .report.gather import learn_environment_secrets
    from .store import engine

    learn_environment_secrets()
    folder = Path(args.runbooks) if args.runbooks else runbook_folder()
    if args.send:
        import asyncio

        from .flows.secret_blocks import prefect_secret
        from .flows.sitreps import send_sitrep

        done = asyncio.run(send_sitrep(
            args.incident, folder=folder, actor=os.environ.get("SIAGA_USER"), channel="cli",
            secret_source=prefect_secret if os.environ.get("PREFECT_API_URL") else None,
        ))
        report, sent = done["sitrep"], done["sent"]
    else:
        from .report import tell
        from .report.gather import gather
        from .report.sitrep import build_sitrep
        from .secrets import REDACTOR

        report = build_sitrep(tell(gather(engine(), args.incident, folder=folder))).as_dict()
        report["text"] = REDACTOR.text(report["text"])
        sent = []
    if args.json:
        print(json.dumps(report | {"sent": sent}, indent=2))
        return OK
    print(report["text"])
    if sent:
        out.print("sent to " + ", ".join(f"{s['to']} ({s['channel']})" for s in sent), markup=False)
    return OK


# --- siaga alert send -------------------------------------------------------------------------


def cmd_alert_send(args: argparse.Namespace) -> int:
    from .alerts.sending import send_alert

    try:
        answer = send_alert(Path(args.file), args.to, args.source, secret=args.secret, token=args.token)
    except ConnectionError as exc:
        err.print(str(exc), markup=False)
        return RUN_FAILED
    (out if answer.ok else err).print(f"{answer.status} {answer.reason}", markup=False)
    print(json.dumps(answer.body, indent=2) if not isinstance(answer.body, str) else answer.body)
    return OK if answer.ok else RUN_FAILED


def _at_least_one(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="siaga", description="Crisis runbooks, executable, rehearsable and accountable.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("validate", help="check runbook files or folders; every error with file:line:col")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--json", action="store_true", help="machine-readable results")
    p.set_defaults(handler=cmd_validate)

    p = commands.add_parser("schema", help="print the runbook JSON Schema (for editors)")
    p.set_defaults(handler=cmd_schema)

    p = commands.add_parser("actions", help="list the actions steps can call")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_actions)

    p = commands.add_parser("runbooks", help="list the runbook library with each one's last run")
    p.add_argument("--runbooks", metavar="DIR", help="runbook folder (default $SIAGA_RUNBOOKS or ./runbooks)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_runbooks)

    for name, drill in (("run", False), ("drill", True)):
        p = commands.add_parser(name, help="run a runbook" if not drill else "rehearse a runbook (run --drill)")
        p.add_argument("runbook", metavar="RUNBOOK", help="a runbook id from the runbook folder, or a file path")
        p.add_argument("--input", "-i", action="append", metavar="NAME=VALUE", help="an input value (repeatable)")
        if not drill:
            p.add_argument("--drill", action="store_true", help="a drill: risky actions are recorded, messages marked [DRILL]")
        p.add_argument("--local", action="store_true", help="run in this process instead of on the stack of `siaga up`")
        p.add_argument("--runbooks", metavar="DIR", help="runbook folder (default $SIAGA_RUNBOOKS or ./runbooks)")
        p.add_argument("--json", action="store_true", help="print the run summary as JSON")
        p.add_argument("--as", dest="as_", metavar="ID", default=os.environ.get("SIAGA_USER"),
                       help="who asks for the run (your roster id; default $SIAGA_USER): never its approver")
        p.set_defaults(handler=cmd_run, drill=drill)

    p = commands.add_parser("drills", help="past drills and their scores (the team's readiness over time)")
    p.add_argument("runbook", metavar="RUNBOOK", nargs="?", help="only this runbook's drills")
    p.add_argument("--chart", metavar="FILE.svg", help="write a chart of scores and key times over time")
    p.add_argument("--limit", type=int, default=500, help="the last N drills (default 500)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_drills)

    p = commands.add_parser("approvals", help="the approval gates waiting for people")
    p.add_argument("--evidence", action="store_true", help="with each gate, what it would run, with exactly which values")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_approvals)

    p = commands.add_parser("approve", help="answer an approval gate (as in the UI's Resume dialog)")
    p.add_argument("run", metavar="RUN_OR_INCIDENT", help="the flow run id, or the incident id")
    p.add_argument("step", metavar="STEP", help="the gated step's id")
    p.add_argument("--as", dest="as_", required=True, metavar="ID", help="your roster id")
    p.add_argument("--code", required=True, help="your APPROVE code (or, with --reject, your REJECT code)")
    p.add_argument("--reject", action="store_true", help="reject the step (with your reject code)")
    p.add_argument("--comment", help="why (kept in the record)")
    p.set_defaults(handler=cmd_approve)

    p = commands.add_parser("ledger", help="the side-effect ledger: what changed the world, and calls of unknown outcome")
    p.add_argument("--unsettled", action="store_true", help="only calls whose outcome is unknown")
    p.add_argument("--resolve", metavar="KEY", help="settle a call of unknown outcome (with --done or --retry)")
    p.add_argument("--done", action="store_true", help="with --resolve: it took effect; never call it again")
    p.add_argument("--retry", action="store_true", help="with --resolve: it did not; the step may call again")
    p.add_argument("--note", help="with --resolve: what you checked")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_ledger)

    p = commands.add_parser("prefect-yaml", help="print prefect.yaml: the runbook deployments for `prefect deploy --all`")
    p.add_argument("--runbooks", metavar="DIR", help="runbook folder (default $SIAGA_RUNBOOKS or ./runbooks)")
    p.set_defaults(handler=cmd_prefect_yaml)

    p = commands.add_parser("up", help="start the embedded stack: Prefect server and UI, and a runner for every runbook")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=4200)
    p.add_argument("--runbooks", metavar="DIR", help="runbook folder (default $SIAGA_RUNBOOKS or ./runbooks)")
    p.add_argument("--drill", metavar="RUNBOOK", help="once up, start a drill of this runbook and follow it")
    p.add_argument("--exit-after-drill", action="store_true", help="stop the stack when that drill ends")
    p.add_argument("--receiver-host", default="127.0.0.1", help="where the alert receiver listens")
    p.add_argument("--receiver-port", type=int, default=8787)
    p.add_argument("--no-receiver", action="store_true", help="do not start the alert receiver")
    p.add_argument("--max-runs", type=_at_least_one, default=20, metavar="N",
                   help="how many runs the runner runs at once (default 20)")
    p.set_defaults(handler=cmd_up)

    p = commands.add_parser("receiver", help="serve the alert receiver alone (webhooks in, incidents and runs out)")
    p.add_argument("--host", help="default $SIAGA_RECEIVER_HOST or 127.0.0.1")
    p.add_argument("--port", type=int, help="default $SIAGA_RECEIVER_PORT or 8787")
    p.add_argument("--runbooks", metavar="DIR", help="runbook folder (default $SIAGA_RUNBOOKS or ./runbooks)")
    p.set_defaults(handler=cmd_receiver)

    p = commands.add_parser("node", help="cluster mode: join the Prefect server PREFECT_API_URL names, serve "
                            "the receiver, run the singletons once across nodes (PostgreSQL store)")
    p.add_argument("--host", help="where the receiver listens (default $SIAGA_RECEIVER_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="default $SIAGA_RECEIVER_PORT or 8787")
    p.add_argument("--runbooks", metavar="DIR", help="runbook folder (default $SIAGA_RUNBOOKS or ./runbooks)")
    p.add_argument("--name", help="this node's name in its messages (default host:port)")
    p.add_argument("--inbox-stale", type=float, default=30.0, metavar="SECONDS",
                   help="record webhooks a dead receiver accepted after this long (default 30)")
    p.set_defaults(handler=cmd_node)

    p = commands.add_parser("worker", help="a Prefect process worker whose runs start from a warm process")
    p.add_argument("--pool", default="siaga", help="the process work pool (default siaga)")
    p.add_argument("--queue", action="append", metavar="NAME",
                   help="a queue to poll (repeat; `live`, or `drill` where drill credentials live; default all)")
    p.add_argument("--name", help="the worker's name in Prefect")
    p.add_argument("--limit", type=_at_least_one, metavar="N", help="at most N runs at once")
    p.add_argument("--drain", type=float, default=300.0, metavar="SECONDS",
                   help="on SIGTERM or Ctrl-C, take no new runs and wait this long for those going (default 300;"
                        " a second signal stops at once)")
    p.set_defaults(handler=cmd_worker)

    p = commands.add_parser("deploy", help="apply every runbook's deployments onto a process work pool "
                            "(live and drill queues), as `prefect deploy --all`")
    p.add_argument("--pool", default="siaga")
    p.add_argument("--runbooks", metavar="DIR", help="runbook folder (default $SIAGA_RUNBOOKS or ./runbooks)")
    p.set_defaults(handler=cmd_deploy)

    p = commands.add_parser("incidents", help="list incidents opened by alerts: open ones ranked, then resolved ones")
    p.add_argument("--state", choices=["open", "resolved"])
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_incidents)

    _add_audit_parser(commands)
    add_quiet_parsers(commands)  # siaga maintenance ..., siaga heartbeats

    p = commands.add_parser("deadlines", help="statement deadlines per incident and audience, and whether they were met")
    p.add_argument("--incident", help="only this incident's")
    p.add_argument("--run", help="only this run's (runs without an incident)")
    p.add_argument("--state", choices=["pending", "met", "missed"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_deadlines)

    p = commands.add_parser(
        "voices", help="voices to answer (mentions with a deadline): list, draft replies, dismiss, mark answered",
        usage="siaga voices [INCIDENT] [--all] [--json]\n"
              "       siaga voices draft [INCIDENT] [--json]\n"
              "       siaga voices dismiss ID [ID ...] --reason TEXT [--as PERSON]\n"
              "       siaga voices answered ID [ID ...] [--as PERSON] [--url URL]",
    )
    p.add_argument("words", nargs="*", metavar="ARGS", help="an incident (or a unique start of its id); or draft, "
                   "dismiss or answered and what they act on")
    p.add_argument("--all", action="store_true", help="also the answered, dismissed and refused voices")
    p.add_argument("--json", action="store_true")
    p.add_argument("--reason", help="why a dismissed voice is owed no answer (dismiss)")
    p.add_argument("--as", dest="as_", metavar="PERSON", help="who does it (default: $SIAGA_USER)")
    p.add_argument("--url", help="the reply's address (answered)")
    p.add_argument("--runbooks", metavar="DIR", help="the runbook folder (default: $SIAGA_RUNBOOKS or ./runbooks)")
    p.set_defaults(handler=cmd_voices)

    p = commands.add_parser("db", help="Siaga's own store (SIAGA_DATABASE_URL): migrations")
    db = p.add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="bring the store to the newest migration (first use does it too)").set_defaults(handler=cmd_db)
    p = commands.add_parser("incident", help="one incident in detail: alerts, run, gates, resolve run, timeline")
    p.add_argument("id", metavar="ID", help="an incident id (or a unique start of one), as `siaga incidents` lists")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_incident)

    p = commands.add_parser("report", help="the post-incident report of an incident, built from its audit trail")
    p.add_argument("incident", metavar="INCIDENT", help="an incident id (or a unique start of one), or run:<flow run id>")
    p.add_argument("--format", choices=["md", "html"], default="md", help="Markdown (default) or one HTML page")
    p.add_argument("-o", "--output", metavar="FILE", help="default: standard output; Markdown puts the timeline "
                   "picture in FILE's stem + .timeline.svg beside it (on standard output, inline as a data: URI)")
    p.add_argument("--runbooks", metavar="DIR", help="runbook folder (default $SIAGA_RUNBOOKS or ./runbooks)")
    p.set_defaults(handler=cmd_report)

    p = commands.add_parser("sitrep", help="a situation report of an incident: conditions, actions, needs")
    p.add_argument("incident", metavar="INCIDENT", help="an incident id (or a unique start of one), or run:<flow run id>")
    p.add_argument("--send", action="store_true", help="send it to the liaison and commander (comms.sitrep.to) "
                   "through their roster channels, and record it in the trail")
    p.add_argument("--runbooks", metavar="DIR", help="runbook folder (default $SIAGA_RUNBOOKS or ./runbooks)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_sitrep)

    p = commands.add_parser("alert", help="alerts by hand: `siaga alert send FILE --to URL` posts a saved webhook payload")
    alert_commands = p.add_subparsers(dest="alert_command", required=True, metavar="SUBCOMMAND")
    p = alert_commands.add_parser("send", help="post a saved payload to a receiver, signed as its source signs it")
    p.add_argument("file", metavar="FILE", help="the webhook body (JSON), e.g. examples/alerts/*.json")
    p.add_argument("--to", required=True, metavar="URL", help="the hook, e.g. http://127.0.0.1:8787/hooks/alertmanager")
    p.add_argument("--source", choices=["alertmanager", "grafana", "pagerduty", "generic", "sns"],
                   help="how to prove it (default: from the URL's /hooks/SOURCE; unknown names are generic)")
    p.add_argument("--secret", metavar="REF", help="HMAC key: secret://NAME or an environment variable's name "
                   "(default: the receiver's own variable for the source)")
    p.add_argument("--token", metavar="REF", help="bearer token: secret://NAME or an environment variable's name "
                   "(default $SIAGA_ALERTMANAGER_TOKEN / $SIAGA_GRAFANA_TOKEN)")
    p.set_defaults(handler=cmd_alert_send)
    return parser


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prepare_prefect_environment()
    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    try:
        return _handle(args)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _handle(args: argparse.Namespace) -> int:
    try:
        return int(args.handler(args))
    except BrokenPipeError:  # `siaga schema | head`
        sys.stderr.close()
        return OK
    except RunbookError as exc:
        _print_diagnostics(exc.diagnostics)
        return BAD_INPUT
    except (BadInput, RunbookNotFound) as exc:
        err.print(str(exc), markup=False)
        return BAD_INPUT
    except KeyboardInterrupt:
        return 130
    except Terminated:
        err.print(f"siaga {args.command}: stopped (SIGTERM)", markup=False)
        return TERMINATED


if __name__ == "__main__":
    sys.exit(main())

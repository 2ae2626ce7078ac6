"""Incidents and alerts: ``siaga incidents | incident | alert send``."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from rich.table import Table

from siaga.wiring import Wiring

from .common import OK, RUN_FAILED, err, out

__all__ = ["cmd_alert_send", "cmd_incident", "cmd_incidents"]


def cmd_incidents(args: argparse.Namespace, wiring: Wiring) -> int:
    from siaga.alerts.inbox import losses
    from siaga.incidents.views import list_incidents

    store = wiring.engine
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


def cmd_incident(args: argparse.Namespace, wiring: Wiring) -> int:
    from siaga.flows.links import read_run
    from siaga.report.incident import incident_report, labels_summary
    from siaga.runbook.durations import human_duration

    settings = wiring.settings
    report = incident_report(wiring.engine, args.id, settings.prefect_api_url, ui_url=settings.prefect_ui_url,
                             read_run=lambda run_id: read_run(run_id, settings.prefect_api_url))
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


def cmd_alert_send(args: argparse.Namespace, wiring: Wiring) -> int:
    from siaga.alerts.sending import send_alert

    try:
        answer = send_alert(Path(args.file), args.to, args.source, secret=args.secret, token=args.token,
                            settings=wiring.settings, environ=os.environ)
    except ConnectionError as exc:
        err.print(str(exc), markup=False)
        return RUN_FAILED
    (out if answer.ok else err).print(f"{answer.status} {answer.reason}", markup=False)
    print(json.dumps(answer.body, indent=2) if not isinstance(answer.body, str) else answer.body)
    return OK if answer.ok else RUN_FAILED

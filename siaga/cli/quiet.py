"""The command line of what keeps incidents quiet or notices silence: ``siaga maintenance start |
list | show | end`` (maintenance windows) and ``siaga heartbeats`` (the signals expected).

Windows live in Siaga's store, so a window opened here holds alerts in every receiver on that
store; the receiver releases what a window held within seconds of its end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from siaga.errors import BadInput
from siaga.home import stack_file
from siaga.runbook.diagnostics import did_you_mean
from siaga.runbook.durations import format_duration, parse_duration
from siaga.wiring import Wiring

from .common import OK, out

__all__ = ["add_parsers"]


def _when(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}" if value else ""


def _folder(args: argparse.Namespace, wiring: Wiring) -> Path:
    """--runbooks, else $SIAGA_RUNBOOKS, else the folder the running `siaga up` serves, else ./runbooks."""
    if args.runbooks:
        return Path(args.runbooks)
    noted = stack_file(wiring.settings.home)
    if wiring.settings.runbooks is None and noted.is_file():
        with contextlib.suppress(OSError, ValueError, TypeError):
            served = Path(json.loads(noted.read_text())["runbooks"])
            if served.is_dir():
                return served
    return wiring.folder()


def _runbooks(args: argparse.Namespace, wiring: Wiring) -> dict[str, Any]:
    return wiring.catalog(_folder(args, wiring)).runbooks


def _pairs(pairs: list[str]) -> dict[str, str]:
    found = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise BadInput(f"--match {pair!r}: write it as label=value")
        found[name.strip()] = value
    return found


def _start_time(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(f"--at {text!r}: not a time; write it as 2026-03-01T02:00+07:00") from None
    if moment.tzinfo is None:
        raise BadInput(f"--at {text!r}: say the time zone, e.g. 2026-03-01T02:00+07:00 or ...Z")
    return moment.astimezone(UTC)


def _who(args: argparse.Namespace, wiring: Wiring) -> str:
    who = args.as_ or wiring.settings.user
    if not who:
        raise BadInput("say who you are: pass --as ID (your roster id) or set SIAGA_USER; the audit trail keeps it")
    return str(who)


def cmd_maintenance(args: argparse.Namespace, wiring: Wiring) -> int:
    from siaga.incidents import maintenance

    store = wiring.engine
    if args.maintenance_command == "start":
        return _start(args, wiring, maintenance)
    if args.maintenance_command == "end":
        try:
            window = maintenance.end_window(store, args.id, _who(args, wiring))
        except maintenance.WindowError as exc:
            raise BadInput(str(exc)) from None
        _print(args, window, f"maintenance window {window['id']} ended; the receiver routes the alerts it held "
                             "that are still firing within seconds")
        return OK
    if args.maintenance_command == "show":
        found = maintenance.get_window(store, args.id)
        if found is None:
            raise BadInput(f"no maintenance window {args.id} (`siaga maintenance list --all` lists them)")
        if args.json:
            print(json.dumps(found, indent=2, default=str))
            return OK
        _describe(found)
        table = Table("alert", "source", "runbook", "group", "held at (UTC)", "resolved", "released", "incident")
        for a in found["alert_list"]:
            table.add_row(str(a["alert_id"]), a["source"], a["runbook_id"], a["group_key"], _when(a["at"]),
                          _when(a["resolved_at"]), _when(a["released_at"]), a["incident_id"] or "")
        out.print(table)
        return OK
    windows = maintenance.list_windows(store, ended=args.all)
    if args.json:
        print(json.dumps(windows, indent=2, default=str))
        return OK
    if not windows:
        out.print("no maintenance window is active or to come" + ("" if args.all else " (--all shows ended ones)"))
        return OK
    table = Table("window", "state", "covers", "from (UTC)", "to (UTC)", "reason", "by", "held", "released")
    for w in windows:
        table.add_row(w["id"], w["state"] + (" (drill)" if w["drill"] else ""), _covers(w), _when(w["starts_at"]),
                      _when(w["ends_at"]), w["reason"], w["opened_by"] or "", str(w["suppressed"]), str(w["released"]))
    out.print(table)
    return OK


def _start(args: argparse.Namespace, wiring: Wiring, maintenance: Any) -> int:
    store = wiring.engine
    who = _who(args, wiring)
    match = _pairs(args.match or [])
    runbooks = sorted(set(args.runbook or []))
    if not (runbooks or match or args.all):
        raise BadInput("say what the window covers: --runbook ID, --match label=value, or --all (every alert)")
    if runbooks:
        known = _runbooks(args, wiring)
        for name in runbooks:
            if name not in known:
                hint = did_you_mean(name, known)
                raise BadInput(f"no runbook `{name}` in the runbook folder" + (f": {hint}" if hint else ""))
    try:
        length = parse_duration(args.for_)
    except ValueError as exc:
        raise BadInput(f"--for: {exc}") from None
    starts = _start_time(args.at)
    try:
        window = maintenance.open_window(store, runbooks=runbooks, match=match, starts_at=starts, ends_at=starts + length,
                                         reason=args.reason, by=who, drill=args.drill)
    except maintenance.WindowError as exc:
        raise BadInput(str(exc)) from None
    _print(args, window, f"maintenance window {window['id']} set for {format_duration(length)}: "
                         f"{_covers(window)}; `siaga maintenance end {window['id']}` ends it early")
    return OK


def _covers(window: dict[str, Any]) -> str:
    runbooks = ", ".join(window["runbooks"]) or "every runbook"
    labels = ", ".join(f"{k}={v}" for k, v in sorted(window["match"].items()))
    return runbooks + (f" (alerts with {labels})" if labels else "")


def _describe(window: dict[str, Any]) -> None:
    out.print(f"[bold]{window['id']}[/bold]  {window['state']}{' (drill)' if window['drill'] else ''}")
    out.print(f"covers     {_covers(window)}", markup=False)
    out.print(f"from       {_when(window['starts_at'])} UTC to {_when(window['ends_at'])} UTC", markup=False)
    out.print(f"reason     {window['reason']} (set by {window['opened_by']}"
              + (f", ended by {window['ended_by']})" if window["ended_by"] else ")"), markup=False)


def _print(args: argparse.Namespace, window: dict[str, Any], line: str) -> None:
    if args.json:
        print(json.dumps(window, indent=2, default=str))
    else:
        out.print(line, markup=False)


def cmd_heartbeats(args: argparse.Namespace, wiring: Wiring) -> int:
    from siaga.incidents.heartbeats import heartbeat_rows

    rows = heartbeat_rows(wiring.engine, _runbooks(args, wiring))
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return OK
    if not rows:
        out.print("no heartbeat is watched yet (a receiver watches them once it runs)")
        return OK
    table = Table("state", "signal", "group", "every", "last seen (UTC)", "quiet since (UTC)", "runbooks")
    for r in rows:
        match = ", ".join(f"{k}={v}" for k, v in sorted(r["labels"].items()) if not k.startswith("siaga_"))
        table.add_row(r["state"], f"{r['source'] or '(no runbook in the folder expects it)'} {match}", r["group_key"],
                      r["every"] or "", _when(r["last_seen_at"]), _when(r["quiet_since"]) if r["state"] == "quiet" else "",
                      ", ".join(r["runbooks"]))
    out.print(table)
    return OK


def add_parsers(commands: Any) -> None:
    """``siaga maintenance ...`` and ``siaga heartbeats``."""
    p = commands.add_parser("maintenance", help="maintenance windows: alerts they cover open no incident until they end")
    sub = p.add_subparsers(dest="maintenance_command", required=True, metavar="SUBCOMMAND")
    q = sub.add_parser("start", help="open a window now (or --at a time) for --for")
    q.add_argument("--runbook", action="append", metavar="ID", help="a runbook it covers (repeatable)")
    q.add_argument("--match", action="append", metavar="LABEL=VALUE", help="only alerts with this label (repeatable)")
    q.add_argument("--all", action="store_true", help="every runbook (with no --match: every alert)")
    q.add_argument("--for", dest="for_", required=True, metavar="DURATION", help="how long: 30m, 2h, 1h30m")
    q.add_argument("--at", metavar="TIME", help="when it starts (ISO 8601 with a zone); default now")
    q.add_argument("--reason", required=True, help="why: shown in listings and kept in the audit trail")
    q.add_argument("--drill", action="store_true", help="a drill's window (so the drill's alerts page nobody)")
    q.add_argument("--runbooks", metavar="DIR", help="runbook folder (default $SIAGA_RUNBOOKS, the one `siaga up` serves, or ./runbooks)")
    q.add_argument("--as", dest="as_", metavar="ID", help="who sets it (default $SIAGA_USER)")
    q.add_argument("--json", action="store_true")
    q = sub.add_parser("list", help="the windows active or to come")
    q.add_argument("--all", action="store_true", help="ended ones too")
    q.add_argument("--json", action="store_true")
    q = sub.add_parser("show", help="one window and the alerts it held back")
    q.add_argument("id", metavar="ID")
    q.add_argument("--json", action="store_true")
    q = sub.add_parser("end", help="end a window now: the alerts it held that still fire open their incidents")
    q.add_argument("id", metavar="ID")
    q.add_argument("--as", dest="as_", metavar="ID", help="who ends it (default $SIAGA_USER)")
    q.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_maintenance)

    p = commands.add_parser("heartbeats", help="the signals heartbeat triggers expect: when each was last seen, which are quiet")
    p.add_argument("--runbooks", metavar="DIR", help="runbook folder (default $SIAGA_RUNBOOKS, the one `siaga up` serves, or ./runbooks)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_heartbeats)

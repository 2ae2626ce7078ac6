"""Every command, its arguments and its help, in the order ``siaga --help`` lists them; each
command's handler lives in the module of its group."""

from __future__ import annotations

import argparse

from . import gates, incidents, library, quiet, records, reports, runs, serving, voices

__all__ = ["at_least_one", "build_parser"]


def at_least_one(text: str) -> int:
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
    p.set_defaults(handler=library.cmd_validate)

    p = commands.add_parser("schema", help="print the runbook JSON Schema (for editors)")
    p.set_defaults(handler=library.cmd_schema)

    p = commands.add_parser("actions", help="list the actions steps can call")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=library.cmd_actions)

    p = commands.add_parser("runbooks", help="list the runbook library with each one's last run")
    p.add_argument("--runbooks", metavar="DIR", help="runbook folder (default $SIAGA_RUNBOOKS or ./runbooks)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=library.cmd_runbooks)

    for name, drill in (("run", False), ("drill", True)):
        p = commands.add_parser(name, help="run a runbook" if not drill else "rehearse a runbook (run --drill)")
        p.add_argument("runbook", metavar="RUNBOOK", help="a runbook id from the runbook folder, or a file path")
        p.add_argument("--input", "-i", action="append", metavar="NAME=VALUE", help="an input value (repeatable)")
        if not drill:
            p.add_argument("--drill", action="store_true", help="a drill: risky actions are recorded, messages marked [DRILL]")
        p.add_argument("--local", action="store_true", help="run in this process instead of on the stack of `siaga up`")
        p.add_argument("--runbooks", metavar="DIR", help="runbook folder (default $SIAGA_RUNBOOKS or ./runbooks)")
        p.add_argument("--json", action="store_true", help="print the run summary as JSON")
        p.add_argument("--as", dest="as_", metavar="ID",
                       help="who asks for the run (your roster id; default $SIAGA_USER): never its approver")
        p.set_defaults(handler=runs.cmd_run, drill=drill)

    p = commands.add_parser("drills", help="past drills and their scores (the team's readiness over time)")
    p.add_argument("runbook", metavar="RUNBOOK", nargs="?", help="only this runbook's drills")
    p.add_argument("--chart", metavar="FILE.svg", help="write a chart of scores and key times over time")
    p.add_argument("--limit", type=int, default=500, help="the last N drills (default 500)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=runs.cmd_drills)

    p = commands.add_parser("approvals", help="the approval gates waiting for people")
    p.add_argument("--evidence", action="store_true", help="with each gate, what it would run, with exactly which values")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=gates.cmd_approvals)

    p = commands.add_parser("approve", help="answer an approval gate (as in the UI's Resume dialog)")
    p.add_argument("run", metavar="RUN_OR_INCIDENT", help="the flow run id, or the incident id")
    p.add_argument("step", metavar="STEP", help="the gated step's id")
    p.add_argument("--as", dest="as_", required=True, metavar="ID", help="your roster id")
    p.add_argument("--code", required=True, help="your APPROVE code (or, with --reject, your REJECT code)")
    p.add_argument("--reject", action="store_true", help="reject the step (with your reject code)")
    p.add_argument("--comment", help="why (kept in the record)")
    p.set_defaults(handler=gates.cmd_approve)

    p = commands.add_parser("ledger", help="the side-effect ledger: what changed the world, and calls of unknown outcome")
    p.add_argument("--unsettled", action="store_true", help="only calls whose outcome is unknown")
    p.add_argument("--resolve", metavar="KEY", help="settle a call of unknown outcome (with --done or --retry)")
    p.add_argument("--done", action="store_true", help="with --resolve: it took effect; never call it again")
    p.add_argument("--retry", action="store_true", help="with --resolve: it did not; the step may call again")
    p.add_argument("--note", help="with --resolve: what you checked")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=records.cmd_ledger)

    p = commands.add_parser("prefect-yaml", help="print prefect.yaml: the runbook deployments for `prefect deploy --all`")
    p.add_argument("--runbooks", metavar="DIR", help="runbook folder (default $SIAGA_RUNBOOKS or ./runbooks)")
    p.set_defaults(handler=library.cmd_prefect_yaml)

    p = commands.add_parser("up", help="start the embedded stack: Prefect server and UI, and a runner for every runbook")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=4200)
    p.add_argument("--runbooks", metavar="DIR", help="runbook folder (default $SIAGA_RUNBOOKS or ./runbooks)")
    p.add_argument("--drill", metavar="RUNBOOK", help="once up, start a drill of this runbook and follow it")
    p.add_argument("--exit-after-drill", action="store_true", help="stop the stack when that drill ends")
    p.add_argument("--receiver-host", default="127.0.0.1", help="where the alert receiver listens")
    p.add_argument("--receiver-port", type=int, default=8787)
    p.add_argument("--no-receiver", action="store_true", help="do not start the alert receiver")
    p.add_argument("--max-runs", type=at_least_one, default=20, metavar="N",
                   help="how many runs the runner runs at once (default 20)")
    p.set_defaults(handler=serving.cmd_up)

    p = commands.add_parser("receiver", help="serve the alert receiver alone (webhooks in, incidents and runs out)")
    p.add_argument("--host", help="default $SIAGA_RECEIVER_HOST or 127.0.0.1")
    p.add_argument("--port", type=int, help="default $SIAGA_RECEIVER_PORT or 8787")
    p.add_argument("--runbooks", metavar="DIR", help="runbook folder (default $SIAGA_RUNBOOKS or ./runbooks)")
    p.set_defaults(handler=serving.cmd_receiver)

    p = commands.add_parser("node", help="cluster mode: join the Prefect server PREFECT_API_URL names, serve "
                            "the receiver, run the singletons once across nodes (PostgreSQL store)")
    p.add_argument("--host", help="where the receiver listens (default $SIAGA_RECEIVER_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="default $SIAGA_RECEIVER_PORT or 8787")
    p.add_argument("--runbooks", metavar="DIR", help="runbook folder (default $SIAGA_RUNBOOKS or ./runbooks)")
    p.add_argument("--name", help="this node's name in its messages (default host:port)")
    p.add_argument("--inbox-stale", type=float, default=30.0, metavar="SECONDS",
                   help="record webhooks a dead receiver accepted after this long (default 30)")
    p.set_defaults(handler=serving.cmd_node)

    p = commands.add_parser("worker", help="a Prefect process worker whose runs start from a warm process")
    p.add_argument("--pool", default="siaga", help="the process work pool (default siaga)")
    p.add_argument("--queue", action="append", metavar="NAME",
                   help="a queue to poll (repeat; `live`, or `drill` where drill credentials live; default all)")
    p.add_argument("--name", help="the worker's name in Prefect")
    p.add_argument("--limit", type=at_least_one, metavar="N", help="at most N runs at once")
    p.add_argument("--drain", type=float, default=300.0, metavar="SECONDS",
                   help="on SIGTERM or Ctrl-C, take no new runs and wait this long for those going (default 300;"
                        " a second signal stops at once)")
    p.set_defaults(handler=serving.cmd_worker)

    p = commands.add_parser("deploy", help="apply every runbook's deployments onto a process work pool "
                            "(live and drill queues), as `prefect deploy --all`")
    p.add_argument("--pool", default="siaga")
    p.add_argument("--runbooks", metavar="DIR", help="runbook folder (default $SIAGA_RUNBOOKS or ./runbooks)")
    p.set_defaults(handler=serving.cmd_deploy)

    p = commands.add_parser("incidents", help="list incidents opened by alerts: open ones ranked, then resolved ones")
    p.add_argument("--state", choices=["open", "resolved"])
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=incidents.cmd_incidents)

    records.add_audit_parser(commands)
    quiet.add_parsers(commands)  # siaga maintenance ..., siaga heartbeats

    p = commands.add_parser("deadlines", help="statement deadlines per incident and audience, and whether they were met")
    p.add_argument("--incident", help="only this incident's")
    p.add_argument("--run", help="only this run's (runs without an incident)")
    p.add_argument("--state", choices=["pending", "met", "missed"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=records.cmd_deadlines)

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
    p.set_defaults(handler=voices.cmd_voices)

    p = commands.add_parser("db", help="Siaga's own store (SIAGA_DATABASE_URL): migrations")
    db = p.add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="bring the store to the newest migration (first use does it too)").set_defaults(handler=serving.cmd_db)
    p = commands.add_parser("incident", help="one incident in detail: alerts, run, gates, resolve run, timeline")
    p.add_argument("id", metavar="ID", help="an incident id (or a unique start of one), as `siaga incidents` lists")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=incidents.cmd_incident)

    p = commands.add_parser("report", help="the post-incident report of an incident, built from its audit trail")
    p.add_argument("incident", metavar="INCIDENT", help="an incident id (or a unique start of one), or run:<flow run id>")
    p.add_argument("--format", choices=["md", "html"], default="md", help="Markdown (default) or one HTML page")
    p.add_argument("-o", "--output", metavar="FILE", help="default: standard output; Markdown puts the timeline "
                   "picture in FILE's stem + .timeline.svg beside it (on standard output, inline as a data: URI)")
    p.add_argument("--runbooks", metavar="DIR", help="runbook folder (default $SIAGA_RUNBOOKS or ./runbooks)")
    p.set_defaults(handler=reports.cmd_report)

    p = commands.add_parser("sitrep", help="a situation report of an incident: conditions, actions, needs")
    p.add_argument("incident", metavar="INCIDENT", help="an incident id (or a unique start of one), or run:<flow run id>")
    p.add_argument("--send", action="store_true", help="send it to the liaison and commander (comms.sitrep.to) "
                   "through their roster channels, and record it in the trail")
    p.add_argument("--runbooks", metavar="DIR", help="runbook folder (default $SIAGA_RUNBOOKS or ./runbooks)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=reports.cmd_sitrep)

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
    p.set_defaults(handler=incidents.cmd_alert_send)
    return parser

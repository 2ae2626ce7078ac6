"""What serves runbooks and alerts: ``siaga up | receiver | node | worker | deploy | db``."""

from __future__ import annotations

import argparse

from siaga.errors import StackUnavailable, Terminated
from siaga.wiring import Wiring

from .common import OK, err, out, print_diagnostics

__all__ = ["cmd_db", "cmd_deploy", "cmd_node", "cmd_receiver", "cmd_up", "cmd_worker"]


def cmd_up(args: argparse.Namespace, wiring: Wiring) -> int:
    from siaga.flows.stack import StackOptions, run_stack

    options = StackOptions(
        host=args.host,
        port=args.port,
        runbooks=wiring.folder(args.runbooks),
        drill=args.drill,
        exit_after_drill=args.exit_after_drill,
        receiver=not args.no_receiver,
        receiver_host=args.receiver_host,
        receiver_port=args.receiver_port,
        max_runs=args.max_runs,
    )
    try:
        return run_stack(options, wiring, echo=out.print)
    except Terminated:  # before the stack was up (once up, it stops itself): its server is stopped
        out.print("Siaga stopped (SIGTERM) before it was up.")
        return OK


def cmd_receiver(args: argparse.Namespace, wiring: Wiring) -> int:
    import uvicorn

    from siaga.alerts.receiver import ReceiverConfig
    from siaga.flows.stack import standalone_receiver

    folder = wiring.folder(args.runbooks)
    catalog = wiring.catalog(folder)
    print_diagnostics(catalog.problems)
    config = ReceiverConfig.from_settings(wiring.settings)
    for warning in config.warnings():
        err.print(f"warning: {warning}")
    host, port = args.host or config.host, args.port or config.port
    out.print(f"Alert receiver: http://{host}:{port} ({len(catalog.runbooks)} runbooks from {folder})")
    uvicorn.run(standalone_receiver(catalog.runbooks, wiring), host=host, port=port, log_level="info")
    return OK


def cmd_node(args: argparse.Namespace, wiring: Wiring) -> int:
    from siaga.flows.node import NodeOptions, run_node

    options = NodeOptions(
        host=args.host or wiring.settings.receiver_host,
        port=args.port or wiring.settings.receiver_port,
        runbooks=wiring.folder(args.runbooks),
        name=args.name or "",
        inbox_stale=args.inbox_stale,
    )
    return run_node(options, wiring, echo=out.print)


def cmd_worker(args: argparse.Namespace, wiring: Wiring) -> int:
    import asyncio

    from siaga.flows.worker import run_worker

    try:
        asyncio.run(run_worker(args.pool, args.queue or [], name=args.name, limit=args.limit, drain_seconds=args.drain))
    except KeyboardInterrupt:
        pass
    return OK


def cmd_deploy(args: argparse.Namespace, wiring: Wiring) -> int:
    import asyncio

    from siaga.flows.deployments import deploy_to_pool

    if not wiring.settings.prefect_api_url:
        raise StackUnavailable("siaga deploy applies deployments on the Prefect server PREFECT_API_URL names: set it")
    catalog = wiring.catalog(wiring.folder(args.runbooks))
    print_diagnostics(catalog.problems)
    names = asyncio.run(deploy_to_pool(catalog.runbooks.values(), args.pool))
    out.print(f"{len(names)} deployments on the work pool {args.pool} (queues live and drill): " + ", ".join(names))
    return OK


def cmd_db(args: argparse.Namespace, wiring: Wiring) -> int:
    from sqlalchemy import make_url

    from siaga.store import migrate

    url = wiring.settings.store_url
    before, after = migrate(url, wiring.settings.home)
    where = make_url(url).render_as_string(hide_password=True)
    if before == after:
        out.print(f"store {where}: already at migration {after}")
    else:
        out.print(f"store {where}: migrated from {before or 'nothing'} to {after}")
    return OK

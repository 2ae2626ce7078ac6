"""The command line: ``siaga validate | schema | actions | runbooks | run | drill | drills | up | receiver | node |
worker | deploy | incidents | incident | alert send | approvals | approve | ledger | audit | deadlines | voices |
report | sitrep | db | maintenance | heartbeats``, one module per group of commands (`parser` lists them all).

`main` is the command line's composition root: it reads the settings once (`siaga.settings`), makes
the `siaga.wiring.Wiring` (store, registry, audit trail) and hands both to the command.

Exit codes: 0 ok, 1 the run failed, 2 bad input (a broken runbook, unknown inputs, no stack, a
setting Siaga cannot use).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
from collections.abc import Sequence

from siaga.catalog import RunbookNotFound
from siaga.errors import BadInput, Terminated
from siaga.home import prepare_prefect_environment
from siaga.runbook import RunbookError
from siaga.settings import Settings
from siaga.wiring import Wiring

from .common import BAD_INPUT, OK, TERMINATED, err, print_diagnostics
from .parser import build_parser

__all__ = ["build_parser", "main"]


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        wiring = Wiring(_settings())
    except BadInput as exc:
        err.print(str(exc), markup=False)
        return BAD_INPUT
    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    try:
        return _handle(args, wiring)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _settings() -> Settings:
    """This process's settings, read once; Prefect pointed at Siaga's data and at the running stack."""
    settings = Settings.from_environ(os.environ)
    noted = prepare_prefect_environment(settings.home)
    if noted and not settings.prefect_api_url:
        settings = dataclasses.replace(settings, prefect_api_url=noted)
    return settings


def _handle(args: argparse.Namespace, wiring: Wiring) -> int:
    try:
        return int(args.handler(args, wiring))
    except BrokenPipeError:  # `siaga schema | head`
        sys.stderr.close()
        return OK
    except RunbookError as exc:
        print_diagnostics(exc.diagnostics)
        return BAD_INPUT
    except (BadInput, RunbookNotFound) as exc:
        err.print(str(exc), markup=False)
        return BAD_INPUT
    except KeyboardInterrupt:
        return 130
    except Terminated:
        err.print(f"siaga {args.command}: stopped (SIGTERM)", markup=False)
        return TERMINATED

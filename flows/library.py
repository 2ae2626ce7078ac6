"""The entry point Prefect loads runbook flows from: ``siaga.flows.library:<runbook_id>``.

Deployments name this module and an attribute such as ``payment_gateway_outage``; the attribute
is compiled on first use from the runbook of that id in ``$SIAGA_RUNBOOKS`` (or ``./runbooks``),
so a worker or runner process always runs the runbook as it is on disk.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from siaga.integrations import default_registry

from siaga.catalog import Catalog, RunbookNotFound, find_runbook
from siaga.home import runbook_folder

from .compiler import compile_runbook, flow_attribute


@cache
def load_flow(attribute: str) -> Any:
    """The compiled flow for the runbook whose flow attribute is `attribute`."""
    registry = default_registry()
    folder = runbook_folder()
    runbook_id = attribute.replace("_", "-")
    try:
        runbook, _ = find_runbook(runbook_id, folder, registry)
    except RunbookNotFound:
        catalog = Catalog.load(folder, registry)
        matches = [rb for rb in catalog.runbooks.values() if flow_attribute(rb.id) == attribute]
        if not matches:
            raise
        runbook = matches[0]
    return compile_runbook(runbook, registry)


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    try:
        return load_flow(name)
    except RunbookNotFound as exc:
        raise AttributeError(f"no runbook for flow {name!r}: {exc}") from None

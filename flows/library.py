"""The entry point Prefect loads runbook flows from: ``siaga.flows.library:<runbook_id>``.

Deployments name this module and an attribute such as ``payment_gateway_outage``; the attribute
is compiled on first use from the runbook of that id in ``$SIAGA_RUNBOOKS`` (or ``./runbooks``: the
settings `__getattr__`, Prefect's way in, reads), as it is on disk; a run started with another
revision executes that one (`revisions`). A compiled flow is reused
while no file under the folder has changed: the fast lane's forkserver compiles them all once
(`warm`), and every run forked from it starts with its flow ready.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from siaga.integrations import default_registry

from siaga.catalog import Catalog, RunbookNotFound, find_runbook
from siaga.settings import Settings

from .compiler import compile_runbook, flow_attribute

FolderState = tuple[tuple[str, int, int], ...]

_flows: dict[tuple[str, Path, FolderState, Path | None], Any] = {}
"""The flows compiled in this process, by flow attribute, runbook folder, its files' state and the
roster file the settings name (all that decides what a compilation makes)."""


def load_flow(attribute: str, settings: Settings) -> Any:
    """The compiled flow for the runbook whose flow attribute is `attribute`, as it is on disk now
    in the runbook folder of `settings`."""
    folder = settings.runbook_folder
    return _compiled(attribute, folder, folder_state(folder), settings)


def folder_state(folder: Path) -> FolderState:
    """Every file under `folder` with its modification time and size: a change to any of them
    (a runbook or a file it reads) compiles the flows afresh."""
    found = []
    for root, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                stat = os.stat(os.path.join(root, name))
                found.append((os.path.join(root, name), stat.st_mtime_ns, stat.st_size))
    return tuple(sorted(found))


def warm(settings: Settings) -> None:
    """Compile every valid runbook of the folder of `settings` now, so that processes forked later
    need not."""
    folder = settings.runbook_folder
    state = folder_state(folder)
    for runbook in Catalog.load(folder, default_registry(), settings).runbooks.values():
        try:
            _compiled(flow_attribute(runbook.id), folder, state, settings)
        except Exception:  # a run of this runbook compiles it itself, and reports the problem
            logging.getLogger("siaga.flows").debug("could not compile %s ahead", runbook.id, exc_info=True)


def _compiled(attribute: str, folder: Path, state: FolderState, settings: Settings) -> Any:
    key = (attribute, folder, state, settings.roster)
    if key not in _flows:
        _flows[key] = _compile(attribute, folder, settings)
    return _flows[key]


def _compile(attribute: str, folder: Path, settings: Settings) -> Any:
    registry = default_registry()
    runbook_id = attribute.replace("_", "-")
    try:
        runbook, _ = find_runbook(runbook_id, folder, registry, settings)
    except RunbookNotFound:
        catalog = Catalog.load(folder, registry, settings)
        matches = [rb for rb in catalog.runbooks.values() if flow_attribute(rb.id) == attribute]
        if not matches:
            raise
        runbook = matches[0]
    return compile_runbook(runbook, registry)


def __getattr__(name: str) -> Any:
    """Prefect's way in: a flow run's process loads its flow here (the deployment's entry point),
    with its own settings, read from its environment as every entry point's are."""
    if name.startswith("__"):
        raise AttributeError(name)
    try:
        return load_flow(name, Settings.from_environ(os.environ))
    except RunbookNotFound as exc:
        raise AttributeError(f"no runbook for flow {name!r}: {exc}") from None

"""Which revision of its runbook a flow run executes: the one it was started with, as Siaga noted
it in its own store, never what the process loaded from disk nor what Prefect's API says.

A run Siaga started (`running.create_run`) finds its start by its idempotency key, which Prefect's
API cannot change; a run Prefect started by itself (a drill schedule, Prefect's UI or API) was
started with the revision its process loaded. The first start pins the revision
(`siaga.approvals.runs`); a resume executes the pinned one. The revision is executed from the text
Siaga kept, so an edit on disk meanwhile changes nothing; when that text no longer validates (the
roster or the actions changed under it) the run is refused, saying what to do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefect.context import FlowRunContext

from siaga.approvals.revisions import Revisions
from siaga.approvals.runs import RunRecords
from siaga.runbook import RunbookError, parse_runbook
from siaga.runbook.revision import SHORT, revision_of
from siaga.wiring import Wiring

if TYPE_CHECKING:
    from .run_body import RunBody

__all__ = ["choose_revision"]


def choose_revision(body: RunBody, run_id: str, wiring: Wiring) -> RunBody | str:
    """The body of the revision run `run_id` was started with (`body` itself when that is the one
    its process loaded), or why the run must not run (a message for people). The revisions are in
    the run's store, the roster a kept revision is checked against in its library (`wiring`)."""
    store = wiring.engine
    revisions, mine = Revisions(store), revision_of(body.runbook)
    pinned = RunRecords(store).get(run_id)
    if pinned is not None:  # a resume: the revision it first started with (none noted: pinned before revisions)
        wanted = pinned.revision or mine.digest
    else:
        key = _idempotency_key()
        start = revisions.take(key, run_id) if key else None
        if start is None:  # not started by Siaga: it was started with what its process loaded
            revisions.keep(mine)
            return body
        if start.runbook_id != body.runbook.id or start.run_id != run_id:
            return (f"this run carries the idempotency key of a run Siaga started for {start.runbook_id} "
                    f"(flow run {start.run_id}), not its own: it was created through Prefect's API; refused. "
                    "Start a new run")
        wanted = start.revision
    if wanted == mine.digest:
        return body
    if wanted in body.revisions:
        return body.revisions[wanted]
    kept = revisions.get(wanted)
    if kept is None:
        return _refusal(body, wanted, "Siaga's store does not keep its text")
    try:
        roster = wiring.roster()
        runbook = parse_runbook(kept.text, body.registry, file=f"{body.runbook.id}@{wanted[:SHORT]}",
                                roster=roster, templates=kept.templates)
    except RunbookError as exc:
        return _refusal(body, wanted, f"it no longer validates: {exc}")
    built = body.revisions[wanted] = body.build(runbook, body.registry, body.settings)
    return built


def _refusal(body: RunBody, wanted: str, why: str) -> str:
    found = revision_of(body.runbook).short
    return (f"this run of {body.runbook.id} was started with revision {wanted[:SHORT]}; the runbook on disk is "
            f"revision {found}, and revision {wanted[:SHORT]} cannot be executed: {why}. Siaga never runs another "
            f"revision in its place: start a new run (`siaga run {body.runbook.id}`) to run the runbook as it is now")


def _idempotency_key() -> str | None:
    context = FlowRunContext.get()
    return context.flow_run.idempotency_key if context and context.flow_run else None

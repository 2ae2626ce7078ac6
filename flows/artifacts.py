"""What a run publishes as Prefect artifacts: its timeline while it runs, and when it ends its
decisions, statement deadlines, post-incident report, summary and table of steps. Every text goes
through the redactor; keys are made of the runbook id (`artifact_key`)."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime
from typing import Any

from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact

from siaga.actions import ActionRegistry, Mode
from siaga.audit import AuditTrail, chain_of, decision_rows, timeline_markdown
from siaga.report.deadlines import DeadlineRecords, deadlines_markdown
from siaga.logs import get_logger
from siaga.runbook.comms import statement_deadlines
from siaga.runbook.models import Runbook
from siaga.secrets import REDACTOR
from siaga.report.summary import RunSummary
from siaga.wiring import Wiring

from .execution import RunInfo

__all__ = ["Timeline", "artifact_key", "markdown_publisher", "publish_run_end"]

log = get_logger("siaga.report")


def artifact_key(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:100]


class Timeline:
    """The run's timeline artifact, drawn from its audit records: published again after a step at
    most every `EVERY` seconds (each version is an API call and a read of the trail), and always
    at the end."""

    EVERY = 2.0

    def __init__(self, runbook_id: str, incident_id: str | None, run_id: str, audit: AuditTrail) -> None:
        self.runbook_id, self.run_id, self.audit = runbook_id, run_id, audit
        self.chain = chain_of(incident_id, run_id)
        self.published = float("-inf")

    async def publish(self, *, final: bool) -> list[Any]:
        """Publish a new version (if due, or `final`); return the records it shows (none if not due)."""
        if not final and time.monotonic() - self.published < self.EVERY:
            return []
        self.published = time.monotonic()
        records = await asyncio.to_thread(self.audit.records, self.chain, self.run_id)
        await acreate_markdown_artifact(
            key=artifact_key(f"{self.runbook_id}-timeline"),
            markdown=REDACTOR.text(timeline_markdown(records, f"Timeline of run {self.run_id}")),
            description=f"Audit trail of this run: {len(records)} records, chain {self.chain}",
        )
        return records


def markdown_publisher(runbook_id: str) -> Any:
    """`publish(key, markdown)` for steps that publish a Markdown artifact of their own."""
    async def publish(key: str, markdown: str) -> None:
        await acreate_markdown_artifact(key=artifact_key(f"{runbook_id}-{key}"), markdown=REDACTOR.text(markdown))

    return publish


async def publish_run_end(runbook: Runbook, registry: ActionRegistry, run: RunInfo, summary: RunSummary,
                          timeline: Timeline, wiring: Wiring, *, responding: bool) -> None:
    """Everything a finished run publishes: statement deadlines (of a response), the final timeline,
    the decisions, the post-incident report, the summary and the table of steps; read from the
    run's store and runbook library (`wiring`)."""
    if responding:
        await _publish_deadlines(runbook, run, DeadlineRecords(wiring.engine))
    records_shown = await timeline.publish(final=True)
    decisions = decision_rows(records_shown)
    if decisions:
        await acreate_table_artifact(
            key=artifact_key(f"{runbook.id}-decisions"), table=decisions, description="Approval gate decisions"
        )
    await _publish_report(runbook, registry, timeline.chain, wiring)
    await acreate_markdown_artifact(
        key=artifact_key(f"{runbook.id}-summary"),
        markdown=summary.to_markdown(),
        description=summary.headline(),
    )
    await acreate_table_artifact(
        key=artifact_key(f"{runbook.id}-steps"),
        table=summary.step_rows(),
        description=summary.headline(),
    )


async def _publish_deadlines(runbook: Runbook, run: RunInfo, records: DeadlineRecords) -> None:
    """The statement deadlines of this incident (or run) as they stand when the run ends; a drill
    that is over records those it did not meet as missed."""
    if not statement_deadlines(runbook):
        return
    if run.mode is Mode.DRILL:
        records.close_drill(run.run_id, datetime.now(UTC))
    incident_id = (run.incident or {}).get("id")
    found = records.find(incident_id=str(incident_id)) if incident_id else records.find(run_id=run.run_id)
    await acreate_markdown_artifact(
        key=artifact_key(f"{runbook.id}-statement-deadlines"),
        markdown="### Statement deadlines\n\n" + deadlines_markdown(found),
        description="Statement deadlines and whether they were met",
    )


async def _publish_report(runbook: Runbook, registry: ActionRegistry, chain: str, wiring: Wiring) -> None:
    """The post-incident report of the incident (or run) as it stands when this run ends, as the
    Markdown artifact `<runbook>-report` (without its picture: `siaga report --format html` has it).
    A report that cannot be built is logged, never a reason to fail the run."""
    from siaga.report import report_markdown, tell
    from siaga.report.gather import gather

    try:
        facts = await asyncio.to_thread(gather, wiring.engine, chain, registry=registry, runbook=runbook,
                                        folder=wiring.folder(), settings=wiring.settings)
        markdown = REDACTOR.text(report_markdown(tell(facts)))
    except Exception as exc:  # noqa: BLE001 - the run's outcome stands; the report can be built later
        log.error("post-incident report not published", chain=chain, error=REDACTOR.text(f"{type(exc).__name__}: {exc}"))
        return
    await acreate_markdown_artifact(
        key=artifact_key(f"{runbook.id}-report"), markdown=markdown,
        description=f"Post-incident report of {chain} as this run ended (`siaga report {chain}` for the latest)",
    )

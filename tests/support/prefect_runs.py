"""Reading a finished flow run back from the Prefect API, the way the server records it."""

from __future__ import annotations

import asyncio
from typing import Any

from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import TaskRun


async def settled_task_runs(flow_run_id: Any) -> list[TaskRun]:
    """The flow run's task runs once the server has recorded them all: Prefect records task-run
    states from events, a moment after the flow returns."""
    seen: list[TaskRun] = []
    async with get_client() as client:
        for _ in range(50):
            runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            final = all(r.state is not None and r.state.is_final() for r in runs)
            if final and {r.id for r in runs} == {r.id for r in seen}:
                return runs
            seen = runs
            await asyncio.sleep(0.3)
    return seen

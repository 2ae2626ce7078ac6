"""A flow that pauses for a person's input, as an approval gate does: run by the UI tests as
`python -m tests.support.paused_flow FOLDER`. It writes its flow run id to FOLDER/flow_run_id,
then, once resumed, the input it received to FOLDER/received.json."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Literal

from prefect import flow
from prefect.flow_runs import apause_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run
from pydantic import Field

EVIDENCE = "**Error rate** 42% on `payments-api` since 09:12 UTC"


class Decision(RunInput):
    decision: Literal["approve", "reject"]
    approver: Literal["alice", "bob"]
    code: str = Field(pattern=r"^[0-9]{6}$", description="The one-time code")
    comment: str = ""


@flow(name="ui-paused")
async def paused(folder: str) -> None:
    out = Path(folder)
    (out / "flow_run_id").write_text(str(flow_run.id))
    answer = await apause_flow_run(
        wait_for_input=Decision.with_initial_data(description=EVIDENCE),
        poll_interval=1,
        key="gate-1",
        timeout=300,
    )
    (out / "received.json").write_text(json.dumps(answer.model_dump(exclude={"metadata"})))


if __name__ == "__main__":
    asyncio.run(paused(sys.argv[1]))

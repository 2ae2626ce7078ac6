"""Run a runbook file once, as a flow on the Prefect server of ``$PREFECT_API_URL``, for a fixed
incident: ``python -m tests.support.run_incident RUNBOOK.yaml INCIDENT_ID``. The tests that kill a
run with -9 mid-step start it this way; it prints the final state's type when it gets that far."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from siaga.flows import compile_runbook
from siaga.integrations import default_registry

from siaga.runbook import parse_runbook


def main(path: str, incident_id: str) -> int:
    runbook = parse_runbook(Path(path).read_text(encoding="utf-8"), default_registry(), file=path)
    flow = compile_runbook(runbook)
    state = asyncio.run(flow(incident={"id": incident_id}, return_state=True))
    print(state.type.value, flush=True)
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))

"""Open gates outlive the processes that wait at them.

A gate may stay open for tens of minutes; the flow run waiting at it lives in a process of the
runner of `siaga up`. When that process dies (the stack is stopped or restarted, the process is
killed, the machine reboots), the gate stays in Siaga's store with its codes and votes, and this
watcher in `siaga up` starts the run again: it sets the run back to Scheduled and the runner runs
it from the top. Every step done before comes back from Prefect's result cache (keyed by flow run
and step, see `compiler._task`) instead of running again, and the gate picks up where it was.

A run a person cancelled is not started again: its gate is closed as cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path
from uuid import UUID

from prefect import get_client
from prefect.client.schemas.objects import StateType
from prefect.exceptions import ObjectNotFound
from prefect.states import Scheduled

from siaga.approvals.records import Gate, GateRecords
from siaga.logs import get_logger
from siaga.store import engine

log = get_logger("siaga.revival")

INTERRUPTED = "interrupted"


def process_alive(pid: int | None) -> bool:
    """Whether process `pid` runs on this machine (a zombie waiting to be reaped does not)."""
    if not pid:
        return False
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] not in ("Z", "X")


def mark_interrupted() -> list[Gate]:
    """Before the stack stops its runner: note which open gates it is about to interrupt."""
    records = GateRecords(engine())
    host = socket.gethostname()
    interrupted = [g for g in records.find(state="open") if g.host == host and process_alive(g.pid)]
    for gate in interrupted:
        records.event(gate, INTERRUPTED, channel="system", reason="siaga up is stopping; the gate waits for its return")
    return interrupted


async def revive_orphans() -> list[Gate]:
    """Start again every run whose process died while it waited at an open gate."""
    records = GateRecords(engine())
    host = socket.gethostname()
    revived = []
    async with get_client() as client:
        for gate in records.find(state="open"):
            try:
                run = await client.read_flow_run(UUID(gate.run_id))
            except (ObjectNotFound, ValueError):
                continue
            state = run.state
            if state is None or run.deployment_id is None:
                continue  # a run in a terminal's own process (`--local`) cannot be started again
            events = records.events(gate.id)
            interrupted = bool(events) and events[-1]["kind"] == INTERRUPTED
            dead = gate.host == host and gate.pid is not None and not process_alive(gate.pid)
            if (
                state.type is StateType.CRASHED
                or (state.type is StateType.CANCELLED and interrupted)
                or (state.type in (StateType.PAUSED, StateType.RUNNING) and dead)
            ):
                await client.set_flow_run_state(run.id, Scheduled(), force=True)
                records.update(gate.id, pid=None, host=None)
                records.event(gate, "revived", channel="system", was=state.name,
                              reason="the run's process died while the gate was open; the run starts again")
                revived.append(gate)
            elif state.is_final():
                if records.decide(gate.id, "cancelled", f"the run ended {state.name} while the gate was open"):
                    records.event(gate, "cancelled", channel="system", run_state=state.name)
    return revived


async def watch_gates(stop: asyncio.Event, interval: float = 2.0) -> None:
    """Revive orphaned gates every `interval` seconds until `stop` is set."""
    while not stop.is_set():
        try:
            for gate in await revive_orphans():
                log.warning("run started again at its open gate", gate=gate.id, run_id=gate.run_id, step=gate.step_id)
        except Exception as exc:  # noqa: BLE001 - the watcher outlives a bad moment of the API
            log.error("gate watcher failed; trying again", error=str(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)

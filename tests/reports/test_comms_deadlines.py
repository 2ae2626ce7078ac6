"""Statement deadlines: reminders to the liaison at half and three quarters of the time, a miss told
up the chain of command level by level, all recorded; on a given clock (every step checked) and on
the real one through the watcher `siaga up` runs. People are reached through their roster
channels: the commander by e-mail (aiosmtpd on loopback), the others through the outbox."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from siaga.cli import main
from siaga.report.deadlines import Deadline, DeadlineRecords, Due, due
from siaga.flows.deadline_watch import check_deadlines, open_deadlines, watch_deadlines
from siaga.integrations import default_registry
from siaga.integrations.outbox import read_outbox
from siaga.runbook import Runbook, parse_roster, parse_runbook
from siaga.settings import Settings
from siaga.store import engine
from siaga.wiring import Wiring
from testkit.provider_servers import Mailbox, smtp_server

REGISTRY = default_registry()
ROSTER = """
people:
  alice: {name: Alice Wibowo, roles: [commander], channels: {email: alice@pay.example.com}}
  budi: {name: Budi Santoso, roles: [liaison]}
  eko: {name: Eko Prasetyo, roles: [ops]}
"""
T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


def runbook(runbook_id: str, within: str) -> Runbook:
    text = f"""\
runbook: {runbook_id}
title: Statement deadline
severity: sev2
impact: {{public_statement_within: 1h}}
comms: {{deadlines: {{customers: {within}}}}}
roles: {{commander: [alice], liaison: [budi], ops: [eko]}}
chain_of_command: [ops, commander]
steps:
  - {{id: wait, action: note, with: {{text: nothing said yet}}}}
"""
    return parse_runbook(text, REGISTRY, file=f"{runbook_id}.yaml", roster=parse_roster(ROSTER))


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Mailbox]]:
    """A runbook folder with the roster and an SMTP connection to a local mailbox."""
    monkeypatch.setenv("SIAGA_SECRET_MAIL_PASSWORD", "mail-password-d41")
    with smtp_server(tmp_path, "siaga", "mail-password-d41") as box:
        (tmp_path / "roster.yaml").write_text(ROSTER)
        connections = tmp_path / "connections.yaml"
        connections.write_text(json.dumps({"connections": {"mail": {
            "type": "smtp", "host": "localhost", "port": box.port, "username": "siaga",
            "password": "secret://mail-password", "sender": "Siaga <siaga@pay.example.com>", "ca_file": box.ca_file,
        }}}))
        yield tmp_path, box


def wiring_of(home: Path, folder: Path) -> Wiring:
    """The watcher's services: the session's data folder and store, the roster and connections of `folder`."""
    return Wiring(Settings(home=home, runbooks=folder))


def to(home: Path, person: str, incident: str) -> list[dict[str, Any]]:
    return [e for e in read_outbox(home) if e["to"] == f"person:{person}" and incident in e["message"]]


def test_a_missed_deadline_reminds_then_escalates_up_the_chain(
    siaga_home: Path, folder: tuple[Path, Mailbox], tmp_path: Path
) -> None:
    runbook_folder, mailbox = folder
    store = DeadlineRecords(engine(f"sqlite:///{tmp_path / 'deadlines.db'}"))
    started = open_deadlines(runbook("comms-missed", "8m"), parse_roster(ROSTER), run_id="run-m", mode="live",
                             incident={"id": "INC-DL-1", "opened_at": T0.isoformat()},
                             started_at=T0 + timedelta(minutes=1), store=store)
    assert sorted(started) == ["customers", "public"]
    [deadline] = store.find(incident_id="INC-DL-1", state="pending")[:1]
    assert (deadline.name, deadline.opened_at, deadline.due_at) == ("customers", T0, T0 + timedelta(minutes=8))

    def at(minutes: float) -> list[Due]:
        done = asyncio.run(check_deadlines(T0 + timedelta(minutes=minutes), registry=REGISTRY,
                                           folder=runbook_folder, store=store,
                                           wiring=wiring_of(siaga_home, runbook_folder)))
        return [owed for deadline_id, owed in done if deadline_id == "INC-DL-1:customers"]

    assert at(3) == []
    assert at(4) == [Due("remind", 1)]  # half of 8 minutes
    assert at(5) == []
    assert at(6) == [Due("remind", 2)]  # three quarters
    assert len(to(siaga_home, "budi", "INC-DL-1")) == 2
    assert to(siaga_home, "eko", "INC-DL-1") == [] and mailbox.messages == []
    assert at(8) == [Due("miss", 1)]  # the deadline: the first level of the chain (ops) hears
    [told] = to(siaga_home, "eko", "INC-DL-1")
    assert told["subject"] == "Statement deadline MISSED: customers, comms-missed"
    assert "level 1 of the chain of command" in told["message"] and "reminded 2 time(s)" in told["message"]
    assert at(9) == []
    assert at(10) == [Due("escalate", 2)]  # a quarter later, the commander, by e-mail
    [(_, rcpt, mail)] = mailbox.messages
    assert rcpt == ["alice@pay.example.com"] and "level 2 of the chain of command" in mail.get_body(("plain",)).get_content()
    assert at(30) == []  # the chain has no level above

    [missed] = [d for d in store.find(incident_id="INC-DL-1") if d.name == "customers"]
    assert (missed.state, missed.reminders, missed.escalated, missed.met_at) == ("missed", 2, 2, None)
    assert [(e["kind"], e["level"], [s["to"] for s in e["sent"]]) for e in missed.events] == [
        ("reminded", 1, ["budi"]), ("reminded", 2, ["budi"]), ("missed", 1, ["eko"]), ("escalated", 2, ["alice"]),
    ]
    assert [s["channel"] for s in missed.events[-1]["sent"]] == ["smtp"]

    # the statement goes out late: recorded as sent, the miss stays
    assert store.meet("INC-DL-1", ["customers", "public"], at=T0 + timedelta(minutes=31), step="publish") == [
        "customers", "public"]
    late, public = sorted(store.find(incident_id="INC-DL-1"), key=lambda d: d.name)
    assert (late.state, late.met_at, late.met_by) == ("missed", T0 + timedelta(minutes=31), "publish")
    assert (public.state, public.met_by) == ("met", "publish")  # its hour had not run out


def test_a_statement_in_time_silences_the_clock(
    siaga_home: Path, folder: tuple[Path, Mailbox], tmp_path: Path
) -> None:
    runbook_folder, _ = folder
    store = DeadlineRecords(engine(f"sqlite:///{tmp_path / 'deadlines.db'}"))
    open_deadlines(runbook("comms-met", "8m"), None, run_id="run-t", mode="live", incident=None,
                   started_at=T0, store=store)
    assert store.meet("run-t", ["customers"], at=T0 + timedelta(minutes=2), step="publish") == ["customers"]
    for minutes in (4, 6, 8, 10):
        done = asyncio.run(check_deadlines(T0 + timedelta(minutes=minutes), registry=REGISTRY,
                                           folder=runbook_folder, store=store,
                                           wiring=wiring_of(siaga_home, runbook_folder)))
        assert [d for d, _ in done if d == "run-t:customers"] == []
    [met] = store.find(run_id="run-t", state="met")
    assert (met.name, met.met_at, met.events) == ("customers", T0 + timedelta(minutes=2), [])


def deadline(**values: Any) -> Deadline:
    base: dict[str, Any] = {
        "id": "i:customers", "incident_id": "i", "run_id": "r", "runbook_id": "rb", "name": "customers",
        "mode": "live", "opened_at": T0, "due_at": T0 + timedelta(hours=4), "state": "pending", "met_at": None,
        "met_by": None, "reminders": 0, "escalated": 0, "people": {"liaison": ["budi"], "chain": [["eko"], ["alice"]]},
        "events": [],
    }
    return Deadline(**(base | values))


def test_a_watcher_that_was_away_sends_only_the_latest_reminder() -> None:
    assert due(deadline(), T0 + timedelta(hours=1)) is None
    assert due(deadline(), T0 + timedelta(hours=3, minutes=30)) == Due("remind", 2)
    assert due(deadline(reminders=2), T0 + timedelta(hours=3, minutes=30)) is None
    assert due(deadline(), T0 + timedelta(hours=5)) == Due("miss", 1)
    assert due(deadline(state="missed", escalated=1), T0 + timedelta(hours=4, minutes=59)) is None
    assert due(deadline(state="missed", escalated=1), T0 + timedelta(hours=5)) == Due("escalate", 2)
    assert due(deadline(state="missed", escalated=2), T0 + timedelta(days=3)) is None
    assert due(deadline(state="met", met_at=T0), T0 + timedelta(days=3)) is None


def test_the_watcher_of_siaga_up_runs_a_short_clock_to_its_end(
    siaga_home: Path,
    folder: tuple[Path, Mailbox],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The service `siaga up` starts, on the real clock and store, with a 4-second deadline."""
    runbook_folder, mailbox = folder
    wiring = wiring_of(siaga_home, runbook_folder)
    store = DeadlineRecords(wiring.engine)
    opened = datetime.now(UTC)
    open_deadlines(runbook("comms-watched", "4s"), parse_roster(ROSTER), run_id="run-w", mode="live",
                   incident={"id": "INC-DL-W", "opened_at": opened.isoformat()}, started_at=opened, store=store)

    async def watch() -> Deadline:
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch_deadlines(stop, interval=0.1, folder=runbook_folder, wiring=wiring))
        try:
            for _ in range(100):
                [found] = [d for d in store.find(incident_id="INC-DL-W") if d.name == "customers"]
                if found.escalated == 2:
                    return found
                await asyncio.sleep(0.1)
            raise AssertionError(f"the watcher did not escalate: {found}")
        finally:
            stop.set()
            await watcher

    found = asyncio.run(watch())
    assert found.state == "missed"
    assert [e["kind"] for e in found.events] == ["reminded", "reminded", "missed", "escalated"]
    at = [datetime.fromisoformat(e["at"]) - opened for e in found.events]
    assert timedelta(seconds=2) <= at[0] < timedelta(seconds=3)  # half of 4 s
    assert timedelta(seconds=3) <= at[1] < timedelta(seconds=4)  # three quarters
    assert timedelta(seconds=4) <= at[2] < at[3]  # the deadline, then a quarter later
    assert len(to(siaga_home, "budi", "INC-DL-W")) == 2 and len(to(siaga_home, "eko", "INC-DL-W")) == 1
    assert [rcpt for _, rcpt, _ in mailbox.messages] == [["alice@pay.example.com"]]

    # `siaga deadlines` shows them, as a table and as JSON
    capsys.readouterr()
    assert main(["deadlines", "--incident", "INC-DL-W", "--json"]) == 0
    shown = {d["name"]: d for d in json.loads(capsys.readouterr().out)}
    assert set(shown) == {"customers", "public"}
    assert (shown["customers"]["state"], shown["customers"]["reminders"], shown["customers"]["escalated"]) == (
        "missed", 2, 2)
    assert shown["public"]["state"] == "pending" and shown["public"]["met_at"] is None
    shown_table = subprocess.run(  # on a wide terminal: one row per line
        [sys.executable, "-m", "siaga.cli", "deadlines", "--incident", "INC-DL-W", "--state", "missed"],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, timeout=120, check=False,
    )
    assert shown_table.returncode == 0, shown_table.stderr
    table = shown_table.stdout
    assert "INC-DL-W" in table and "missed" in table and "public" not in table

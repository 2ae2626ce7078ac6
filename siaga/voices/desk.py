"""The voice desk of a flow run: what `voices.draft` and `voices.answer` (the actions that answer
voices, in `siaga.integrations.voices`) read from and write to Siaga's store.

* **Whose voices.** A live run answers its incident's voices. A drill never touches a real
  incident: its voices are the mentions its drill maintenance window held back (`drill.maintenance`,
  ``drill-<run id>``), taken in as the voices of a drill incident of its own (state ``drill``, seen
  by no incident list, counted by no drill stand-down), so the drill exercises the desk end to end
  with mentions that arrived through the receiver.
* **Drafted now.** `draft` takes new voices in, drafts their replies (`drafting`) and gives the
  groups an approval gate will bind to: each draft's id, exact text, its SHA-256, and the voices it
  answers (platform, the mention replied to, author).
* **Posted only as Siaga drafted and people approved.** `admit` checks an approved reply against
  the store, never against anything read back from Prefect: the draft exists with exactly that
  text and hash, and each voice is still open and still in that draft (a voice whose text was
  redrafted since waits for the approval of its new text; one answered or dismissed meanwhile is
  left alone).
* **What became of it.** `answered` closes the voice (``voice.answered`` in the audit trail, with
  the draft, its text hash and the run); `failed` keeps it open with the reason, which `siaga
  voices` shows.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, select

from siaga.actions import ActionContext, ActionFailed, Mode
from siaga.runbook import Roster, Runbook
from siaga.runbook.loader import read_templates
from siaga.store import (
    alerts,
    incident_alerts,
    incidents,
    insert_ignoring,
    maintenance_windows,
    suppressed_alerts,
    voice_drafts,
)

from .drafting import draft_replies, text_hash
from .intake import take_in
from .model import OPEN_STATES
from .records import VoiceRecords

__all__ = ["DRILL_STATE", "StoreDesk", "close_drill", "drill_incident_id", "is_drill_incident"]

DRILL_STATE = "drill"
"""The state of a drill's own incident: no incident list shows it, no drill stands down for it."""


def drill_incident_id(run_id: str) -> str:
    """The incident a drill run's voices belong to."""
    return _DRILL + hashlib.sha256(run_id.encode()).hexdigest()[:16]


def is_drill_incident(incident_id: str) -> bool:
    return incident_id.startswith(_DRILL)


_DRILL = "drill-"


def close_drill(engine: Engine, run_id: str) -> int:
    """Dismiss the voices a drill left open when it ended (nobody is reminded of them any more);
    how many. Its score counts them first."""
    records = VoiceRecords(engine)
    left = records.find(incident_id=drill_incident_id(run_id), states=OPEN_STATES)
    return sum(c.done for c in records.dismiss(left, reason="the drill ended", by="drill", channel="system"))


class StoreDesk:
    """The voices of one run of `runbook` in the store behind `engine` (templates and roster from
    the runbook `folder`)."""

    def __init__(
        self, engine: Engine, runbook: Runbook, folder: Path, roster: Roster | None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.engine, self.runbook, self.folder, self.roster = engine, runbook, folder, roster
        self.clock = clock or (lambda: datetime.now(UTC))
        self.records = VoiceRecords(engine, clock=self.clock)

    # --- whose voices -------------------------------------------------------------------------

    def incident_of(self, context: ActionContext) -> str | None:
        """The incident whose voices this run answers: its own (live), its drill incident (drill)."""
        if context.mode is Mode.DRILL:
            return self._drill_incident(context.run_id)
        return context.incident_id

    def _drill_incident(self, run_id: str) -> str:
        incident_id = drill_incident_id(run_id)
        now = self.clock()
        with self.engine.begin() as connection:
            connection.execute(insert_ignoring(connection, incidents), [{
                "id": incident_id, "runbook_id": self.runbook.id, "group_key": json.dumps(["drill", run_id]),
                "open_key": None, "state": DRILL_STATE, "opened_at": now, "inputs": {}, "flow_run_id": run_id,
                "run_attempts": 0, "alerts": 0, "resolve_due": False, "resolve_attempts": 0,
            }])
            held = self._held(connection, f"drill-{run_id}")
            if held:
                connection.execute(insert_ignoring(connection, incident_alerts),
                                   [{"incident_id": incident_id, "alert_id": alert_id} for alert_id in held])
        return incident_id

    def _held(self, connection: Connection, window_id: str) -> list[int]:
        """The alerts the drill's window kept from the runbook: those it held back (the one that
        crossed a threshold) and every other of its labels that arrived while it was open (the
        ones counted towards it)."""
        window = connection.execute(select(maintenance_windows).where(maintenance_windows.c.id == window_id)).first()
        if window is None:
            return []
        held = set(connection.execute(select(suppressed_alerts.c.alert_id).where(
            suppressed_alerts.c.window_id == window_id, suppressed_alerts.c.runbook_id == self.runbook.id,
        )).scalars())
        sources = sorted({m.source for m in self.runbook.voices.mentions}) if self.runbook.voices else []
        arrived = connection.execute(select(alerts.c.id, alerts.c.labels).where(
            alerts.c.received_at >= window.starts_at, alerts.c.received_at <= window.ends_at,
            alerts.c.source.in_(sources)))
        held.update(row.id for row in arrived
                    if all((row.labels or {}).get(k) == v for k, v in (window.match or {}).items()))
        return sorted(held)

    # --- drafting -----------------------------------------------------------------------------

    def draft(self, context: ActionContext, platforms: Iterable[str], limit: int) -> dict[str, Any]:
        if self.runbook.voices is None:
            raise ActionFailed(f"runbook {self.runbook.id} has no `voices:` block", changed=False,
                               todo="add `voices: {respond_within: 24h}` to the runbook")
        incident_id = self.incident_of(context)
        if incident_id is None:
            return {"incident": None, "drafts": [], "by_hand": [], "left": 0, "problems": [
                "this run has no incident: voices belong to the incident an alert opened"]}
        runbooks = {self.runbook.id: self.runbook}
        take_in(self.engine, runbooks, roster=self.roster, now=self.clock())
        done = draft_replies(self.engine, runbooks, read_templates(self.folder), incident_id=incident_id,
                             now=self.clock())
        drafted = {v.id: v for v in self.records.find(incident_id=incident_id, states=("drafted",))}
        wanted, drafts, by_hand, left = set(platforms), [], [], 0
        for group in done.drafts:
            targets = []
            for voice in (drafted.get(vid) for vid in group.voices):
                if voice is None or voice.draft_id != group.id:
                    continue
                if voice.platform not in wanted:
                    by_hand.append(voice.id)
                elif sum(len(d["voices"]) for d in drafts) + len(targets) >= limit:
                    left += 1
                else:
                    targets.append({"voice": voice.id, "platform": voice.platform, "reply_to": voice.mention_id,
                                    "author": voice.author, "url": voice.url})
            if targets:
                drafts.append({"draft": group.id, "language": group.language, "topic": group.topic,
                               "text": group.text, "text_hash": group.text_hash, "voices": targets})
        return {"incident": incident_id, "drafts": drafts, "by_hand": by_hand, "left": left, "problems": done.problems}

    # --- posting ------------------------------------------------------------------------------

    def admit(self, reply: Mapping[str, Any], context: ActionContext) -> dict[str, str]:
        draft_id, text = str(reply.get("draft")), str(reply.get("text"))
        with self.engine.connect() as connection:
            row = connection.execute(select(voice_drafts).where(voice_drafts.c.id == draft_id)).mappings().first()
        incident_id = self.incident_of(context)
        if (row is None or row["incident_id"] != incident_id or row["text"] != text
                or row["text_hash"] != reply.get("text_hash") or text_hash(text) != row["text_hash"]):
            raise ActionFailed(
                f"the approved reply {draft_id} is not a reply Siaga drafted for incident {incident_id} with "
                "that exact text: nothing of it was posted", changed=False,
                todo="draft the replies again (`siaga voices draft`) and have the new text approved",
            )
        wanted = [str(target.get("voice")) for target in reply.get("voices") or []]
        found = {v.id: v for v in self.records.find(ids=wanted)}
        verdicts = {}
        for voice_id in wanted:
            voice = found.get(voice_id)
            if voice is None or voice.incident_id != incident_id:
                verdicts[voice_id] = "not a voice of this incident"
            elif not voice.is_open:
                verdicts[voice_id] = f"it is {voice.state} already"
            elif voice.draft_id != draft_id:
                verdicts[voice_id] = (f"its reply was drafted again since ({voice.draft_id}): the new text "
                                      "needs its own approval")
            else:
                verdicts[voice_id] = ""
        return verdicts

    def answered(self, voice_id: str, context: ActionContext, *, text: str, url: str | None) -> None:
        voice = self.records.find(ids=[voice_id])
        drill = context.mode is Mode.DRILL
        self.records.answer(voice, by="drill: recorded, not posted" if drill else "siaga", url=url,
                            channel=context.step_id, detail={
                                "run_id": context.run_id, "drill": drill, "text_hash": text_hash(text),
                                "draft": voice[0].draft_id if voice else None})

    def failed(self, voice_id: str, context: ActionContext, reason: str) -> None:
        self.records.post_failed(voice_id, reason, run_id=context.run_id, channel=context.step_id)

"""Voices: every mention that reaches an incident is a case to answer by a deadline (issue 15).

A runbook's `voices:` block says how long an answer may take (per author tier and sentiment),
who answers and who hears of a miss, which alerts are mentions and where their facts are, and the
reply templates per topic and language. The package:

* `model` (pure): which alerts are mentions, a mention read from its alert or refused with the
  reason, its deadline and reminder, the voice id (one per platform and mention id), `Voice`.
* `records`: voices in the store; a person's changes (dismissed with a reason, answered) and the
  watcher's (reminded, missed, escalated), each once, with its audit record.
* `intake`: `take_in` makes voices of the mentions linked to incidents (and of late ones arriving
  after their incident resolved), idempotently, from the store; anyone may call it at any time.
* `drafting`: reply texts from the templates; voices with the same text form one group (a draft)
  whose approval binds to the text's SHA-256.
* `desk`: what the actions that answer voices (`voices.draft`, `voices.answer`) read and write:
  the run's voices (a drill's own, from the mentions its window held), the drafts to approve, an
  approved reply checked against the store before it is posted, and what became of each voice.
* `figures` (pure): received, answered within the deadline (share, median time), dismissed, open,
  by platform, for the situation and post-incident reports.
* `views`: what `siaga voices` lists.

Reminders and escalation run on the statement deadlines' rule (`siaga.report.deadlines.owed`) in their
watcher (`siaga.flows.deadline_watch`). Importing the package loads only its pure parts; the
store-backed modules are imported by name.

Direction: imports the runbook language, the store, the audit trail and the incident engine's pure
routing; the reports, the flows and the command line import it.
"""

from .figures import Tally, VoiceFigures, voice_figures
from .model import (
    CLOSED_STATES,
    MAX_TEXT,
    OPEN_STATES,
    Mention,
    Refusal,
    Voice,
    is_mention,
    mention_refusals,
    people_of,
    read_mention,
    remind_at,
    respond_within,
    voice_id,
)

__all__ = [
    "CLOSED_STATES",
    "MAX_TEXT",
    "OPEN_STATES",
    "Mention",
    "Refusal",
    "Tally",
    "Voice",
    "VoiceFigures",
    "is_mention",
    "mention_refusals",
    "people_of",
    "read_mention",
    "remind_at",
    "respond_within",
    "voice_figures",
    "voice_id",
]

"""The tables of Siaga's store: `side_effects` (the side-effect ledger); `alerts`, `incidents` and `incident_alerts`
(what the alert receiver recorded and opened); `deliveries` (webhooks seen, against replay);
`sns_subscriptions` (SNS topics confirmed); `inbox` (webhooks taken in, until processed, or given
up on with the reason); `threshold_hits` (what threshold triggers counted); `gates`,
`gate_codes` and `gate_events` (approval gates, their hashed one-time codes and everything that
happened at them); `runs` (the runs Siaga executes: pinned parameters, cancellation, wake-ups); `audit_records` (the hash-chained audit trail, see `siaga.audit`);
`comms_deadlines` (statement deadlines, their reminders and misses); `drills` (each drill's score,
or why it was skipped); `voices`, `voice_alerts` and `voice_drafts` (mentions to answer, the alerts
that carried them, the reply texts drafted for them); `heartbeats` (signals expected, when last
seen); `maintenance_windows` and `suppressed_alerts` (windows that keep alerts from opening
incidents, and what they held back).

One open incident per (runbook, group key): `incidents.open_key` holds the key while the incident is
open and NULL once it is resolved; the unique index `uq_incidents_open` covers the key's digest
(`key_digest`) where `open_key` is not NULL, so resolved incidents never collide and two receivers
racing to open the same incident cannot both succeed (``INSERT ... ON CONFLICT DO NOTHING`` without
a target sees every unique index, partial ones included, on both databases).

Text from outside is kept whole on both databases: what may be any length (a fingerprint, a group
key) is a ``Text`` column, and where it must be unique or looked up, a fixed-size digest column
(`siaga.canonical.digest`, filled in on insert) carries the unique key, and a hash index (on
PostgreSQL, whose btree entries hold at most about 2.7 kB) the lookups. What no store keeps (half a
surrogate pair, NUL, NaN) never gets this far: the receiver refuses it (`siaga.alerts.body`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)

from siaga.canonical import digest

metadata = MetaData()

side_effects = Table(
    "side_effects",
    metadata,
    Column("key", String(300), primary_key=True),
    Column("action", String(100), nullable=False),
    Column("params_hash", String(64), nullable=False),
    Column("state", String(16), nullable=False),  # intent | done | failed
    Column("result", JSON),
    Column("error", Text),
    Column("run_id", String(64)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

def _digest_of(*names: str) -> Callable[[Any], str]:
    """A column default: the digest (`siaga.canonical.digest`) of the named values of the row
    being inserted. Unbounded text (a fingerprint, a group key) is unique through its digest: a
    PostgreSQL btree entry holds at most about 2.7 kB, SQLite's any length."""

    def default(context: Any) -> str:
        row = context.get_current_parameters()
        return digest([row[name] for name in names])

    return default


alerts = Table(
    "alerts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source", String(64), nullable=False),  # a generic source's name has up to 63 characters
    Column("fingerprint", Text, nullable=False),  # as the source sent it, any length
    Column("starts_at", DateTime(timezone=True)),
    # `starts_at` as ISO text, "" when the source gave none: the unique key needs a non-NULL
    # value, since NULLs never collide.
    Column("episode", String(64), nullable=False),
    Column("status", String(16), nullable=False),  # firing | resolved
    Column("labels", JSON, nullable=False),
    Column("annotations", JSON, nullable=False),
    Column("raw", JSON, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("resolved_at", DateTime(timezone=True)),  # on a firing alert: when it was resolved
    # What a repeat of one notification shares, (source, fingerprint, episode, status), as one
    # fixed-size unique key: filled in on insert.
    Column("notification", String(64), nullable=False,
           default=_digest_of("source", "fingerprint", "episode", "status")),
    UniqueConstraint("notification", name="uq_alerts_notification"),
    # Alerts are looked up by fingerprint: a hash index on PostgreSQL takes a key of any length.
    Index("ix_alerts_fingerprint", "fingerprint", postgresql_using="hash"),
)

incidents = Table(
    "incidents",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("runbook_id", String(100), nullable=False),
    Column("group_key", Text, nullable=False),  # the group_by labels' values, any length
    # runbook_id + " " + group_key while open, NULL once resolved: one open incident per key,
    # unique through `key_digest` (`uq_incidents_open`)
    Column("open_key", Text),
    Column("state", String(16), nullable=False),  # open | resolved
    Column("severity", String(16)),
    Column("priority", String(16)),
    Column("opened_at", DateTime(timezone=True), nullable=False),
    Column("resolved_at", DateTime(timezone=True)),
    Column("inputs", JSON, nullable=False),
    Column("alert", JSON),  # the template context of the alert that opened it
    Column("flow_run_id", String(64)),
    Column("run_attempts", Integer, nullable=False, default=0),
    Column("run_error", Text),
    Column("alerts", Integer, nullable=False, default=0),
    # the run of the runbook's on_resolve steps: due once the incident resolves, if the runbook
    # declares some; started once (Prefect idempotency key "<id>:resolved")
    Column("resolve_due", Boolean, nullable=False, default=False, server_default=false()),
    Column("resolve_run_id", String(64)),
    Column("resolve_attempts", Integer, nullable=False, default=0, server_default=text("0")),
    Column("resolve_error", Text),
    # (runbook_id, group_key) as one fixed-size key, filled in on insert
    Column("key_digest", String(64), nullable=False, default=_digest_of("runbook_id", "group_key")),
    Index("uq_incidents_open", "key_digest", unique=True,
          sqlite_where=text("open_key IS NOT NULL"), postgresql_where=text("open_key IS NOT NULL")),
    Index("ix_incidents_open_key", "open_key", postgresql_using="hash"),
)

incident_alerts = Table(
    "incident_alerts",
    metadata,
    Column("incident_id", String(40), ForeignKey("incidents.id"), primary_key=True),
    Column("alert_id", Integer, ForeignKey("alerts.id"), primary_key=True),
)
"""Which alerts belong to which incident (one alert may start several runbooks)."""

gates = Table(
    "gates",
    metadata,
    Column("id", String(200), primary_key=True),  # run id + ":" + step id
    Column("run_id", String(64), nullable=False, index=True),
    Column("step_id", String(80), nullable=False),
    Column("runbook_id", String(100), nullable=False),
    Column("incident_id", String(40), index=True),
    Column("mode", String(8), nullable=False),
    Column("params_hash", String(64), nullable=False),
    Column("requester", String(80)),
    Column("state", String(16), nullable=False),  # open | approved | rejected | timed_out | failed | skipped | refused | cancelled | voided
    Column("opened_at", DateTime(timezone=True), nullable=False),
    Column("deadline", DateTime(timezone=True), nullable=False),
    Column("decided_at", DateTime(timezone=True)),
    Column("decision", Text),  # why it was decided so
    Column("approvers", JSON),  # who approved it, once approved
    Column("pause_key", String(120)),  # the Prefect pause now waiting for input
    Column("level", Integer, nullable=False, default=1),  # chain-of-command levels reached
    Column("evidence", JSON, nullable=False),
    Column("host", String(200)),  # unused since 0010 (gates no longer belong to a process)
    Column("pid", Integer),  # unused since 0010
    Column("params", JSON),  # the rendered parameters decided once at opening: exactly what runs
    Column("binding", JSON),  # what votes are about (`siaga.approvals.codes.Binding`)
    Column("binding_hash", String(64)),
    Column("policy", JSON),  # who may decide and how (`GatePolicy.as_json`), fixed at opening
)
"""Approval gates: one per (flow run, step), the decision ledger's rows (see `siaga.approvals.records`)."""

gate_codes = Table(
    "gate_codes",
    metadata,
    Column("gate_id", String(200), ForeignKey("gates.id"), primary_key=True),
    Column("approver", String(80), primary_key=True),
    Column("salt", String(32), nullable=False),  # of the approve code
    Column("hash", String(64), nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    Column("used_at", DateTime(timezone=True)),
    Column("wrong", Integer, nullable=False, default=0),  # wrong codes typed for this approver
    Column("reject_salt", String(32)),  # of the reject code (since 0010)
    Column("reject_hash", String(64)),
    Column("used_for", String(8)),  # approve | reject: which code was used
)
"""One-time codes, two per person and gate, stored hashed (see `siaga.approvals.codes`)."""

runs = Table(
    "runs",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("runbook_id", String(100), nullable=False),
    Column("incident_id", String(40), index=True),
    Column("mode", String(8), nullable=False),
    Column("requester", String(80)),
    Column("params_hash", String(64), nullable=False),  # the run's parameters when it first started
    Column("state", String(16), nullable=False),  # running | waiting | cancelled | refused | ended
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("form_key", String(120)),  # the pause whose Resume form Siaga wrote last
    Column("form_hash", String(64)),  # the form as Siaga wrote it
    Column("answered_key", String(120)),  # the last form whose answer was taken
    Column("waiting_on", JSON),  # the gates a waiting run waits for: one decided wakes it
    Column("wake_at", DateTime(timezone=True)),  # when a waiting run must come back (escalation, deadline)
    Column("wake_requested_at", DateTime(timezone=True)),  # Siaga asked Prefect to resume it
    Column("note", Text),  # why it was cancelled or refused
    Column("revision", String(64)),  # the runbook revision it executes (`runbook_revisions`)
)
"""The runs Siaga executes, as Siaga saw them start: their parameters are pinned (a run whose
parameters or mode were changed through Prefect's API is refused), a cancelled run stays
cancelled, and a run waiting at gates without a process is woken from here (`siaga.flows.wakeups`)."""

runbook_revisions = Table(
    "runbook_revisions",
    metadata,
    Column("revision", String(64), primary_key=True),  # SHA-256 of the text and templates
    Column("runbook_id", String(100), nullable=False),
    Column("text", Text, nullable=False),  # the runbook file, exactly
    Column("templates", JSON, nullable=False),  # the message templates it renders, by file name
    Column("kept_at", DateTime(timezone=True), nullable=False),
)
"""Every runbook revision a run was started with, kept so the run executes exactly that one."""

run_starts = Table(
    "run_starts",
    metadata,
    Column("start_key", String(200), primary_key=True),  # the flow run's Prefect idempotency key
    Column("runbook_id", String(100), nullable=False),
    Column("revision", String(64), nullable=False),
    Column("run_id", String(64)),  # the flow run that took this start (the first one only)
    Column("started_at", DateTime(timezone=True), nullable=False),
)
"""The runs Siaga started, noted before Prefect creates them: the revision each must execute. A
flow run finds its own by its idempotency key, which Prefect's API cannot change afterwards."""

gate_events = Table(
    "gate_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("gate_id", String(200), ForeignKey("gates.id"), nullable=False, index=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("actor", String(80)),
    Column("channel", String(16)),  # ui | cli | system | slack | email | pagerduty | outbox
    Column("detail", JSON, nullable=False),
)
"""Everything that happened at a gate, in order: opened, code sent, approval, rejection, refused
attempt, escalation, timeout, decision."""
comms_deadlines = Table(
    "comms_deadlines",
    metadata,
    Column("id", String(200), primary_key=True),  # incident (or run) id + ":" + deadline name
    Column("incident_id", String(40), index=True),
    Column("run_id", String(64), nullable=False),
    Column("runbook_id", String(100), nullable=False),
    Column("name", String(40), nullable=False),  # an audience, or `public`
    Column("mode", String(8), nullable=False),
    Column("opened_at", DateTime(timezone=True), nullable=False),  # the clock's start
    Column("due_at", DateTime(timezone=True), nullable=False),
    Column("state", String(16), nullable=False),  # pending | met | missed
    Column("met_at", DateTime(timezone=True)),  # when a statement went out (after a miss: late)
    Column("met_by", String(120)),  # the comms.publish step that sent it
    Column("reminders", Integer, nullable=False, default=0),  # reminders sent (at 1/2, 3/4)
    Column("escalated", Integer, nullable=False, default=0),  # chain-of-command levels told of a miss
    Column("people", JSON, nullable=False),  # {"liaison": [...], "chain": [[...], ...]}
    Column("events", JSON, nullable=False),  # what was sent to whom, when
)
"""Statement deadlines: one clock per (incident, audience) from the incident's opening."""

deliveries = Table(
    "deliveries",
    metadata,
    Column("source", String(64), nullable=False),
    Column("key", String(600), nullable=False),  # `signatures.replay_key`: signature, MessageId...
    Column("seen_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
    UniqueConstraint("source", "key", name="uq_deliveries_key"),
)
"""Webhook deliveries seen lately (replay protection that outlives a receiver restart and is
shared by every receiver on the database); rows are pruned once expired."""

sns_subscriptions = Table(
    "sns_subscriptions",
    metadata,
    Column("topic_arn", String(300), primary_key=True),
    Column("state", String(16), nullable=False),  # confirmed | unsubscribed
    Column("message_id", String(100), nullable=False),  # of the SNS message that said so
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
"""The SNS topics the receiver confirmed a subscription to, or was told it was unsubscribed from."""

inbox = Table(
    "inbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source", String(64), nullable=False),
    Column("body", LargeBinary, nullable=False),  # the raw webhook, as verified
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("done_at", DateTime(timezone=True), index=True),  # NULL until its alerts are recorded
    Column("attempts", Integer, nullable=False),  # tries started (by this receiver or one that died)
    Column("error", Text),  # why the last try did not record everything
    Column("failed_at", DateTime(timezone=True), index=True),  # given up on: `error` says why (since 0012)
    Column("lost", Integer),  # alerts of a webhook given up on that were not recorded (NULL: unknown)
)
"""Webhooks taken in (answered 202) and whether they were processed: a receiver that dies with
work queued processes the unfinished ones when it starts again; one that cannot be recorded after
a few tries is marked failed, with its reason, and left for a person (`siaga.alerts.inbox`)."""

threshold_hits = Table(
    "threshold_hits",
    metadata,
    Column("runbook_id", String(100), primary_key=True),
    Column("trigger_index", Integer, primary_key=True),
    Column("alert_id", Integer, ForeignKey("alerts.id"), primary_key=True),
    Column("group_hash", String(64), nullable=False),  # sha256 of the group key: bounded, whatever the labels
    Column("received_at", DateTime(timezone=True), nullable=False, index=True),
    Index("ix_threshold_hits_window", "runbook_id", "trigger_index", "group_hash", "received_at"),
)
"""The firing alerts each threshold trigger took, by group (since 0012): a threshold is counted with
an index over its window, not by rescanning recent alerts (`siaga.incidents.thresholds`); rows
older than every window are pruned."""

audit_records = Table(
    "audit_records",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("chain", String(120), nullable=False),  # the incident id, or "run:<flow run id>"
    Column("seq", Integer, nullable=False),  # 1, 2, ... within the chain
    Column("at", DateTime(timezone=True), nullable=False),
    Column("kind", String(60), nullable=False),
    Column("incident_id", String(40)),
    Column("run_id", String(64)),
    Column("actor", String(200)),
    Column("channel", String(100)),
    Column("data", JSON, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    UniqueConstraint("chain", "seq", name="uq_audit_records_chain_seq"),
)
"""Append-only: Siaga's code inserts here and never updates or deletes (see `siaga.audit`)."""


drills = Table(
    "drills",
    metadata,
    Column("run_id", String(64), primary_key=True),  # the drill's flow run
    Column("runbook_id", String(100), nullable=False, index=True),
    Column("state", String(16), nullable=False),  # scored | skipped
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True), nullable=False),
    Column("score", Integer),  # out of 100; NULL when skipped
    Column("figures", JSON, nullable=False),  # siaga.drills.score: times, gates, failures, deductions
    Column("reason", Text),  # why it was skipped
)
"""Drills run (or skipped) and how the team scored (`siaga.drills`)."""

voices = Table(
    "voices",
    metadata,
    Column("id", String(40), primary_key=True),  # "v-" + 12 hex of (platform, mention id)
    Column("incident_id", String(40), ForeignKey("incidents.id"), nullable=False, index=True),
    Column("runbook_id", String(100), nullable=False),
    Column("platform", String(40), nullable=False),
    Column("mention_id", String(300), nullable=False),  # a refused mention without one: "alert:<id>"
    Column("alert_id", Integer, ForeignKey("alerts.id"), nullable=False),  # the first alert that carried it
    Column("thread", String(300)),
    Column("author", String(200)),
    Column("author_tier", String(40)),
    Column("sentiment", String(40)),
    Column("language", String(16)),
    Column("topic", String(80)),
    Column("text", Text, nullable=False),  # of a refused mention: its first characters
    Column("url", String(2000)),
    Column("posted_at", DateTime(timezone=True)),  # the source's own time, as given
    Column("received_at", DateTime(timezone=True), nullable=False),  # the clock's start
    Column("due_at", DateTime(timezone=True)),  # NULL for a refused mention
    Column("remind_at", DateTime(timezone=True)),  # when its owners are reminded
    Column("late", Boolean, nullable=False),  # arrived after its incident resolved
    Column("state", String(16), nullable=False),  # new | drafted | approved | answered | dismissed | refused
    Column("problem", Text),  # why the mention was refused
    Column("draft_id", String(40), ForeignKey("voice_drafts.id")),  # its group: the reply text drafted for it
    Column("answered_at", DateTime(timezone=True)),
    Column("answered_by", String(200)),
    Column("reply_url", String(2000)),
    Column("dismissed_at", DateTime(timezone=True)),
    Column("dismissed_by", String(200)),
    Column("dismissed_reason", Text),
    Column("missed_at", DateTime(timezone=True)),  # when the watcher recorded its deadline missed
    Column("reminders", Integer, nullable=False),  # reminders sent to its owners
    Column("escalated", Integer, nullable=False),  # chain-of-command levels told of a miss
    Column("people", JSON, nullable=False),  # {"owners": [...], "chain": [[...], ...]}
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("platform", "mention_id", name="uq_voices_mention"),
)
"""Voices: each mention that reached an incident whose runbook has `voices:`, one per (platform,
mention id), with its response deadline and what became of it (`siaga.voices`)."""

voice_alerts = Table(
    "voice_alerts",
    metadata,
    Column("alert_id", Integer, ForeignKey("alerts.id"), primary_key=True),
    Column("voice_id", String(40), ForeignKey("voices.id"), nullable=False, index=True),
    Column("taken_at", DateTime(timezone=True), nullable=False),
)
"""Every alert taken in as a voice (duplicates of one mention included): what intake has read."""

voice_drafts = Table(
    "voice_drafts",
    metadata,
    Column("id", String(40), primary_key=True),  # "d-" + 12 hex of (incident, language, text)
    Column("incident_id", String(40), ForeignKey("incidents.id"), nullable=False, index=True),
    Column("runbook_id", String(100), nullable=False),
    Column("topic", String(80), nullable=False),
    Column("language", String(16), nullable=False),
    Column("template", String(120), nullable=False),  # the template file it was rendered from
    Column("text", Text, nullable=False),  # exactly what would be posted
    Column("text_hash", String(64), nullable=False),  # SHA-256 of `text`: what an approval binds to
    Column("state", String(16), nullable=False),  # drafted | approved | posted | superseded
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
"""Reply drafts: one text per group of voices it answers (`siaga.voices.drafting`)."""


heartbeats = Table(
    "heartbeats",
    metadata,
    Column("id", String(64), primary_key=True),  # digest of (heartbeat, group_key)
    Column("heartbeat", String(40), nullable=False),  # `siaga.incidents.routing.heartbeat_key`
    Column("group_key", Text, nullable=False),
    Column("labels", JSON, nullable=False),  # the labels of the alert it raises when quiet
    Column("last_seen_at", DateTime(timezone=True), nullable=False),  # its last sign of life
    Column("due_at", DateTime(timezone=True), nullable=False, index=True),  # quiet if nothing by then
    Column("state", String(8), nullable=False),  # alive | quiet
    Column("quiet_since", DateTime(timezone=True)),  # the start of its last quiet spell
    Column("reported", Boolean, nullable=False),  # that spell's firing / resolved alert was recorded
)
"""Signals expected at least every so often (heartbeat triggers), one row per heartbeat and group:
when each was last seen, and whether it went quiet (`siaga.incidents.heartbeats`)."""

maintenance_windows = Table(
    "maintenance_windows",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("origin", String(16), nullable=False),  # cli | runbook | drill
    Column("runbooks", JSON, nullable=False),  # the runbook ids it covers; [] = every runbook
    Column("match", JSON, nullable=False),  # labels an alert must carry to be covered
    Column("starts_at", DateTime(timezone=True), nullable=False),
    Column("ends_at", DateTime(timezone=True), nullable=False, index=True),
    Column("reason", Text, nullable=False),
    Column("opened_by", String(200)),
    Column("ended_by", String(200)),  # who ended it early
    Column("drill", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("released_at", DateTime(timezone=True)),  # when the alerts it held were routed again
)
"""Maintenance windows: while one covers an alert's route, the alert opens no incident
(`siaga.incidents.maintenance`)."""

suppressed_alerts = Table(
    "suppressed_alerts",
    metadata,
    Column("window_id", String(200), ForeignKey("maintenance_windows.id"), primary_key=True),
    Column("alert_id", Integer, ForeignKey("alerts.id"), primary_key=True),
    Column("runbook_id", String(100), primary_key=True),
    Column("group_key", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("released_at", DateTime(timezone=True)),  # routed again when the window ended
    Column("incident_id", String(40)),  # the incident it opened or joined then
)
"""The alerts a maintenance window held back from opening (or joining) an incident, per runbook."""

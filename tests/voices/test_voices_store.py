"""Voices in the store, on SQLite and PostgreSQL: taken in once however many processes take them in
at once, duplicates of a mention one voice, a person's change and a watcher's claim made once; and
the pure rules (the `voices:` block's located errors, deadlines, refusals, figures)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from siaga.audit import AuditTrail
from siaga.incidents import Alert
from siaga.incidents.recording import process_batch
from siaga.integrations import default_registry
from siaga.runbook import Runbook, RunbookError, parse_runbook
from siaga.store import engine
from siaga.voices import (
    Mention,
    Refusal,
    Voice,
    mention_refusals,
    read_mention,
    remind_at,
    respond_within,
    voice_figures,
)
from siaga.voices.drafting import draft_replies
from siaga.voices.intake import take_in
from siaga.voices.records import VoiceRecords

REGISTRY = default_registry()
T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
RUNBOOK = """\
runbook: desk
title: Answer every voice
severity: sev3
roles: {liaison: [budi], comms: [gita], commander: [alice]}
chain_of_command: [comms, commander]
comms: {languages: [id, en]}
triggers:
  - source: social
    match: {sentiment: negative}
voices:
  respond_within: 24h
  by_author_tier: {influencer: 2h}
  by_sentiment: {furious: 1h}
  remind_before: 3h
steps:
  - {id: note, action: note, with: {text: hi}}
"""
TEMPLATES = {"reply.id.md.j2": "Mohon maaf, kami sedang menanganinya.", "reply.en.md.j2": "Sorry, we are on it."}


def desk(text: str = RUNBOOK, templates: dict[str, str] | None = TEMPLATES) -> Runbook:
    return parse_runbook(text, REGISTRY, file="desk.yaml", templates=templates)


def post(post_id: str, **labels: str) -> Alert:
    values = {"sentiment": "negative", "platform": "x", "post": post_id} | labels
    return Alert(source="social", fingerprint=f"fp-{post_id}-{sorted(labels.items())}", status="firing",
                 labels=values, annotations={"text": f"complaint {post_id}"})


def test_voices_are_taken_in_once_by_racing_processes(store_url: str) -> None:
    store, runbook = engine(store_url), desk()
    batch = [post(f"p{n}") for n in range(40)] + [post("p1", author_tier="regular"), post("p2", platform="twitter")]
    batch += [post("bad", platform="friendster")]
    [opened] = {i for o in process_batch(store, {"desk": runbook}, batch, T0) for i in o.opened + o.joined}
    with ThreadPoolExecutor(4) as pool:
        done = list(pool.map(lambda _: take_in(store, {"desk": runbook}, now=T0), range(4)))
    assert sorted(v for d in done for v in d.taken) == sorted({v for d in done for v in d.taken})  # made once
    assert sum(len(d.taken) for d in done) == 40 and sum(len(d.refused) for d in done) == 1
    found = VoiceRecords(store).find(incident_id=opened)
    assert len(found) == 41 and {v.state for v in found} == {"new", "refused"}
    assert len({(v.platform, v.mention_id) for v in found}) == 41  # "twitter" is x: p2 twice is one voice
    records = [r for r in AuditTrail(store).records(opened) if r.kind.startswith("voice.")]
    assert sorted(r.data["voice"] for r in records) == sorted(v.id for v in found)
    assert AuditTrail(store).verify(opened) is None
    assert take_in(store, {"desk": runbook}, now=T0).taken == []  # nothing left to take


def test_a_change_and_a_claim_are_made_once(store_url: str) -> None:
    store, runbook = engine(store_url), desk()
    process_batch(store, {"desk": runbook}, [post("a"), post("b", author_tier="influencer")], T0)
    take_in(store, {"desk": runbook}, now=T0)
    records = VoiceRecords(store)
    a, b = sorted(records.find(), key=lambda v: v.mention_id)
    assert (b.due_at - b.received_at, b.remind_at) == (timedelta(hours=2), b.due_at - timedelta(minutes=30))
    assert a.remind_at == a.due_at - timedelta(hours=3)
    with ThreadPoolExecutor(4) as pool:
        changes = [c for cs in pool.map(lambda n: records.dismiss([a], reason=f"spam {n}", by="gita"), range(4))
                   for c in cs]
    assert sum(c.done for c in changes) == 1
    assert [r.kind for r in AuditTrail(store).records(a.incident_id)].count("voice.dismissed") == 1
    with ThreadPoolExecutor(4) as pool:
        claims = list(pool.map(lambda _: records.claim([a.id, b.id], "reminders", 1), range(4)))
    assert sorted(i for c in claims for i in c) == [b.id]  # once; a dismissed voice owes nothing
    assert records.miss([b.id], T0) == [b.id] and records.miss([b.id], T0) == []
    assert [c.done for c in records.answer([b], by="gita", url="https://x.example/reply")] == [True]
    assert records.answer([b], by="gita") [0].said == f"{b.id} is answered: left as it is"

    drafted = draft_replies(store, {"desk": runbook}, TEMPLATES, now=T0)
    assert drafted.drafts == [] and drafted.problems == []  # nothing open is left to draft


def test_the_voices_block_is_checked_with_every_error_at_its_place() -> None:
    broken = RUNBOOK.replace("  remind_before: 3h\n", """\
  remind_before: 30h
  owners: [comms, press]
  mentions: [{source: socail}]
  replies: {fees: reply-fees}
  facts: {balance: {id: "Saldo {{ inputs.saldo }}"}}
  platforms: [x, Not A Slug]
""")
    with pytest.raises(RunbookError) as raised:
        desk(broken, {**TEMPLATES, "reply-fees.id.md.j2": "{{ voice.text }} {{ facts.nope }}"})
    said = {(d.path, d.line, d.code): d.message for d in raised.value.diagnostics}
    assert ("voices.platforms[1]", 19, "invalid") in said  # the shape first, each error in its place
    with pytest.raises(RunbookError) as raised:
        desk(broken.replace(", Not A Slug", ""), {**TEMPLATES, "reply-fees.id.md.j2": "{{ voice.text }} {{ facts.nope }}"})
    said = {(d.path, d.line, d.code): d.message for d in raised.value.diagnostics}
    assert said[("voices.remind_before", 14, "remind-too-early")].startswith("`remind_before` is not shorter")
    assert said[("voices.owners[1]", 15, "unknown-role")] == "no role is named `press`"
    assert "no trigger of this runbook takes alerts from socail" in said[("voices.mentions", 16, "mentions-never-arrive")]
    assert said[("voices.replies.fees", 17, "missing-template")] == "no reply template `templates/reply-fees.en.md.j2` in `en`"
    assert said[("voices.replies.fees", 17, "unknown-name")].endswith("a reply never quotes the mention it answers")
    assert ("voices.facts", 18, "missing-fact") in said and ("voices.facts.balance", 18, "missing-language") in said
    assert said[("voices.facts.balance.id", 18, "unknown-input")] == "no input is named `saldo`"
    with pytest.raises(RunbookError) as raised:
        desk(RUNBOOK, {"reply.id.md.j2": "ok"})
    assert [(d.path, d.message) for d in raised.value.diagnostics] == [
        ("voices", "no reply template `templates/reply.en.md.j2` in `en`")]


def test_the_deadline_is_the_shortest_rule_and_bad_mentions_say_what_is_wrong() -> None:
    spec = desk().voices
    assert spec is not None

    def mention(**given: Any) -> Mention | Refusal:
        return read_mention(spec, {"platform": "X", "post": "1"} | given, {"text": "hello"} | given)

    plain = mention()
    assert isinstance(plain, Mention) and (plain.platform, plain.id, plain.text) == ("x", "1", "hello")
    assert respond_within(spec, plain) == timedelta(hours=24)
    assert respond_within(spec, mention(author_tier="influencer")) == timedelta(hours=2)  # type: ignore[arg-type]
    assert respond_within(spec, mention(author_tier="influencer", sentiment="furious")) == timedelta(hours=1)  # type: ignore[arg-type]
    assert remind_at(spec, T0, T0 + timedelta(hours=24)) == T0 + timedelta(hours=21)
    assert remind_at(spec, T0, T0 + timedelta(hours=2)) == T0 + timedelta(minutes=90)  # shorter than 3h: a quarter
    refused = read_mention(spec, {"platform": "orkut"}, {"author": "a" * 300})
    assert isinstance(refused, Refusal) and refused.platform == "orkut"
    assert refused.problem.split("; ") == [
        "the mention has no id (a label or annotation `mention_id` or `post`)",
        "the mention has no text (a label or annotation `text`)",
        ("the platform `orkut` is not one this runbook answers on (x, instagram, facebook, tiktok, youtube, threads, "
        "linkedin, whatsapp, website, app-store, play-store: `voices.platforms`)"),
        "its author is 300 characters long, over the 200 kept",
    ]
    alerts = [post("ok"), Alert(source="social", fingerprint="f", status="firing", labels={"sentiment": "negative"}),
              Alert(source="grafana", fingerprint="g", status="firing", labels={})]
    assert mention_refusals([desk()], alerts) == [
        ("alerts[1]: the mention has no id (a label or annotation `mention_id` or `post`); the mention has no text "
        "(a label or annotation `text`); the mention names no platform (a label or annotation `platform`)")]


def test_the_figures_count_what_became_of_each_voice() -> None:
    def voice(n: int, state: str, platform: str = "x", answered_h: float | None = None) -> Voice:
        return Voice(id=f"v-{n}", incident_id="i", runbook_id="r", platform=platform, mention_id=str(n), alert_id=n,
                     text="t", received_at=T0, state=state, due_at=T0 + timedelta(hours=24),
                     answered_at=T0 + timedelta(hours=answered_h) if answered_h is not None else None)

    figures = voice_figures([voice(1, "answered", answered_h=1), voice(2, "answered", answered_h=3),
                             voice(3, "answered", "instagram", answered_h=30), voice(4, "dismissed"),
                             voice(5, "new"), voice(6, "drafted", "instagram"), voice(7, "refused", "orkut")],
                            T0 + timedelta(hours=25))
    total = figures.total
    assert (total.received, total.answered, total.answered_in_time, total.dismissed, total.open, total.overdue,
            total.refused) == (6, 3, 2, 1, 2, 2, 1)
    assert total.share_in_time == 2 / 5 and total.median_answer_s == 3 * 3600
    assert list(figures.by_platform) == ["x", "instagram", "orkut"]
    assert figures.by_platform["instagram"].share_in_time == 0 and figures.by_platform["orkut"].share_in_time is None
    assert figures.next_due_at == T0 + timedelta(hours=24)
    assert type(figures).from_json(figures.as_json()) == figures

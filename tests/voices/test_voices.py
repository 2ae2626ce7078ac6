"""Answering every voice, end to end: a storm of signed mentions posted to the real receiver (on a
real uvicorn, runs started on a real Prefect server) opens one incident; `siaga voices` lists its
voices with their deadlines (duplicates are one voice, bad mentions refused with the reason and
kept); replies are drafted from the templates and grouped by text; a voice past its deadline is
told up the chain of command by the watcher `siaga up` runs; the reports carry the figures."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from siaga.alerts.receiver import create_app
from siaga.audit import AuditTrail
from siaga.catalog import Catalog
from siaga.cli import main
from siaga.report.deadlines import Due
from siaga.flows.deadline_watch import watch_deadlines
from siaga.flows.server import free_port
from siaga.flows.voice_clocks import check_voice_deadlines
from siaga.integrations import default_registry
from siaga.integrations.outbox import read_outbox
from siaga.settings import Settings
from siaga.store import alerts, engine, voice_alerts, voices
from siaga.voices.intake import take_in
from siaga.voices.records import VoiceRecords
from siaga.wiring import Wiring

from ..support.alert_payloads import signed
from ..support.live_receiver import API_TOKEN, read, serve, settle
from ..support.stack import clean_env
from ..support.voices import environment, mention, run_starter, runbook_folder_of

REGISTRY = default_registry()
RUNBOOK = "voices-storm"
SOCIAL, GENERIC = "social-secret-v15", "generic-secret-v15"
RUNBOOK_YAML = """\
runbook: voices-storm
title: Angry posts about payments
severity: sev3
roles: {commander: [alice], liaison: [budi], comms: [gita], ops: [eko]}
chain_of_command: [ops, commander]
comms: {languages: [id, en]}
inputs:
  topic: {type: string, default: payment-failure}
triggers:
  - source: social
    group_by: [topic]
    inputs: {topic: "{{ alert.labels.topic }}"}
    threshold: {count: 3, within: 2s, match: {sentiment: negative}}  # each storm comes in one webhook
  - source: generic
    match: {event_type: mention, sentiment: negative}
    group_by: [topic]
    inputs: {topic: "{{ alert.labels.topic }}"}
voices:
  respond_within: 24h
  by_author_tier: {influencer: 2h}
  remind_before: 6h
  owners: [comms]
  replies: {fees: reply-fees}
  facts:
    balance: {id: Saldo Anda aman., en: Your balance is safe.}
steps:
  - {id: note, action: note, with: {text: "storm about {{ inputs.topic }}"}}
"""
TEMPLATES = {
    "reply.id.md.j2": "Mohon maaf atas kendala {{ topic }}. {{ facts.balance }} Kabar terbaru: status.pay.example.com",
    "reply.en.md.j2": "We are sorry about the {{ topic }}. {{ facts.balance }} Updates: status.pay.example.com",
    "reply-fees.id.md.j2": "Biaya tidak berubah. Kirim ID transaksi lewat aplikasi ({{ voice.platform }}).",
    "reply-fees.en.md.j2": "Our fees have not changed. Send us the transaction ID in the app ({{ voice.platform }}).",
}


@dataclass
class Desk:
    url: str
    folder: Path
    home: Path
    store: Any
    env: dict[str, str]

    def mentions(self, *mentions: dict[str, Any], source: str = "social") -> None:
        body = json.dumps({"alerts": list(mentions)}).encode()
        answer = httpx.post(f"{self.url}/hooks/{source}", content=body,
                            headers=signed(body, SOCIAL if source == "social" else GENERIC))
        assert answer.status_code == 202, answer.text
        settle(self.url)

    def incident_of(self, topic: str, state: str = "open") -> dict[str, Any]:
        (found,) = [i for i in read(self.url, state=state)
                    if i["runbook_id"] == RUNBOOK and i["group_key"] == json.dumps([topic])]
        return found

    def siaga(self, *args: str, columns: int = 200) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "siaga.cli", *args], capture_output=True, text=True,
                              env=self.env | {"COLUMNS": str(columns)}, timeout=120, check=False)

    def voices(self, capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, Any]]:
        capsys.readouterr()
        assert main(["voices", *args, "--json"]) == 0
        return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def desk(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    home = tmp_path_factory.mktemp("voices")
    folder = runbook_folder_of(home, RUNBOOK_YAML, TEMPLATES)
    runbooks = Catalog.load(folder, REGISTRY).runbooks
    assert list(runbooks) == [RUNBOOK]
    start_run = run_starter(prefect_api, RUNBOOK)
    url = f"sqlite:///{home / 'siaga.db'}"
    store = engine(url)
    settings = Settings.from_environ({"SIAGA_HOOK_SECRET_SOCIAL": SOCIAL, "SIAGA_HOOK_SECRET_GENERIC": GENERIC,
                                      "SIAGA_API_TOKEN": API_TOKEN})
    with environment({"SIAGA_DATABASE_URL": url, "SIAGA_RUNBOOKS": str(folder)}):
        env = clean_env(Path(os.environ["SIAGA_HOME"])) | {"SIAGA_DATABASE_URL": url, "SIAGA_RUNBOOKS": str(folder)}
        with serve(create_app(runbooks, settings, store, start_run), free_port()) as served:
            yield Desk(served, folder, home, store, env)


def test_a_storm_of_mentions_is_one_incident_whose_voices_are_listed_by_deadline(
    desk: Desk, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = f"payment-failure-{uuid.uuid4().hex[:6]}"
    posts = [f"s{n}-{topic[-6:]}" for n in range(12)]
    storm = [mention(p, topic) for p in posts[:10]]
    storm[3]["labels"]["author_tier"] = "influencer"
    storm[4]["labels"]["language"] = "en"
    desk.mentions(*storm[:5])
    desk.mentions(*storm[5:])
    incident = desk.incident_of(topic)
    assert incident["alerts"] == 10
    # the same mentions again: the same webhook (a repeat), the same post re-scored an hour
    # later (a new alert), and the same post from the listening tool's generic webhook
    desk.mentions(*storm[:2])
    desk.mentions(mention(posts[0], topic, author_tier="regular") | {"starts_at": "2026-11-24T04:00:00Z"})
    desk.mentions(mention(posts[1], topic, event_type="mention"), source="generic")
    assert [i["id"] for i in read(desk.url, state="open")
            if i["group_key"] == json.dumps([topic])] == [incident["id"]]

    listed = desk.voices(capsys, incident["id"])
    assert sorted(v["mention_id"] for v in listed) == sorted(posts[:10])  # one voice per mention
    assert {v["incident_id"] for v in listed} == {incident["id"]} and {v["state"] for v in listed} == {"new"}
    first = listed[0]
    assert first["mention_id"] == posts[3] and first["author_tier"] == "influencer"  # due first: 2 hours
    for v in listed:
        window = datetime.fromisoformat(v["due_at"]) - datetime.fromisoformat(v["received_at"])
        assert window == (timedelta(hours=2) if v["mention_id"] == posts[3] else timedelta(hours=24))
        assert 0 < v["left_s"] <= window.total_seconds() and not v["overdue"]
        assert v["text"] == "Pembayaran saya gagal!" and v["url"] == f"https://x.example/{v['mention_id']}"
    assert [v["left_s"] for v in listed] == sorted(v["left_s"] for v in listed)
    with desk.store.connect() as connection:  # the repeat was recorded once; the other copies joined the voices
        carried = dict(connection.execute(select(voices.c.mention_id, func.count()).select_from(
            voice_alerts.join(voices, voices.c.id == voice_alerts.c.voice_id)).where(
            voices.c.incident_id == incident["id"]).group_by(voices.c.mention_id)).all())
    assert carried == {p: 2 if p in posts[:2] else 1 for p in posts[:10]}

    # at 80 columns every voice id is printed whole
    table = desk.siaga("voices", incident["id"][:12], columns=80)
    assert table.returncode == 0, table.stderr
    assert all(len(line) <= 80 for line in table.stdout.splitlines()), table.stdout
    assert all(v["id"] in table.stdout for v in listed) and "10 open, 0 overdue" in table.stdout


def test_bad_mentions_are_refused_with_the_reason_and_lose_nothing(
    desk: Desk, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = f"payment-failure-{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv("SIAGA_SECRET_SOCIAL_TOKEN", "tok-8d1e0c5a77")
    desk.mentions(mention(f"ok0-{topic[-6:]}", topic, text="[/red] [link=https://evil.example]refund here[/link]"),
                  mention(f"ok1-{topic[-6:]}", topic, author="[bold]@mallory"),
                  mention(f"ok2-{topic[-6:]}", topic, text="your bot posted tok-8d1e0c5a77 in a reply!"))
    incident = desk.incident_of(topic)
    huge = "gagal" * 6000
    desk.mentions(
        mention(f"nt-{topic[-6:]}", topic, text=None),
        {"labels": {"sentiment": "negative", "topic": topic, "platform": "x"}, "annotations": {"text": "no id here"}},
        mention(f"ms-{topic[-6:]}", topic, platform="myspace"),
        mention(f"hg-{topic[-6:]}", topic, text=huge),
    )
    shown = {v["mention_id"]: v for v in desk.voices(capsys, incident["id"], "--all")}
    assert shown[f"ok2-{topic[-6:]}"]["text"] == "your bot posted [secret:social-token] in a reply!"  # printed redacted
    refused = [v for v in shown.values() if v["state"] == "refused"]
    assert len(refused) == 4 and len(shown) == 7
    problems = sorted(v["problem"] for v in refused)
    assert any(p.startswith("the mention has no id") for p in problems)
    assert any(p.startswith("the mention has no text") for p in problems)
    assert any("platform `myspace` is not one this runbook answers on" in p for p in problems)
    assert any("the text is 30,000 characters long, over the 25,000" in p for p in problems)
    assert all(v["due_at"] is None and v["left_s"] is None for v in refused)
    # nothing is lost: each refused voice names its alert, which holds the mention whole
    with desk.store.connect() as connection:
        kept = {row.id: row for row in connection.execute(alerts.select().where(
            alerts.c.id.in_([v["alert_id"] for v in refused])))}
    assert len(kept) == 4
    assert any(row.annotations.get("text") == huge for row in kept.values())
    # the plain list shows the open ones and says how many were refused
    capsys.readouterr()
    assert main(["voices", incident["id"]]) == 0
    said = capsys.readouterr().out
    assert "@ok0-" in said and ": [/red] [link=" in said and "[bold]@mallory" in said  # shown, not obeyed
    assert "3 open, 0 overdue, 4 closed" in said and f"siaga voices {incident['id']} --all` shows the 4 closed" in said


def test_replies_are_drafted_by_topic_and_language_and_grouped_by_their_text(
    desk: Desk, capsys: pytest.CaptureFixture[str]
) -> None:
    fees, failure = "fees", f"payment-failure-{uuid.uuid4().hex[:6]}"
    desk.mentions(*[mention(f"f{n}-{failure}", fees, platform="instagram" if n % 2 else "x",
                            text="Kenapa saya ditagih dua kali?") for n in range(4)])
    desk.mentions(*[mention(f"p{n}-{failure}", failure, language="en" if n == 0 else "id") for n in range(3)])
    fee_incident, failure_incident = desk.incident_of(fees), desk.incident_of(failure)

    capsys.readouterr()
    assert main(["voices", "draft", fee_incident["id"], "--json"]) == 0
    drafted = json.loads(capsys.readouterr().out)
    assert drafted["problems"] == []
    groups = {(d["language"], d["text"]): d for d in drafted["drafts"]}
    assert set(groups) == {("id", "Biaya tidak berubah. Kirim ID transaksi lewat aplikasi (x)."),
                           ("id", "Biaya tidak berubah. Kirim ID transaksi lewat aplikasi (instagram).")}
    assert sorted(len(d["voices"]) for d in groups.values()) == [2, 2]  # one text answers each pair
    for d in groups.values():
        assert d["text_hash"] == hashlib.sha256(d["text"].encode()).hexdigest()  # what an approval binds to
        assert d["topic"] == "fees" and d["template"] == "reply-fees"

    capsys.readouterr()
    assert main(["voices", "draft", failure_incident["id"], "--json"]) == 0
    texts = {d["language"]: d for d in json.loads(capsys.readouterr().out)["drafts"]}
    assert texts["id"]["text"] == (f"Mohon maaf atas kendala {failure}. Saldo Anda aman. "
                                   "Kabar terbaru: status.pay.example.com")
    assert texts["en"]["text"].startswith(f"We are sorry about the {failure}. Your balance is safe.")
    assert (len(texts["id"]["voices"]), len(texts["en"]["voices"])) == (2, 1)
    listed = desk.voices(capsys, failure_incident["id"])
    assert {v["state"] for v in listed} == {"drafted"}
    assert {v["draft_id"] for v in listed} == {texts["id"]["id"], texts["en"]["id"]}

    # drafting again with nothing changed changes nothing (no new record); a changed template
    # makes a new draft, and the old one is superseded
    trail = AuditTrail(desk.store)
    before = trail.count(failure_incident["id"])
    capsys.readouterr()
    assert main(["voices", "draft", failure_incident["id"], "--json"]) == 0
    again = json.loads(capsys.readouterr().out)["drafts"]
    assert sorted(d["id"] for d in again) == sorted(d["id"] for d in texts.values())
    assert trail.count(failure_incident["id"]) == before
    (desk.folder / "templates" / "reply.en.md.j2").write_text("We are sorry. {{ facts.balance }}")
    try:
        capsys.readouterr()
        assert main(["voices", "draft", failure_incident["id"], "--json"]) == 0
        changed = {d["language"]: d for d in json.loads(capsys.readouterr().out)["drafts"]}
    finally:
        (desk.folder / "templates" / "reply.en.md.j2").write_text(TEMPLATES["reply.en.md.j2"])
    assert changed["en"]["id"] != texts["en"]["id"] and changed["id"]["id"] == texts["id"]["id"]
    [record] = [r for r in trail.records(failure_incident["id"])[before:] if r.kind == "voices.drafted"]
    assert record.data["draft"] == changed["en"]["id"] and record.data["text_hash"] == changed["en"]["text_hash"]

    # a voice is dismissed with a reason, in the trail; without one (or without a name) it is not
    target = listed[0]["id"]
    assert main(["voices", "dismiss", target, "--as", "gita"]) == 2
    assert main(["voices", "dismiss", target, "--reason", "spam"]) == 2  # who says so?
    assert "say who you are" in capsys.readouterr().err
    assert main(["voices", "dismiss", target[:10], "--reason", "a bot account", "--as", "gita"]) == 0
    assert main(["voices", "dismiss", target, "--reason", "twice", "--as", "gita"]) == 2  # already dismissed
    [dismissed] = [r for r in trail.records(failure_incident["id"]) if r.kind == "voice.dismissed"]
    assert (dismissed.actor, dismissed.channel, dismissed.data["voice"], dismissed.data["reason"]) == (
        "gita", "cli", target, "a bot account")


def test_a_voice_past_its_deadline_is_told_up_the_chain_of_command(desk: Desk, siaga_home: Path) -> None:
    topic = f"fees-{uuid.uuid4().hex[:6]}"
    desk.mentions(*[mention(f"c{n}-{topic}", topic) for n in range(3)],
                  mention(f"c9-{topic}", topic, author_tier="influencer"))
    incident = desk.incident_of(topic)
    take_in(desk.store, Catalog.load(desk.folder, REGISTRY).runbooks)  # as the receiver's worker or `siaga up` does
    found = {v.mention_id: v for v in VoiceRecords(desk.store).find(incident_id=incident["id"])}
    vip = found[f"c9-{topic}"]
    t0 = vip.received_at

    def at(minutes: float) -> list[Due]:
        done = asyncio.run(check_voice_deadlines(t0 + timedelta(minutes=minutes), registry=REGISTRY,
                                                 folder=desk.folder, store=desk.store,
                                                 wiring=Wiring(Settings.from_environ(os.environ))))
        return [owed for voice_id, owed in done if voice_id == vip.id]

    def told(person: str) -> list[dict[str, Any]]:
        return [e for e in read_outbox(siaga_home) if e["to"] == f"person:{person}" and vip.id in e["message"]]

    assert at(10) == []
    assert at(91) == [Due("remind", 1)]  # a quarter of its 2 hours before (its 6h lead is longer than its time)
    assert at(95) == []
    [reminder] = told("gita")
    assert "1 voice(s) to answer" in reminder["subject"] and incident["id"] in reminder["subject"]
    assert told("eko") == []
    assert at(121) == [Due("miss", 1)]  # its deadline: level 1 of the chain (ops) hears
    [missed] = told("eko")
    assert missed["subject"].startswith("Voices MISSED") and "level 1 of the chain of command" in missed["message"]
    assert at(140) == []
    assert at(151) == [Due("escalate", 2)]  # a quarter of its time later: the commander
    assert "level 2 of the chain of command" in told("alice")[0]["message"]
    assert at(600) == []  # the chain has no level above
    after = VoiceRecords(desk.store).find(ids=[vip.id])[0]
    assert (after.reminders, after.escalated, after.state) == (1, 2, "new") and after.missed_at is not None
    kinds = [(r.kind, r.data["level"]) for r in AuditTrail(desk.store).records(incident["id"])
             if r.kind.startswith("voices.") and vip.id in r.data.get("voices", [])]
    assert kinds == [("voices.reminded", 1), ("voices.missed", 1), ("voices.escalated", 2)]
    # the others, due in 24 hours, were neither reminded nor missed in those hours
    assert all(v.reminders == 0 for v in VoiceRecords(desk.store).find(incident_id=incident["id"]) if v.id != vip.id)


def test_a_mention_after_its_incident_resolved_is_a_late_voice_the_watcher_of_siaga_up_takes_in(
    desk: Desk, siaga_home: Path
) -> None:
    topic = f"scam-{uuid.uuid4().hex[:6]}"
    storm = [mention(f"r{n}-{topic}", topic) for n in range(3)]
    desk.mentions(*storm)
    incident = desk.incident_of(topic)
    desk.mentions(*[m | {"status": "resolved"} for m in storm])
    assert desk.incident_of(topic, state="resolved")["id"] == incident["id"]
    time.sleep(2.5)  # the threshold's window: a mention now is no new storm
    desk.mentions(mention(f"late-{topic}", topic, author_tier="influencer"))  # below the threshold: no incident
    assert [i for i in read(desk.url, state="open")
            if i["group_key"] == json.dumps([topic])] == []

    async def watch() -> None:
        stop = asyncio.Event()
        runbooks = Catalog.load(desk.folder, REGISTRY).runbooks
        watcher = asyncio.create_task(watch_deadlines(stop, interval=0.1, folder=desk.folder, runbooks=runbooks,
                                                      wiring=Wiring(Settings.from_environ(os.environ))))
        try:
            for _ in range(100):
                if VoiceRecords(desk.store).find(incident_id=incident["id"]):
                    return
                await asyncio.sleep(0.1)
            raise AssertionError("the watcher took no late voice in")
        finally:
            stop.set()
            await watcher

    asyncio.run(watch())
    found = {v.mention_id: v for v in VoiceRecords(desk.store).find(incident_id=incident["id"])}
    assert set(found) == {f"r{n}-{topic}" for n in range(3)} | {f"late-{topic}"}
    late = found[f"late-{topic}"]
    assert late.late and late.state == "new" and late.due_at == late.received_at + timedelta(hours=2)
    assert not any(v.late for k, v in found.items() if k != f"late-{topic}")


def test_the_situation_and_post_incident_reports_carry_the_voices_figures(
    desk: Desk, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    topic = f"outage-{uuid.uuid4().hex[:6]}"
    desk.mentions(*[mention(f"x{n}-{topic}", topic) for n in range(4)],
                  *[mention(f"i{n}-{topic}", topic, platform="instagram") for n in range(2)])
    incident = desk.incident_of(topic)
    desk.mentions(mention(f"bad-{topic}", topic, platform="friendster"))
    assert len(desk.voices(capsys, incident["id"])) == 6  # `siaga voices` takes them in and lists the open ones
    records = VoiceRecords(desk.store)
    voices = {v.mention_id: v for v in records.find(incident_id=incident["id"])}
    early = voices[f"x0-{topic}"].received_at
    assert all(c.done for c in records.answer([voices[f"x0-{topic}"], voices[f"i0-{topic}"]], by="gita",
                                              at=early + timedelta(hours=1)))
    assert all(c.done for c in records.answer([voices[f"x1-{topic}"]], by="gita", at=early + timedelta(hours=30)))
    assert main(["voices", "answered", voices[f"x2-{topic}"].id, "--as", "fajar", "--url", "https://x.example/r"]) == 0
    assert main(["voices", "dismiss", voices[f"x3-{topic}"].id, "--reason", "a bot", "--as", "gita"]) == 0

    capsys.readouterr()
    assert main(["sitrep", incident["id"], "--json"]) == 0
    sitrep = json.loads(capsys.readouterr().out)
    [line] = [c for c in sitrep["conditions"] if c.startswith("Voices:")]
    assert line.startswith("Voices: 6 received (x 4, instagram 2); 4 answered, 3 within their deadline "
                           "(60% of the 5 owed an answer; median ")
    assert "1 dismissed; 1 still open" in line and "1 mention(s) refused" in line
    assert any(n.startswith("Answers to 1 voice(s)") and f"siaga voices {incident['id']}" in n for n in sitrep["needs"])

    report = tmp_path / "report.md"
    assert main(["report", incident["id"], "-o", str(report)]) == 0
    text = report.read_text()
    section = text[text.index("## Voices"):text.index("## Lessons learned")]
    rows = [line for line in section.splitlines() if line.startswith("| ")][2:]
    assert rows[0].startswith("| x | 4 | 3 | 2 (67%) |") and "| 1 | 0 | 0 |" in rows[0]
    assert rows[1].startswith("| instagram | 2 | 1 | 1 (50%) | 1h 00m | 0 | 1 | 0 |")
    assert rows[2].startswith("| friendster | 0 | 0 | 0 | - | 0 | 0 | 1 |")
    assert rows[3].startswith("| all | 6 | 4 | 3 (60%) |") and rows[3].endswith("| 1 | 1 | 1 |")
    assert "2 of the 5 voices owed an answer were not answered within their deadline" in text
    html = tmp_path / "report.html"
    assert main(["report", incident["id"], "--format", "html", "-o", str(html)]) == 0
    assert '<h2 id="voices">Voices</h2>' in html.read_text() and "<td>friendster</td>" in html.read_text()

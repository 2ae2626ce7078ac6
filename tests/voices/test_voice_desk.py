"""The voice desk end to end: mentions posted to the real receiver (on a real uvicorn) open one
incident; the runbook's flow runs on a real Prefect server, drafts the replies, waits at the
approval gate of `voices.answer`, and posts each approved reply once per voice to stand-ins that
speak X's and Graph's wire formats. A retry and a restart in the middle post nothing twice; what
Prefect's unauthenticated API is made to say changes nothing that is posted; a text changed after
it was put to people needs their approval again; a drill answers the mentions it held back, posts
nothing and loses points for a voice answered late."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect import get_client
from prefect.settings import PREFECT_API_URL

from siaga.actions import ActionContext, ActionFailed, Mode
from siaga.alerts.receiver import create_app
from siaga.approvals.records import Gate, GateRecords, gate_id
from siaga.approvals.seal import ledger_key
from siaga.audit import AuditTrail
from siaga.catalog import Catalog
from siaga.cli import main
from siaga.drills.records import DrillRecords
from siaga.flows import compile_runbook
from siaga.flows.server import free_port
from siaga.integrations import default_registry
from siaga.settings import Settings
from siaga.store import engine, maintenance_windows
from siaga.voices.desk import StoreDesk, drill_incident_id
from siaga.voices.records import VoiceRecords

from ..support.alert_payloads import signed
from ..support.gate_driver import answer, code_for, parked, vote
from ..support.live_receiver import API_TOKEN, read, serve, settle
from ..support.social_standins import Drop, FakeGraph, FakeX, Reply, Slow, production_accounts
from ..support.voices import environment, mention, run_starter, runbook_folder_of

RUNBOOK = "desk-storm"
SOCIAL = "social-secret-desk"
REGISTRY = default_registry()
SECRETS = {"SIAGA_SECRET_X_CK": "desk-ck-1a2b", "SIAGA_SECRET_X_CS": "desk-cs-3c4d", "SIAGA_SECRET_X_AT": "desk-at-5e6f",
           "SIAGA_SECRET_X_ATS": "desk-ats-7a8b", "SIAGA_SECRET_META": "EAAGdeskMetaToken0000"}
RUNBOOK_YAML = """\
runbook: desk-storm
title: Angry posts, every one answered
severity: sev3
roles: {commander: [alice], liaison: [budi], comms: [gita, fajar]}
chain_of_command: [comms, commander]
comms: {languages: [id, en]}
inputs:
  topic: {type: string, default: payment-failure}
triggers:
  - source: social
    group_by: [topic]
    inputs: {topic: "{{ alert.labels.topic }}"}
    threshold: {count: 3, within: 2s, match: {sentiment: negative}}
voices:
  respond_within: 24h
  by_author_tier: {influencer: 1s}
  owners: [comms]
  facts:
    balance: {id: Saldo Anda aman., en: Your balance is safe.}
drill:
  maintenance: {for: 30m, match: {env: drill}}
steps:
  - id: listen
    action: wait
    with: {duration: "{{ '0s' if mode == 'live' else '6s' }}"}
  - id: draft-replies
    action: voices.draft
    after: [listen]
  - id: answer-voices
    action: voices.answer
    after: [draft-replies]
    when: "{{ steps['draft-replies'].output.drafts }}"
    approval: {from: [comms], timeout: 10m}
    retries: 1
    retry_delay: 0s
    continue_on_error: true
    with: {replies: "{{ steps['draft-replies'].output.drafts }}"}
"""
ROSTER = """
people:
  alice: {name: Alice Wibowo, roles: [commander]}
  budi: {name: Budi Santoso, roles: [liaison]}
  gita: {name: Gita Purnama, roles: [comms]}
  fajar: {name: Fajar Nugroho, roles: [comms]}
"""
TEMPLATES = {
    "reply.id.md.j2": "Mohon maaf atas kendala {{ topic }}. {{ facts.balance }}",
    "reply.en.md.j2": "Sorry about the {{ topic }}. {{ facts.balance }}",
}


@dataclass
class Desk:
    url: str
    folder: Path
    home: Path
    x: FakeX
    graph: FakeGraph
    flow: Any

    def mentions(self, *mentions: dict[str, Any]) -> None:
        body = json.dumps({"alerts": list(mentions)}).encode()
        answered = httpx.post(f"{self.url}/hooks/social", content=body, headers=signed(body, SOCIAL))
        assert answered.status_code == 202, answered.text
        settle(self.url)

    def incident_of(self, topic: str) -> dict[str, Any]:
        (found,) = [i for i in read(self.url, state="open")
                    if i["runbook_id"] == RUNBOOK and i["group_key"] == json.dumps([topic])]
        return found

    def run(self, incident: dict[str, Any], topic: str, **extra: Any) -> Any:
        """The incident's run, as the receiver's deployment would start it, in this process."""
        return self.flow(topic=topic, requested_by="alert", return_state=True,
                         incident={"id": incident["id"], "opened_at": incident["opened_at"]}, **extra)

    def replies(self) -> list[dict[str, Any]]:
        return [p for p in self.x.posts if p.get("referenced_tweets")]


def x_mention(post: str, topic: str, author: str, **labels: str) -> dict[str, Any]:
    return mention(post, topic, author=author, **labels)


@pytest.fixture(scope="module")
def desk(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    home = tmp_path_factory.mktemp("desk")
    folder = runbook_folder_of(home, RUNBOOK_YAML, TEMPLATES)
    (folder / "roster.yaml").write_text(ROSTER)
    start_run = run_starter(prefect_api, RUNBOOK)
    url = f"sqlite:///{home / 'siaga.db'}"
    keys = {name: SECRETS["SIAGA_SECRET_X_" + short.upper()]
            for name, short in (("consumer_key", "ck"), ("consumer_secret", "cs"), ("access_token", "at"),
                                ("access_token_secret", "ats"))}
    with (environment({"SIAGA_DATABASE_URL": url, "SIAGA_RUNBOOKS": str(folder), **SECRETS}),
          FakeX(keys).running() as x, FakeGraph(SECRETS["SIAGA_SECRET_META"]).running() as graph):
        assert isinstance(x, FakeX) and isinstance(graph, FakeGraph)
        (folder / "connections.yaml").write_text(json.dumps({"connections": production_accounts(x, graph)}))
        catalog = Catalog.load(folder, REGISTRY)
        assert not catalog.problems, catalog.problems
        settings = Settings.from_environ({"SIAGA_HOOK_SECRET_SOCIAL": SOCIAL, "SIAGA_API_TOKEN": API_TOKEN})
        app = create_app(catalog.runbooks, settings, engine(url), start_run)
        with serve(app, free_port()) as served:
            yield Desk(served, folder, home, x, graph, compile_runbook(catalog.runbooks[RUNBOOK], REGISTRY))


async def gate_of(incident_id: str | None, step: str = "answer-voices", *, after: set[str] = frozenset(),
                  run_id: str | None = None) -> Gate:
    """The open gate at `step` of a run of the incident (a run not among `after`; or of `run_id`),
    once its people were sent their codes."""
    records = GateRecords(engine(Settings.from_environ(os.environ).store_url))
    for _ in range(600):
        found = [records.get(gate_id(run_id, step))] if run_id else records.find(state="open", incident_id=incident_id)
        for gate in found:
            if (gate is not None and gate.is_open and gate.step_id == step and gate.run_id not in after
                    and {"gita", "fajar"} <= records.holders_of_codes(gate.id)):
                return gate
        await asyncio.sleep(0.1)
    raise AssertionError(f"no gate opened at {step} of {incident_id or run_id}")


def resolve(desk: Desk, storm: list[dict[str, Any]]) -> None:
    """The storm passes: its mentions resolve, and so does its incident (a drill may then run)."""
    desk.mentions(*[m | {"status": "resolved"} for m in storm])


def test_an_approved_reply_is_posted_once_per_voice_and_a_retry_or_restart_posts_nothing_twice(
    desk: Desk, siaga_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = f"failure-{uuid.uuid4().hex[:6]}"
    posts = [f"179100000000000{n:04d}" for n in range(3)]
    fb_post, ig_comment = f"{desk.graph.page_id}_91{uuid.uuid4().int % 10**12:012d}", f"178{uuid.uuid4().int % 10**13:013d}"
    desk.graph.seed_comment(fb_post, on="facebook", text="Saldo saya terpotong!")
    desk.graph.seed_comment(ig_comment, on="instagram", text="Kenapa gagal terus?")
    storm = [x_mention(p, topic, f"@cust{n}") for n, p in enumerate(posts)]
    storm += [mention(fb_post, topic, platform="facebook", author="Budi"),
              mention(ig_comment, topic, platform="instagram", author="citra.k"),
              mention("7300000000000000001", topic, platform="tiktok", author="@dewi")]
    desk.mentions(*storm)
    incident = desk.incident_of(topic)
    try:
        # X takes voice 2's reply and drops the connection (outcome unknown); the retry's look at
        # the timeline fails too: the step fails with voice 2 open and the reason kept
        desk.x.fail("POST", "/2/tweets", Slow(0), Drop(after=True))
        desk.x.fail("GET", f"/2/users/{desk.x.user_id}/tweets", *[Reply(503, {"title": "Service Unavailable"})] * 4)

        async def first_run() -> Any:
            running = asyncio.create_task(desk.run(incident, topic))
            gate = await gate_of(incident["id"])
            params = gate.params or {}
            texts = {r["text"] for r in params["replies"]}
            assert texts == {f"Mohon maaf atas kendala {topic}. Saldo Anda aman."}
            assert sorted(t["voice"] for r in params["replies"] for t in r["voices"]) == sorted(
                v.id for v in VoiceRecords(engine(Settings.from_environ(os.environ).store_url)).find(incident_id=incident["id"]) if v.platform != "tiktok")
            assert "@cust0 Mohon maaf" in json.dumps(gate.evidence["preview"])  # the reply as posted, per voice
            assert vote(gate.run_id, "answer-voices", "gita", code_for(siaga_home, "gita", gate.run_id, "answer-voices")
                        ).outcome == "decided"
            return gate.run_id, await running

        run_id, state = asyncio.run(first_run())
        assert state.is_completed(), state.message
        replies = desk.replies()
        assert sorted((r["referenced_tweets"][0]["id"], r["raw"]) for r in replies) == sorted(
            (p, f"@cust{n} Mohon maaf atas kendala {topic}. Saldo Anda aman.") for n, p in enumerate(posts))
        assert [len(desk.graph.comments[o]) for o in (fb_post, ig_comment)] == [1, 1]
        voices = {v.mention_id: v for v in VoiceRecords(engine(Settings.from_environ(os.environ).store_url)).find(incident_id=incident["id"])}
        (second,) = [v for v in voices.values() if v.platform == "x" and v.state != "answered"]
        assert second.state == "drafted" and "503" in (second.problem or ""), second.problem
        assert all(v.reply_url.startswith("https://x.com/") for v in voices.values() if v.platform == "x" and v != second)
        assert voices[fb_post].state == voices[ig_comment].state == "answered"
        assert voices["7300000000000000001"].state == "drafted"  # no reply action on TikTok: by hand
        capsys.readouterr()
        assert main(["voices", incident["id"], "--json"]) == 0
        shown = {v["id"]: v for v in json.loads(capsys.readouterr().out)}
        assert shown[second.id]["problem"] == second.problem and shown[second.id]["state"] == "drafted"

        # a restart: another run of the incident, approved again; the dead attempt is settled at X
        # (its reply is there), so nothing is posted twice
        async def second_run() -> Any:
            running = asyncio.create_task(desk.run(incident, topic))
            gate = await gate_of(incident["id"], after={run_id})
            assert [t["voice"] for r in gate.params["replies"] for t in r["voices"]] == [second.id]  # type: ignore[index]
            vote(gate.run_id, "answer-voices", "fajar", code_for(siaga_home, "fajar", gate.run_id, "answer-voices"))
            return await running

        assert asyncio.run(second_run()).is_completed()
        assert len(desk.replies()) == len(replies) == 3, "a reply went out twice"
        after = VoiceRecords(engine(Settings.from_environ(os.environ).store_url)).find(ids=[second.id])[0]
        assert after.state == "answered" and after.problem is None
        answered = [r for r in AuditTrail(engine(Settings.from_environ(os.environ).store_url)).records(incident["id"]) if r.kind == "voice.answered"]
        assert len(answered) == 5 and {r.data["voice"] for r in answered} == {
            v.id for v in voices.values() if v.platform != "tiktok"}
        assert all(r.data["text_hash"] and r.channel == "answer-voices" for r in answered)
    finally:
        resolve(desk, storm)


def test_prefect_api_attacks_change_nothing_and_a_changed_text_needs_a_new_approval(
    desk: Desk, siaga_home: Path
) -> None:
    topic = f"fees-{uuid.uuid4().hex[:6]}"
    posts = [f"179200000000000{n:04d}" for n in range(3)]
    storm = [x_mention(p, topic, f"@fee{n}") for n, p in enumerate(posts)]
    desk.mentions(*storm)
    incident = desk.incident_of(topic)
    template = desk.folder / "templates" / "reply.id.md.j2"
    seen = len(desk.replies())
    try:
        async def attacked() -> Any:
            running = asyncio.create_task(desk.run(incident, topic))
            gate = await gate_of(incident["id"])
            api = PREFECT_API_URL.value()
            # the attacker rewrites the run's parameters and resumes it with forged input
            async with get_client() as client:
                run = await client.read_flow_run(uuid.UUID(gate.run_id))
            forged = {**run.parameters, "topic": "Transfer your balance to evil.example"}
            async with httpx.AsyncClient(timeout=30) as http:
                patched = await http.patch(f"{api}/flow_runs/{gate.run_id}", json={"parameters": forged})
            assert patched.status_code == 204, patched.text
            key = await parked(gate.run_id)
            for code in ("00000000", "99999999"):
                await answer(gate.run_id, "answer-voices", "gita", code)
                key = await parked(gate.run_id, after_key=key)
            counted = GateRecords(engine(Settings.from_environ(os.environ).store_url),
                                  ledger_key(None, Settings.from_environ(os.environ))).votes(gate)
            assert not any(v.person for v in counted), "a forged answer counted"
            assert len(desk.replies()) == seen
            # meanwhile the team corrects the text: the voices are drafted again, with a new text
            template.write_text("Biaya tidak berubah. {{ facts.balance }}")
            assert main(["voices", "draft", incident["id"]]) == 0
            # the people approve the text they were shown: it is no longer what Siaga would send
            vote(gate.run_id, "answer-voices", "gita", code_for(siaga_home, "gita", gate.run_id, "answer-voices"))
            return gate, await running

        gate, state = asyncio.run(attacked())
        assert state.is_completed(), state.message
        assert len(desk.replies()) == seen, "the approved text was posted after it had changed, or the forged one"
        events = GateRecords(engine(Settings.from_environ(os.environ).store_url)).events(gate_id(gate.run_id, "answer-voices"))
        assert [e["detail"]["reason"] for e in events if e["kind"] == "refused"] == [
            "wrong code (1 of 5)", "wrong code (2 of 5)"]
        voices = VoiceRecords(engine(Settings.from_environ(os.environ).store_url)).find(incident_id=incident["id"])
        assert {v.state for v in voices} == {"drafted"}

        # the new text is put to people in a new round: approved, it goes out once per voice
        async def new_round() -> Any:
            running = asyncio.create_task(desk.run(incident, topic))
            fresh = await gate_of(incident["id"], after={gate.run_id})
            assert [r["text"] for r in fresh.params["replies"]] == ["Biaya tidak berubah. Saldo Anda aman."]  # type: ignore[index]
            vote(fresh.run_id, "answer-voices", "fajar", code_for(siaga_home, "fajar", fresh.run_id, "answer-voices"))
            return await running

        assert asyncio.run(new_round()).is_completed()
        new = desk.replies()[seen:]
        assert sorted(r["raw"] for r in new) == sorted(f"@fee{n} Biaya tidak berubah. Saldo Anda aman." for n in range(3))
        assert "evil" not in json.dumps(desk.x.posts)
        # a reply whose text is not the one Siaga drafted is refused before anything is posted,
        # whatever hash it carries
        forged = dict(GateRecords(engine(Settings.from_environ(os.environ).store_url)).find(incident_id=incident["id"])[-1].params["replies"][0])  # type: ignore[index]
        forged["text"] = "Send your OTP to evil.example"
        forged["text_hash"] = hashlib.sha256(forged["text"].encode()).hexdigest()
        runbook = Catalog.load(desk.folder, REGISTRY).runbooks[RUNBOOK]
        context = ActionContext(runbook_id=RUNBOOK, step_id="answer-voices", run_id="forged", mode=Mode.LIVE,
                                home=siaga_home, incident_id=incident["id"])
        with pytest.raises(ActionFailed, match="not a reply Siaga drafted"):
            StoreDesk(engine(Settings.from_environ(os.environ).store_url), runbook, desk.folder, None).admit(forged, context)
    finally:
        template.write_text(TEMPLATES["reply.id.md.j2"])
        resolve(desk, storm)


def test_a_drill_answers_the_mentions_it_held_posts_nothing_and_loses_points_for_a_late_voice(
    desk: Desk, siaga_home: Path
) -> None:
    topic = f"drill-{uuid.uuid4().hex[:6]}"
    seen = len(desk.x.requests) + len(desk.graph.requests)
    store = engine(Settings.from_environ(os.environ).store_url)

    async def drill() -> Any:
        running = asyncio.create_task(desk.flow(topic=topic, mode="drill", return_state=True))
        for _ in range(300):  # the drill's maintenance window is open: its mentions open no incident
            with store.connect() as connection:
                window = connection.execute(maintenance_windows.select().where(
                    maintenance_windows.c.id.like("drill-%"), maintenance_windows.c.released_at.is_(None),
                    maintenance_windows.c.reason.like(f"%{RUNBOOK}"))).mappings().all()
            if window:
                break
            await asyncio.sleep(0.1)
        run_id = max(window, key=lambda w: w["created_at"])["id"].removeprefix("drill-")
        await asyncio.to_thread(desk.mentions, *[
            x_mention(f"179300000000000{n:04d}", topic, f"@dr{n}", env="drill",
                      **({"author_tier": "influencer"} if n == 0 else {})) for n in range(3)])
        assert not [i for i in read(desk.url, state="open") if i["group_key"] == json.dumps([topic])]
        gate = await gate_of(None, run_id=run_id)
        assert gate.mode == "drill" and gate.run_id == run_id
        vote(gate.run_id, "answer-voices", "gita", code_for(siaga_home, "gita", gate.run_id, "answer-voices"))
        return run_id, await running

    run_id, state = asyncio.run(drill())
    assert state.is_completed(), state.message
    assert len(desk.x.requests) + len(desk.graph.requests) == seen, "a drill reached a platform"
    voices = {v.mention_id: v for v in VoiceRecords(store).find(incident_id=drill_incident_id(run_id))}
    assert len(voices) == 3 and {v.state for v in voices.values()} == {"answered"}
    assert {v.answered_by for v in voices.values()} == {"drill: recorded, not posted"}
    recorded = [r for r in AuditTrail(store).records(drill_incident_id(run_id)) if r.kind == "voice.answered"]
    assert all(r.data["drill"] for r in recorded) and len(recorded) == 3
    (scored,) = [d for d in DrillRecords(store).find(RUNBOOK) if d["run_id"] == run_id]
    late = voices["1793000000000000000"].id
    assert scored["figures"]["voices_late"] == [late]
    assert any("1 voice(s) past their deadline: 1 answered late" in d["reason"] and d["points"] == 2
               for d in scored["figures"]["deductions"]), scored["figures"]["deductions"]

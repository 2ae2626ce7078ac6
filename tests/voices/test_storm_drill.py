"""The bundled `social-media-storm` runbook's drill rehearses the voice desk end to end, as a comms
team would on the 25th of the month: the drill opens its maintenance window, the listening tool's
test mode posts mentions (labelled ``env: drill``) to the real receiver, which holds them back from
opening an incident; the drill drafts a reply per topic and language from the bundled templates,
people approve each text at the gate, and every voice is answered by a record of what would have
been posted. The stand-ins for X, Facebook, Instagram and the website, configured as production,
see no request; the drill is scored with its voices."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from siaga.alerts.receiver import create_app
from siaga.audit import AuditTrail
from siaga.catalog import Catalog
from siaga.drills.records import DrillRecords
from siaga.flows import compile_runbook
from siaga.flows.server import free_port
from siaga.integrations import default_registry
from siaga.settings import Settings
from siaga.store import engine, maintenance_windows
from siaga.voices.desk import drill_incident_id
from siaga.voices.records import VoiceRecords

from ..conftest import RUNBOOKS
from ..support.alert_payloads import signed
from ..support.gate_driver import with_approvals
from ..support.live_receiver import API_TOKEN, read, serve, settle
from ..support.social_standins import FakeGraph, FakeWebsite, FakeX, production_accounts
from ..support.voices import mention, run_starter

pytestmark = pytest.mark.slow

RUNBOOK = "social-media-storm"
SOCIAL = "social-secret-storm-drill"
SECRETS = {"SIAGA_SECRET_X_CK": "storm-ck-1a2b", "SIAGA_SECRET_X_CS": "storm-cs-3c4d",
           "SIAGA_SECRET_X_AT": "storm-at-5e6f", "SIAGA_SECRET_X_ATS": "storm-ats-7a8b",
           "SIAGA_SECRET_META": "EAAGstormMetaToken000", "SIAGA_SECRET_CMS": "storm-cms-token-9c0d"}


@dataclass
class Platforms:
    x: FakeX
    graph: FakeGraph
    site: FakeWebsite

    def requests(self) -> int:
        return len(self.x.requests) + len(self.graph.requests) + len(self.site.requests)


@pytest.fixture
def platforms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Platforms, Path]]:
    """Production stand-ins for every platform the runbook posts on (no sandbox: a drill must post
    nothing at all), and the connections file naming them."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    keys = {"consumer_key": SECRETS["SIAGA_SECRET_X_CK"], "consumer_secret": SECRETS["SIAGA_SECRET_X_CS"],
            "access_token": SECRETS["SIAGA_SECRET_X_AT"], "access_token_secret": SECRETS["SIAGA_SECRET_X_ATS"]}
    with (FakeX(keys).running() as x, FakeGraph(SECRETS["SIAGA_SECRET_META"]).running() as graph,
          FakeWebsite(SECRETS["SIAGA_SECRET_CMS"]).running() as site):
        assert isinstance(x, FakeX) and isinstance(graph, FakeGraph) and isinstance(site, FakeWebsite)
        connections = production_accounts(x, graph) | {
            "site": {"type": "website", "url": f"{site.url}/api/notices/{{id}}", "bearer": "secret://cms",
                     "production": True},
        }
        file = tmp_path / "connections.yaml"
        file.write_text(json.dumps({"connections": connections}))
        yield Platforms(x, graph, site), file


def test_the_bundled_storm_drill_answers_every_held_mention_posts_nothing_and_is_scored(
    prefect_api: str, siaga_home: Path, tmp_path: Path, platforms: tuple[Platforms, Path]
) -> None:
    stand_ins, connections = platforms
    settings = Settings.from_environ({**os.environ, "SIAGA_RUNBOOKS": str(RUNBOOKS), "SIAGA_CONNECTIONS": str(connections),
                                      "SIAGA_DATABASE_URL": f"sqlite:///{tmp_path / 'storm.db'}",
                                      "SIAGA_HOOK_SECRET_SOCIAL": SOCIAL, "SIAGA_API_TOKEN": API_TOKEN})
    registry = default_registry()
    catalog = Catalog.load(RUNBOOKS, registry)
    assert not catalog.problems, catalog.problems
    store = engine(settings.store_url)
    drill = compile_runbook(catalog.runbooks[RUNBOOK], registry, settings=settings)
    topic = "payment-failure"
    test_mode = f"storm-{uuid.uuid4().hex[:6]}"  # this test's mentions only
    mentions = [
        mention(f"17940000000000000{n:02d}", topic, author=f"@angry{n}", env="drill", batch=test_mode,
                **({"author_tier": "influencer"} if n == 0 else {}))
        for n in range(3)
    ] + [
        mention("1794000000000000099", "scam-impersonation", author="@warned", env="drill", batch=test_mode,
                language="en", text="Someone on WhatsApp asked me for my OTP in your name!"),
    ]

    with serve(create_app(catalog.runbooks, settings, store, run_starter(prefect_api, RUNBOOK)), free_port()) as url:

        def post(alerts: list[dict[str, Any]]) -> None:
            body = json.dumps({"alerts": alerts}).encode()
            answered = httpx.post(f"{url}/hooks/social", content=body, headers=signed(body, SOCIAL))
            assert answered.status_code == 202, answered.text
            settle(url)

        async def rehearse() -> tuple[str, Any]:
            running = asyncio.create_task(drill(topic=topic, mode="drill", return_state=True))
            run_id = await window_opened(store)
            # the listening tool's test mode, the first mention delivered twice (one voice)
            await asyncio.to_thread(post, mentions)
            await asyncio.to_thread(post, mentions[:1])
            state = await with_approvals(siaga_home, RUNBOOK, running, store_url=settings.store_url)
            return run_id, state

        run_id, state = asyncio.run(rehearse())
        assert state.is_completed(), state.message
        held = [i for i in read(url, state="open") if i["runbook_id"] == RUNBOOK]
        assert not held, f"the drill's mentions opened an incident: {held}"

    assert stand_ins.requests() == 0, "a drill reached a platform"
    voices = {v.mention_id: v for v in VoiceRecords(store).find(incident_id=drill_incident_id(run_id))}
    assert sorted(voices) == sorted(m["labels"]["post"] for m in mentions)
    assert {v.state for v in voices.values()} == {"answered"}
    assert {v.answered_by for v in voices.values()} == {"drill: recorded, not posted"}
    answered = [r for r in AuditTrail(store).records(drill_incident_id(run_id)) if r.kind == "voice.answered"]
    assert len(answered) == 4 and all(r.data["drill"] for r in answered)

    record = asyncio.run(drill_record(run_id))
    sent = {line.split("`")[1]: line.split(": ", 1)[1] for line in record.splitlines() if line.startswith("- `")}
    scam = "Thank you for the report. We never ask for your PIN or OTP"
    payment = "Halo, terima kasih sudah memberi tahu kami."
    for m in mentions:
        voice = voices[m["labels"]["post"]]
        reply = scam if m["labels"]["topic"] == "scam-impersonation" else payment
        assert sent[voice.id].startswith(f"[DRILL] {m['labels']['author']} {reply}"), sent
    assert sum("Updates: pay.example.com/status" in text for text in sent.values()) == 1  # the en fact
    assert sum("Info terbaru: pay.example.com/status" in text for text in sent.values()) == 3  # the id one

    (scored,) = [d for d in DrillRecords(store).find(RUNBOOK) if d["run_id"] == run_id]
    figures = scored["figures"]
    assert (figures["voices"], figures["voices_answered"], figures["voices_late"]) == (4, 4, [])
    assert not [d for d in figures["deductions"] if "voice" in d["reason"]], figures["deductions"]


async def window_opened(store: Any) -> str:
    """The run id of the drill whose maintenance window for this runbook has just opened."""
    for _ in range(600):
        with store.connect() as connection:
            windows = connection.execute(maintenance_windows.select().where(
                maintenance_windows.c.id.like("drill-%"), maintenance_windows.c.released_at.is_(None),
                maintenance_windows.c.reason.like(f"%{RUNBOOK}"))).mappings().all()
        if windows:
            return str(max(windows, key=lambda w: w["created_at"])["id"]).removeprefix("drill-")
        await asyncio.sleep(0.1)
    raise AssertionError("the drill opened no maintenance window")


async def drill_record(run_id: str) -> str:
    """The run's drill record of `answer-voices`: what each voice would have been sent."""
    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(run_id)])))
    (found,) = [a for a in artifacts if (a.key or "").endswith("drill-answer-voices")]
    return str(found.data)

"""One `notify.fanout` step to 5 channels, each a local stand-in that answers after its own delay
(Slack 200 ms, Teams 250 ms, PagerDuty 300 ms, Apprise json:// 350 ms, SMTP 400 ms), against the
slowest channel (SMTP) alone. Both go through the step body a flow runs (`perform`, with the
side-effect ledger in a scratch store).

Prints median wall times of 5 runs and their ratio. Target: ratio <= 1.2 (the channels go out
concurrently, so the step takes about as long as its slowest channel).
    python benchmarks/notify_fanout.py
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from siaga.actions import ActionContext, Mode
from siaga.flows.steps import perform
from siaga.integrations import default_registry
from siaga.audit.ledger import Ledger
from siaga.store import engine
from testkit.provider_servers import providers, smtp_server

DELAYS = {"slack": 0.20, "teams": 0.25, "pagerduty": 0.30, "json": 0.35}
SMTP_DELAY = 0.40
RUNS = 5

SECRETS = {
    "SIAGA_SECRET_BENCH_SLACK": "xoxb-bench-token",
    "SIAGA_SECRET_BENCH_PD": "benchroutingkey00000000000000000",
    "SIAGA_SECRET_BENCH_SMTP": "bench-smtp-password",
}


def main() -> None:
    os.environ.update(SECRETS)
    registry = default_registry()
    fanout, email = registry["notify.fanout"], registry["email.send"]
    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch)
        with (
            providers(
                slack_token=SECRETS["SIAGA_SECRET_BENCH_SLACK"], teams_webhook="bench-teams"
            ) as stand_ins,
            smtp_server(home, "siaga", SECRETS["SIAGA_SECRET_BENCH_SMTP"], delay=SMTP_DELAY) as box,
        ):
            stand_ins.delays.update(DELAYS)
            os.environ["SIAGA_SECRET_BENCH_TEAMS"] = stand_ins.teams_webhook_url
            host = stand_ins.url.removeprefix("http://")
            os.environ["SIAGA_SECRET_BENCH_APPRISE"] = f"json://{host}/json/bench"
            conns = {
                "slack": {
                    "type": "slack",
                    "bot_token": "secret://bench-slack",
                    "channel": "#inc-payments",
                    "api_url": stand_ins.slack_api,
                },
                "teams": {"type": "teams", "webhook_url": "secret://bench-teams"},
                "pagerduty": {
                    "type": "pagerduty",
                    "routing_key": "secret://bench-pd",
                    "events_url": stand_ins.pagerduty_url,
                },
                "apprise": {"type": "apprise", "url": "secret://bench-apprise"},
                "mail": {
                    "type": "smtp",
                    "host": "localhost",
                    "port": box.port,
                    "username": "siaga",
                    "password": "secret://bench-smtp",
                    "sender": "siaga@bench.test",
                    "ca_file": box.ca_file,
                },
            }
            ledger = Ledger(engine(f"sqlite:///{home / 'siaga.db'}"))
            mail = {"to": ["cmt@bench.test"], "subject": "SEV1", "text": "Card payments failing."}
            everything = fanout.params.model_validate(
                {
                    "subject": "SEV1",
                    "message": "Card payments failing.",
                    "channels": [
                        {"action": "slack.post"},
                        {"action": "teams.post"},
                        {"action": "pagerduty.trigger"},
                        {"action": "apprise.notify"},
                        {"action": "email.send", "with": {"to": ["cmt@bench.test"]}},
                    ],
                }
            )

            def step(spec: Any, params: Any) -> float:
                context = ActionContext(
                    runbook_id="bench",
                    step_id="tell",
                    run_id=uuid.uuid4().hex,
                    mode=Mode.LIVE,
                    home=home,
                    connections=conns,
                )
                started = time.perf_counter()
                result = asyncio.run(perform(spec, params, context, spec.drill_behaviour, ledger))
                elapsed = time.perf_counter() - started
                assert result.status == "completed", result
                return elapsed

            step(email, email.params.model_validate(mail))  # warm up: imports, TLS, the store
            step(fanout, everything)
            alone = statistics.median(
                step(email, email.params.model_validate(mail)) for _ in range(RUNS)
            )
            together = statistics.median(step(fanout, everything) for _ in range(RUNS))
            sent = len(box.messages)

    print(
        f"channel delays: {', '.join(f'{k} {v * 1000:.0f} ms' for k, v in DELAYS.items())}, smtp {SMTP_DELAY * 1000:.0f} ms"
    )
    print(f"slowest channel alone (email.send): {alone * 1000:7.1f} ms  (median of {RUNS})")
    print(f"notify.fanout to 5 channels:        {together * 1000:7.1f} ms  (median of {RUNS})")
    print(
        f"sum of the channel delays:          {(sum(DELAYS.values()) + SMTP_DELAY) * 1000:7.1f} ms"
    )
    print(f"ratio fanout / slowest alone:       {together / alone:7.2f}  (target <= 1.2)")
    print(f"messages the SMTP stand-in took:    {sent}")


if __name__ == "__main__":
    main()

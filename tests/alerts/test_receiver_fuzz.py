"""The receiver's OpenAPI document, fuzzed by schemathesis: whatever it is sent (paths, query
strings, bodies, headers generated from the document), it never answers 5xx. In process (ASGI),
on a store of its own; every source is configured so each branch of the hook is reachable, and the
read API's token is sent (the document itself is read with it), so its handlers are reached too."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from siaga.alerts.receiver import create_app
from siaga.catalog import Catalog
from siaga.integrations import default_registry
from siaga.settings import Settings
from siaga.store import engine

from ..conftest import RUNBOOKS


async def no_runs(incident: object) -> str:
    raise RuntimeError("this test starts no runs")


def receiver_app():  # type: ignore[no-untyped-def]
    folder = Path(tempfile.mkdtemp(prefix="siaga-fuzz-"))  # made at collection, before fixtures
    atexit.register(shutil.rmtree, folder, True)
    settings = Settings.from_environ({
        "SIAGA_ALERTMANAGER_TOKEN": "fuzz-token",
        "SIAGA_GRAFANA_HMAC_SECRET": "fuzz-grafana",
        "SIAGA_PAGERDUTY_HMAC_SECRET": "fuzz-pagerduty",
        "SIAGA_HOOK_SECRET_SOCIAL": "fuzz-social",
        "SIAGA_SNS_TOPIC_ARNS": "arn:aws:sns:ap-southeast-1:123456789012:siaga-alarms",
        "SIAGA_API_TOKEN": API_TOKEN,
    })
    catalog = Catalog.load(RUNBOOKS, default_registry())
    return create_app(catalog.runbooks, settings, engine(f"sqlite:///{folder / 'siaga.db'}"), no_runs)


API_TOKEN = "fuzz-api-token"
READER = {"Authorization": f"Bearer {API_TOKEN}"}
schema = schemathesis.openapi.from_asgi("/openapi.json", receiver_app(), headers=READER)


FUZZ = settings(max_examples=int(os.environ.get("SIAGA_FUZZ_EXAMPLES", "40")), deadline=None, suppress_health_check=list(HealthCheck))


OPERATIONS = {operation.ok().label: operation.ok() for operation in schema.get_all_operations()}
"""Each operation of the document by its label, one test case each (their ids are unique, so
parallel test workers run and report every one)."""


@pytest.mark.parametrize("label", sorted(OPERATIONS))
@FUZZ
@given(data=st.data())
def test_no_request_makes_the_receiver_fail(label: str, data: st.DataObject) -> None:
    case = data.draw(OPERATIONS[label].as_strategy())
    if label.startswith("GET"):  # the read API, reached past its token (a wrong one is a 401, tested elsewhere)
        case.headers = {**(case.headers or {}), **READER}
    case.call_and_validate(checks=[not_a_server_error])


@FUZZ
@given(data=st.data(), source=st.sampled_from(["alertmanager", "grafana", "pagerduty", "cloudwatch", "social"]))
def test_no_body_makes_a_configured_source_fail(data: st.DataObject, source: str) -> None:
    """Bodies generated for the sources that are served; Alertmanager's with its token, so the
    body reaches the parser and the worker."""
    case = data.draw(OPERATIONS["POST /hooks/{source}"].as_strategy())
    case.path_parameters = {"source": source}
    if source == "alertmanager":
        case.headers = {**(case.headers or {}), "Authorization": "Bearer fuzz-token"}
    case.call_and_validate(checks=[not_a_server_error])

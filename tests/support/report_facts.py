"""The recorded fact set of a whole incident (the incident of `tests/reports/test_report.py`,
gathered from its store), for the tests of what the reports make of it."""

from __future__ import annotations

import json
from pathlib import Path

from siaga.report import IncidentFacts

FIXTURE = Path(__file__).parent.parent / "fixtures" / "report" / "incident-facts.json"


def recorded() -> IncidentFacts:
    return IncidentFacts.from_json(json.loads(FIXTURE.read_text()))

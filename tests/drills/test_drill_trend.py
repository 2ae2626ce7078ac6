"""The trend of drills: `siaga drills` lists past drills from the store, and `--chart` writes an
SVG that parses, holds one point per scored drill and figure, and renders in a real browser."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from siaga.cli import main
from siaga.drills.chart import chart_svg
from siaga.drills.records import DrillRecords
from siaga.settings import Settings
from siaga.store import engine

from ..support.browser import browser_fixture, page_fixture  # noqa: F401

SVG = "{http://www.w3.org/2000/svg}"
T0 = datetime(2026, 1, 10, 3, 0, tzinfo=UTC)


def figures(page_s: float | None, statement_s: float | None) -> dict:
    return {"time_to_first_page_s": page_s, "time_to_public_statement_s": statement_s, "gates": [
        {"step": "freeze", "state": "approved", "decision_s": 240.0, "window_s": 1800.0}
    ], "steps_failed": [], "deadlines_missed": [], "deductions": []}


@pytest.fixture(scope="module")
def drills(siaga_home: Path) -> DrillRecords:
    records = DrillRecords(engine(Settings.from_environ(os.environ).store_url))
    for month, (score, page, statement) in enumerate([(62, 540, 4200), (81, 300, 2400), (95, 120, 1500)]):
        started = T0 + timedelta(days=30 * month)
        records.scored(f"trend-a-{month}", "trend-a", started, started + timedelta(minutes=40), score,
                       figures(page, statement))
    records.scored("trend-b-0", "trend-b", T0 + timedelta(days=15), T0 + timedelta(days=15, minutes=9), 70,
                   figures(60, None))
    records.skipped("trend-b-1", "trend-b", T0 + timedelta(days=45), "skipped: live incident inc-1 is open")
    return records


def test_siaga_drills_lists_past_drills(drills: DrillRecords, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["drills", "trend-a", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["run_id"], r["score"]) for r in rows] == [("trend-a-0", 62), ("trend-a-1", 81), ("trend-a-2", 95)]

    assert main(["drills", "trend-b"]) == 0
    table = capsys.readouterr().out
    assert "70" in table and "1.0m" in table and "skipped" in table
    assert "trend-a" not in table


def test_the_chart_holds_every_scored_drill(drills: DrillRecords, tmp_path: Path) -> None:
    path = tmp_path / "drills.svg"
    assert main(["drills", "--chart", str(path)]) == 0
    root = ET.fromstring(path.read_text(encoding="utf-8"))
    assert root.tag == f"{SVG}svg"
    points = root.iter(f"{SVG}circle")
    shown = [(c.get("data-runbook"), c.get("data-figure"), c.find(f"{SVG}title").text) for c in points]
    mine = [p for p in shown if p[0] in ("trend-a", "trend-b")]
    assert len([p for p in mine if p[1] == "score"]) == 4, "one score point per scored drill (not the skipped one)"
    assert len([p for p in mine if p[1] == "first page"]) == 4
    assert len([p for p in mine if p[1] == "public statement"]) == 3, "no point where there was no statement"
    assert ("trend-a", "score", "trend-a 2026-01-10 03:00: 62/100") in mine
    lines = {(p.get("data-runbook"), p.get("data-figure")) for p in root.iter(f"{SVG}polyline")}
    assert ("trend-a", "score") in lines and ("trend-b", "score") not in lines  # one point draws no line
    # Better drills sit higher: SVG's y grows downwards.
    ys = [float(c.get("cy")) for c in root.iter(f"{SVG}circle")
          if c.get("data-runbook") == "trend-a" and c.get("data-figure") == "score"]
    assert ys == sorted(ys, reverse=True)


def test_the_chart_renders_in_chromium(drills: DrillRecords, page, tmp_path: Path) -> None:
    # The page reaches only loopback (tests/support/browser.py): the chart goes in inline, as a report would.
    page.set_content(f'<html><body style="margin:0">{chart_svg(drills.find(), "Drill scores & times")}</body></html>')
    page.wait_for_selector("circle.point")
    assert page.locator("circle.point").count() >= 11
    box = page.locator("svg").bounding_box()
    assert box is not None and box["width"] == 760 and box["height"] > 400
    shot = page.screenshot(path=str(tmp_path / "drills.png"), full_page=True)
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 5000
    assert page.locator("text", has_text="Drill scores & times").count() == 1


def test_an_empty_chart_says_so() -> None:
    root = ET.fromstring(chart_svg([]))
    assert "No drills scored yet." in "".join(root.itertext())


def test_the_chart_is_svg_only(tmp_path: Path) -> None:
    assert main(["drills", "--chart", str(tmp_path / "drills.png")]) == 2
    assert not (tmp_path / "drills.png").exists()

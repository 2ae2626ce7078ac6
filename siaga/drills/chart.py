"""The trend of drills as an SVG chart, written by hand (no plotting library): the score of each
runbook's drills over time on top, its key times (to the first page, to the public statement)
below. Pure: drill records in, SVG text out."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any
from xml.sax.saxutils import escape, quoteattr

WIDTH, PANEL, GAP, LEFT, RIGHT, TOP = 760, 200, 70, 60, 180, 56
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")
TIMES = (("time_to_first_page_s", "first page", ""), ("time_to_public_statement_s", "public statement", "6 4"))


def chart_svg(drills: Iterable[Mapping[str, Any]], title: str = "Drill scores") -> str:
    """An SVG chart of the scored drills in `drills` (rows of the `drills` table)."""
    scored = sorted((d for d in drills if d.get("state") == "scored"), key=lambda d: d["started_at"])
    runbooks = sorted({d["runbook_id"] for d in scored})
    height = TOP + 2 * PANEL + GAP + 50
    parts = [
        (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
         f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">'),
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
        f'<text x="{LEFT}" y="22" font-size="16" font-weight="bold">{escape(title)}</text>',
    ]
    if not scored:
        parts.append(f'<text x="{LEFT}" y="{TOP + 30}">No drills scored yet.</text></svg>')
        return "\n".join(parts)
    start, end = scored[0]["started_at"], scored[-1]["started_at"]
    x = _x_scale(start, end)
    minutes = [f[key] / 60 for d in scored for f in [d["figures"]] for key, *_ in TIMES if f.get(key) is not None]
    most = _nice(max(minutes, default=1.0))
    score_top, times_top = TOP, TOP + PANEL + GAP
    parts += _panel(score_top, "score (out of 100)", 100)
    parts += _panel(times_top, "minutes from the start of the run", most)
    parts += _time_axis(x, start, end, times_top + PANEL)
    for index, runbook in enumerate(runbooks):
        colour = COLOURS[index % len(COLOURS)]
        rows = [d for d in scored if d["runbook_id"] == runbook]
        points = [(x(d["started_at"]), _y(score_top, d["score"], 100),
                   f"{runbook} {d['started_at']:%Y-%m-%d %H:%M}: {d['score']}/100") for d in rows]
        parts += _series(points, colour, "", runbook, "score")
        for key, label, dash in TIMES:
            timed = [d for d in rows if d["figures"].get(key) is not None]
            points = [(x(d["started_at"]), _y(times_top, d["figures"][key] / 60, most),
                       f"{runbook} {d['started_at']:%Y-%m-%d %H:%M}: {label} after {d['figures'][key] / 60:.1f} min")
                      for d in timed]
            parts += _series(points, colour, dash, runbook, label)
        legend_y = TOP + 10 + index * 18
        parts.append(f'<line x1="{WIDTH - RIGHT + 15}" y1="{legend_y}" x2="{WIDTH - RIGHT + 35}" y2="{legend_y}" '
                     f'stroke="{colour}" stroke-width="3"/>')
        parts.append(f'<text x="{WIDTH - RIGHT + 40}" y="{legend_y + 4}">{escape(runbook)}</text>')
    for offset, (_, label, dash) in enumerate(TIMES):
        legend_y = times_top + 10 + offset * 18
        parts.append(f'<line x1="{WIDTH - RIGHT + 15}" y1="{legend_y}" x2="{WIDTH - RIGHT + 35}" y2="{legend_y}" '
                     f'stroke="black" stroke-width="2" stroke-dasharray="{dash}"/>')
        parts.append(f'<text x="{WIDTH - RIGHT + 40}" y="{legend_y + 4}">{label}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _x_scale(start: datetime, end: datetime) -> Any:
    span = (end - start).total_seconds()
    inner = WIDTH - LEFT - RIGHT

    def x(at: datetime) -> float:
        if span <= 0:
            return LEFT + inner / 2
        return round(LEFT + inner * (at - start).total_seconds() / span, 1)

    return x


def _y(top: float, value: float, most: float) -> float:
    return round(top + PANEL - PANEL * min(max(value, 0.0), most) / most, 1)


def _nice(value: float) -> float:
    """A round upper bound for an axis (1, 2, 5, 10, 20, 50... minutes)."""
    bound = 1.0
    while bound < value:
        for step in (2, 2.5, 2):
            bound *= step
            if bound >= value:
                break
    return bound


def _panel(top: float, label: str, most: float) -> list[str]:
    right = WIDTH - RIGHT
    parts = [f'<text x="{LEFT}" y="{top - 8}" fill="#444">{escape(label)}</text>',
             f'<rect x="{LEFT}" y="{top}" width="{right - LEFT}" height="{PANEL}" fill="none" stroke="#999"/>']
    for tick in range(5):
        value = most * tick / 4
        y = _y(top, value, most)
        parts.append(f'<line x1="{LEFT}" y1="{y}" x2="{right}" y2="{y}" stroke="#eee"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4}" text-anchor="end">{value:g}</text>')
    return parts


def _time_axis(x: Any, start: datetime, end: datetime, bottom: float) -> list[str]:
    ticks: Sequence[datetime] = [start] if start == end else [start + (end - start) * i / 4 for i in range(5)]
    return [f'<text x="{x(t)}" y="{bottom + 18}" text-anchor="middle">{t:%Y-%m-%d}</text>' for t in ticks]


def _series(points: Sequence[tuple[float, float, str]], colour: str, dash: str, runbook: str, what: str) -> list[str]:
    if not points:
        return []
    parts = []
    if len(points) > 1:
        path = " ".join(f"{px},{py}" for px, py, _ in points)
        parts.append(f'<polyline class="series" data-runbook={quoteattr(runbook)} data-figure={quoteattr(what)} '
                     f'points="{path}" fill="none" stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}"/>')
    for px, py, text in points:
        parts.append(f'<circle class="point" data-runbook={quoteattr(runbook)} data-figure={quoteattr(what)} '
                     f'cx="{px}" cy="{py}" r="4" fill="{colour}"><title>{escape(text)}</title></circle>')
    return parts

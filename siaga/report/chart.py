"""The incident's timeline as an SVG picture, written by hand through a Jinja template with
autoescape on (every text from the trail is escaped): one lane per kind (the incident and its
alerts, each step, each approval gate, each kind of message), a bar from start to end for steps
(coloured by outcome) and gates (opened to decided), a mark for instants, and a time axis in UTC.
Pure: a `Story` in, SVG text out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache

from jinja2 import Environment

from siaga.runbook.durations import human_duration

from .story import Story

__all__ = ["timeline_svg"]

WIDTH, LEFT, RIGHT, TOP, ROW, HEADER, PAD = 980, 210, 24, 44, 22, 22, 10
STEP_COLOURS = {
    "completed": "#2ca02c",
    "recorded": "#17becf",
    "skipped": "#9e9e9e",
    "failed": "#d62728",
    "running": "#1f77b4",
    "interrupted": "#ff7f0e",
}
GATE_COLOURS = {
    "approved": "#2ca02c",
    "rejected": "#ff7f0e",
    "timed_out": "#d62728",
    "failed": "#d62728",
    "cancelled": "#9e9e9e",
    "open": "#e6b800",
}
MESSAGE_COLOURS = {
    "statement": "#9467bd",
    "notification": "#1f77b4",
    "sitrep": "#8c564b",
    "deadline reminder": "#e377c2",
    "deadline escalation": "#d62728",
    "approval code": "#7f7f7f",
}
EVENT_COLOURS = {
    "firing": "#d62728",
    "resolved": "#2ca02c",
    "opened": "#000000",
    "run": "#555555",
    "undone": "#6a3d9a",
    "vote": "#000000",
    "escalated": "#d62728",
}
TICKS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)

_TEMPLATE = """\
<svg xmlns="http://www.w3.org/2000/svg" class="siaga-timeline" width="{{ width }}" height="{{ height }}" \
viewBox="0 0 {{ width }} {{ height }}" font-family="sans-serif" font-size="11" role="img" aria-label="{{ title }}">
<title>{{ title }}</title>
<rect width="{{ width }}" height="{{ height }}" fill="white"/>
<text x="{{ left }}" y="20" font-size="14" font-weight="bold">{{ title }}</text>
{% for tick in ticks %}<line x1="{{ tick.x }}" y1="{{ top - 6 }}" x2="{{ tick.x }}" y2="{{ bottom }}" stroke="#eeeeee"/>
<text x="{{ tick.x }}" y="{{ bottom + 14 }}" text-anchor="middle" fill="#444">{{ tick.label }}</text>
{% endfor %}<line x1="{{ left }}" y1="{{ bottom }}" x2="{{ right }}" y2="{{ bottom }}" stroke="#999999"/>
<text x="{{ right }}" y="{{ bottom + 28 }}" text-anchor="end" fill="#444">UTC, {{ span }}</text>
{% for row in rows %}{% if row.header %}<text class="lane" x="8" y="{{ row.y + 15 }}" font-weight="bold" \
font-size="12">{{ row.label }}</text>
<line x1="8" y1="{{ row.y + 20 }}" x2="{{ right }}" y2="{{ row.y + 20 }}" stroke="#cccccc"/>
{% else %}<text x="{{ left - 8 }}" y="{{ row.y + 15 }}" text-anchor="end"><title>{{ row.label }}</title>\
{{ row.short }}</text>
{% for item in row.items %}{% if item.width is not none %}<rect class="{{ item.css }}" x="{{ item.x }}" \
y="{{ row.y + 4 }}" width="{{ item.width }}" height="14" rx="2" fill="{{ item.colour }}"><title>{{ item.text }}</title></rect>
{% elif item.shape == "diamond" %}<path class="{{ item.css }}" d="M{{ item.x }} {{ row.y + 4 }} l7 7 l-7 7 l-7 -7 z" \
fill="{{ item.colour }}"><title>{{ item.text }}</title></path>
{% elif item.shape == "tick" %}<line class="{{ item.css }}" x1="{{ item.x }}" y1="{{ row.y + 1 }}" x2="{{ item.x }}" \
y2="{{ row.y + 21 }}" stroke="{{ item.colour }}" stroke-width="2"><title>{{ item.text }}</title></line>
{% else %}<circle class="{{ item.css }}" cx="{{ item.x }}" cy="{{ row.y + 11 }}" r="5" fill="{{ item.colour }}">\
<title>{{ item.text }}</title></circle>
{% endif %}{% endfor %}{% endif %}{% endfor %}\
{% for entry in legend %}<rect x="{{ entry.x }}" y="{{ entry.y }}" width="12" height="12" fill="{{ entry.colour }}"/>
<text x="{{ entry.x + 16 }}" y="{{ entry.y + 10 }}">{{ entry.label }}</text>
{% endfor %}</svg>
"""


@dataclass
class _Item:
    x: float
    colour: str
    text: str
    css: str
    width: float | None = None
    shape: str = "dot"


@dataclass
class _Row:
    label: str
    y: float = 0
    header: bool = False
    items: list[_Item] = field(default_factory=list)

    @property
    def short(self) -> str:
        return self.label if len(self.label) <= 30 else self.label[:29] + "…"


@cache
def _environment() -> Environment:
    return Environment(autoescape=True, trim_blocks=False, keep_trailing_newline=True)


def timeline_svg(story: Story, title: str | None = None) -> str:
    """The picture of `story`: every alert, step, gate and message over time, one row each."""
    facts = story.facts
    title = title or f"Timeline of {facts.incident.id if facts.incident else facts.chain}"
    scale = _Scale.of(story)
    rows = [
        *_section("Incident", [_incident_row(story, scale)]),
        *_section("Steps", _step_rows(story, scale)),
        *_section("Approval gates", _gate_rows(story, scale)),
        *_section("Messages", _message_rows(story, scale)),
    ]
    y = TOP
    for row in rows:
        row.y = y
        y += HEADER if row.header else ROW
    bottom = y + 6
    legend = _legend(story)
    height = bottom + 44 + 18 * (max((int(e["row"]) for e in legend), default=0) + 1)
    legend_y = bottom + 36
    for entry in legend:
        entry["y"] = legend_y + 18 * int(entry["row"])
    return (
        _environment()
        .from_string(_TEMPLATE)
        .render(
            width=WIDTH,
            height=height,
            title=title,
            left=LEFT,
            right=WIDTH - RIGHT,
            top=TOP,
            bottom=bottom,
            rows=rows,
            ticks=_ticks(scale.start, scale.end, scale.x),
            span=human_duration((scale.end - scale.start).total_seconds()),
            legend=legend,
            legend_y=legend_y,
        )
        .replace("\n\n", "\n")
    )


@dataclass(frozen=True)
class _Scale:
    """Time to x: from the story's first moment to its last, across the plot's width."""

    start: datetime
    end: datetime

    @classmethod
    def of(cls, story: Story) -> _Scale:
        facts = story.facts
        moments = [story.opened_at, *(r.at for r in facts.records)]
        moments += [g.decided_at or facts.generated_at for g in story.gates]
        if story.ended_at:
            moments.append(story.ended_at)
        start, end = min(moments), max(moments)
        return cls(start, max(end, start + timedelta(seconds=1)))

    def x(self, at: datetime) -> float:
        inner = WIDTH - LEFT - RIGHT - 2 * PAD
        return round(LEFT + PAD + inner * (at - self.start).total_seconds() / (self.end - self.start).total_seconds(), 1)

    def bar(self, begin: datetime, until: datetime, colour: str, text: str, css: str) -> _Item:
        left = self.x(begin)
        return _Item(left, colour, text, css, width=max(2.0, round(self.x(until) - left, 1)))


def _section(header: str, rows: list[_Row]) -> list[_Row]:
    return [_Row(header, header=True), *rows] if rows else []


def _incident_row(story: Story, scale: _Scale) -> _Row:
    """The incident's opening, its alerts, its runs starting and ending, its resolution."""
    row = _Row("incident and alerts")
    opened = f"incident opened {story.opened_at:%H:%M:%S}"
    row.items.append(_Item(scale.x(story.opened_at), EVENT_COLOURS["opened"], opened, "event opened", shape="diamond"))
    for r in story.facts.records:
        if r.kind == "alert.received":
            status = str(r.data.get("status") or "firing")
            name = (r.data.get("labels") or {}).get("alertname") or r.data.get("fingerprint") or "alert"
            row.items.append(_Item(scale.x(r.at), EVENT_COLOURS.get(status, "#d62728"),
                                   f"{r.at:%H:%M:%S} alert {name} {status}", f"event alert {status}"))
        elif r.kind in ("run.started", "run.finished"):
            said = r.kind.removeprefix("run.") + (f" ({r.data.get('outcome')})" if r.data.get("outcome") else "")
            row.items.append(_Item(scale.x(r.at), EVENT_COLOURS["run"], f"{r.at:%H:%M:%S} run {said}", "event run",
                                   shape="tick"))
        elif r.kind == "incident.resolved":
            row.items.append(_Item(scale.x(r.at), EVENT_COLOURS["resolved"], f"{r.at:%H:%M:%S} incident resolved",
                                   "event resolved", shape="diamond"))
    return row


def _step_rows(story: Story, scale: _Scale) -> list[_Row]:
    """One row per step: a bar per time it ran, a mark per undo."""
    rows: dict[str, _Row] = {}
    for span in story.spans:
        until = span.ended_at or story.facts.generated_at
        text = (
            f"{span.step_id} ({span.action}): {span.outcome}, {span.started_at:%H:%M:%S} to "
            f"{until:%H:%M:%S} ({human_duration((until - span.started_at).total_seconds())})"
        )
        if span.error:
            text += f": {span.error}"
        rows.setdefault(span.step_id, _Row(span.step_id)).items.append(
            scale.bar(span.started_at, until, STEP_COLOURS.get(span.outcome, "#1f77b4"), text, f"bar step {span.outcome}")
        )
    for undo in story.undone:
        rows.setdefault(str(undo["step"]), _Row(str(undo["step"]))).items.append(
            _Item(scale.x(undo["at"]), EVENT_COLOURS["undone"], f"{undo['at']:%H:%M:%S} {undo['step']} {undo['outcome']}",
                  "event undo", shape="diamond")
        )
    return list(rows.values())


def _gate_rows(story: Story, scale: _Scale) -> list[_Row]:
    """One row per gate: a bar while it was open, a mark per vote, escalation or refusal."""
    rows = []
    for gate in story.gates:
        row = _Row(f"gate {gate.step_id}")
        until = gate.decided_at or story.facts.generated_at
        row.items.append(scale.bar(
            gate.opened_at, until, GATE_COLOURS.get(gate.state, "#e6b800"),
            f"gate {gate.step_id}: {gate.state}, opened {gate.opened_at:%H:%M:%S}, "
            f"{'decided' if gate.decided_at else 'open at'} {until:%H:%M:%S} "
            f"({human_duration((until - gate.opened_at).total_seconds())})",
            f"bar gate {gate.state}",
        ))
        for d in story.decisions:
            if d.step_id == gate.step_id and d.event in ("approved", "rejected", "escalated", "refused"):
                who = f" by {d.by}" if d.by else ""
                row.items.append(_Item(scale.x(d.at), EVENT_COLOURS["escalated" if d.event == "escalated" else "vote"],
                                       f"{d.at:%H:%M:%S} {d.event}{who}", f"event {d.event}", shape="tick"))
        rows.append(row)
    return rows


def _message_rows(story: Story, scale: _Scale) -> list[_Row]:
    """One row per kind of message, a mark per message sent."""
    rows: dict[str, _Row] = {}
    for m in story.messages:
        rows.setdefault(m.kind, _Row(m.kind + "s")).items.append(
            _Item(scale.x(m.at), MESSAGE_COLOURS.get(m.kind, "#1f77b4"),
                  f"{m.at:%H:%M:%S} {m.kind} to {m.audience} via {m.channel}", f"message {m.kind}")
        )
    return list(rows.values())


def _legend(story: Story) -> list[dict[str, object]]:
    used = {s.outcome for s in story.spans}
    gates = {g.state for g in story.gates}
    kinds = {m.kind for m in story.messages}
    statuses = {str(r.data.get("status") or "firing") for r in story.alerts}
    entries = [
        {"label": f"alert {k}", "colour": EVENT_COLOURS[k]}
        for k in ("firing", "resolved")
        if k in statuses
    ]
    entries += [{"label": f"step {k}", "colour": c} for k, c in STEP_COLOURS.items() if k in used]
    if story.undone:
        entries.append({"label": "step undone", "colour": EVENT_COLOURS["undone"]})
    entries += [
        {"label": f"gate {k.replace('_', ' ')}", "colour": c}
        for k, c in GATE_COLOURS.items()
        if k in gates
    ]
    entries += [{"label": k, "colour": c} for k, c in MESSAGE_COLOURS.items() if k in kinds]
    x, row = float(LEFT), 0
    # left to right, wrapping, each as wide as its label (about 6.5 px a letter)
    for entry in entries:
        width = 16 + 6.5 * len(str(entry["label"])) + 16
        if x + width > WIDTH - RIGHT:
            x, row = float(LEFT), row + 1
        entry["x"], entry["row"] = round(x, 1), row
        x += width
    return entries


def _ticks(
    start: datetime, end: datetime, x: Callable[[datetime], float]
) -> list[dict[str, object]]:
    span = (end - start).total_seconds()
    step = next(
        (t for t in TICKS if span / t <= 8), TICKS[-1] * max(1, int(span / TICKS[-1] / 8) + 1)
    )
    first = start.timestamp() // step * step + step
    found: list[dict[str, object]] = [{"x": x(start), "label": f"{start:%H:%M:%S}"}]
    moment = first
    while moment < end.timestamp():
        at = datetime.fromtimestamp(moment, tz=start.tzinfo)
        if (at - start).total_seconds() >= step / 3:
            found.append(
                {"x": x(at), "label": f"{at:%H:%M:%S}" if step < 86400 else f"{at:%Y-%m-%d}"}
            )
        moment += step
    return found

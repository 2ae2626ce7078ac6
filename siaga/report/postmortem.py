"""The post-incident report, as Markdown or as one self-contained HTML page. Pure: a `Story` in,
text out (the picture comes from `chart.timeline_svg`).

Sections: summary; impact and durations against the runbook's targets (met or missed); the
timeline picture; every decision at an approval gate (approver, channel, evidence hash, time);
every message sent (audience, channel, time); what failed and what was undone; statement
deadlines; voices (received, answered within their deadline, median time to answer, dismissed,
open, by platform); lessons learned, each question pointing at the runbook step (and line) it is about; and
the whole audit trail, in order, with the chain's head hash to verify it against.

The HTML goes through Jinja with autoescape on; the Markdown escapes every value from the trail,
so a step's error or a person's comment cannot change how the report reads.
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import cache
from typing import Any

from jinja2 import Environment
from markupsafe import Markup

from siaga.audit.chain import AuditRecord
from siaga.audit.render import describe
from siaga.runbook.durations import human_duration
from siaga.voices.figures import Tally, VoiceFigures

from .chart import timeline_svg
from .review import Target
from .story import Story

__all__ = ["report_html", "report_markdown"]

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#])")


def _md(text: Any) -> str:
    """`text` for a Markdown table cell or line: special characters escaped, one line."""
    return _MD_SPECIAL.sub(r"\\\1", str(text)).replace("\r", " ").replace("\n", " ")


def _code(text: Any) -> str:
    """`text` as inline code (ids, kinds, hashes), safe in a table cell."""
    return "`" + str(text).replace("`", "'").replace("|", "\\|").replace("\n", " ") + "`"


def _when(at: datetime | None) -> str:
    return f"{at:%Y-%m-%d %H:%M:%S} UTC" if at else "-"


def _mark(target: Target) -> str:
    return {True: "✓ met", False: "✗ missed", None: "… pending" if target.target_s else ""}[
        target.met
    ]


def _title(story: Story) -> str:
    runbook = story.facts.runbook
    return (
        runbook.title
        if runbook
        else (story.facts.incident.runbook_id if story.facts.incident else story.facts.chain)
    )


def _summary(story: Story) -> list[tuple[str, str]]:
    facts = story.facts
    runbook, incident = facts.runbook, facts.incident
    rows = [
        (
            "Incident",
            incident.id
            if incident
            else (
                f"none: a run started by hand (chain {facts.chain})"
                if facts.chain.startswith("run:")
                else f"{facts.chain} (not in the incident store: its run was started with it by hand)"
            ),
        ),
        (
            "Runbook",
            f"{runbook.title} ({runbook.id})"
            if runbook
            else (incident.runbook_id if incident else "unknown"),
        ),
        (
            "Severity",
            (incident.severity if incident and incident.severity else None)
            or (runbook.severity if runbook else "-"),
        ),
        ("Services", ", ".join(runbook.services) if runbook and runbook.services else "-"),
        ("Opened", _when(story.opened_at)),
        ("Resolved", _when(story.ended_at) if story.ended_at else "not yet (still open)"),
        ("Duration", human_duration(story.elapsed_s) + ("" if story.ended_at else " so far")),
        (
            "Decided by",
            ", ".join(story.decided_by) or "nobody (no approval gate was decided by a person)",
        ),
        ("Outcome", story.outcome),
    ]
    return rows


def _details(record: AuditRecord) -> str:
    """What a trail record says (the gate first, for gate events; reports by number and files)."""
    said = describe(record)
    data = record.data
    if record.kind == "sitrep.sent":
        said = f"SITREP {data.get('number')} to " + ", ".join(
            f"{s.get('to')} ({s.get('channel')})" for s in data.get("sent") or []
        )
    elif record.kind == "report.generated":
        said = f"{data.get('format')}: {', '.join(data.get('files') or [])}; head {str(data.get('head'))[:12]}"
    gate = data.get("gate")
    return f"gate: {gate}; {said}".rstrip("; ") if gate else said


def _failures(story: Story) -> list[str]:
    lines = [
        f"Step {s.step_id} ({s.action}) failed at {_when(s.ended_at)}: {s.error or 'no reason recorded'}"
        for s in story.failed
    ]
    lines += [
        f"Step {u['step']} {u['outcome']} ({u['action']}) at {_when(u['at'])}"
        + (f": {u['error']}" if u["error"] else "")
        for u in story.undone
    ]
    if story.not_run:
        lines.append("Never ran (an earlier step stopped the run): " + ", ".join(story.not_run))
    return lines


VOICE_COLUMNS = ("platform", "received", "answered", "within deadline", "median time to answer", "dismissed",
                 "still open", "refused")


def _voice_rows(figures: VoiceFigures) -> list[list[str]]:
    """The voices' figures by platform, then in all: received, answered, within the deadline (and
    their share of the voices owed an answer), median time to answer, dismissed, open, refused."""

    def row(name: str, t: Tally) -> list[str]:
        share = f" ({t.share_in_time:.0%})" if t.share_in_time is not None else ""
        return [name, str(t.received), str(t.answered), f"{t.answered_in_time}{share}", human_duration(t.median_answer_s),
                str(t.dismissed), f"{t.open}" + (f" ({t.overdue} overdue)" if t.overdue else ""), str(t.refused)]

    rows = [row(name, tally) for name, tally in figures.by_platform.items()]
    return [*rows, row("all", figures.total)] if len(rows) != 1 else [row("all", figures.total)]


def report_markdown(story: Story, picture: str | None = None) -> str:
    """The report as Markdown; `picture` is where the timeline SVG is (a file name or a data: URI),
    None to leave it out (a Prefect artifact)."""
    facts = story.facts
    out = [f"# Post-incident report: {_md(_title(story))}", ""]
    out += [
        (
            f"Generated {_when(facts.generated_at)} from the audit chain {_code(facts.chain)} "
            f"({len(facts.records)} records, head {_code(facts.head)})."
        ),
        "",
    ]
    out += ["## Summary", "", "| | |", "| --- | --- |"]
    out += [f"| {name} | {_md(value)} |" for name, value in _summary(story)]
    out += [f"\n> {_md(note)}" for note in facts.notes]
    out += [
        "",
        "## Impact and durations",
        "",
        "| measure | actual | target | |",
        "| --- | --- | --- | --- |",
    ]
    for t in story.targets:
        note = f" ({_md(t.note)})" if t.note else ""
        out.append(
            f"| {_md(t.name)} | {human_duration(t.actual_s)}{note} | {human_duration(t.target_s) if t.target_s else '-'} | {_mark(t)} |"
        )
    if picture is not None:
        out += ["", "## Timeline", "", f"![Timeline of {_md(facts.chain)}]({picture})"]
    out += ["", "## Decisions", ""]
    if story.decisions:
        out += [
            "| time (UTC) | gate | event | by | channel | evidence (SHA-256 of the parameters) | note |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        out += [
            f"| {d.at:%H:%M:%S} | {_code(d.step_id)} | {_md(d.event.replace('_', ' '))} | {_md(d.by or '-')} | "
            f"{_md(d.channel or '-')} | {_code(d.evidence) if d.evidence else '-'} | {_md(d.note)} |"
            for d in story.decisions
        ]
    else:
        out.append("No approval gate was passed.")
    out += ["", "## Messages sent", ""]
    if story.messages:
        out += [
            "| time (UTC) | kind | to | channel | step | subject |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        out += [
            f"| {m.at:%H:%M:%S} | {_md(m.kind)} | {_md(m.audience)} | {_md(m.channel)} | "
            f"{_code(m.step_id) if m.step_id else '-'} | {_md(m.subject)} |"
            for m in story.messages
        ]
    else:
        out.append("No message was sent.")
    out += ["", "## What failed and what was undone", ""]
    failures = _failures(story)
    out += [f"- {_md(line)}" for line in failures] or ["Nothing failed; nothing was undone."]
    if facts.deadlines:
        out += [
            "",
            "## Statement deadlines",
            "",
            "| deadline | due | state | statement sent | reminders | escalated |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for d in facts.deadlines:
            sent = f"{_when(d.met_at)} ({_md(d.met_by)})" if d.met_at else "not yet"
            out.append(
                f"| {_md(d.name)} | {_when(d.due_at)} | {_md(d.state)} | {sent} | {d.reminders} | {d.escalated} |"
            )
    if facts.voices is not None:
        out += ["", "## Voices", ""]
        out += [f"| {' | '.join(VOICE_COLUMNS)} |", "| " + " | ".join("---" for _ in VOICE_COLUMNS) + " |"]
        out += [f"| {' | '.join(_md(cell) for cell in row)} |" for row in _voice_rows(facts.voices)]
    out += ["", "## Lessons learned", ""]
    for number, lesson in enumerate(story.lessons, 1):
        where = ""
        if lesson.step_id:
            where = (
                f" (step {_code(lesson.step_id)}"
                + (f", {_code(lesson.place)}" if lesson.place else "")
                + ")"
            )
        out.append(f"{number}. {_md(lesson.question)}{where}")
    out += [
        "",
        "## Audit trail",
        "",
        "| # | time (UTC) | event | by | details |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in facts.records:
        by = " / ".join(p for p in (r.actor, r.channel) if p)
        at = f"{r.at:%H:%M:%S.%f}"[:-3]
        out.append(f"| {r.seq} | {at} | {_code(r.kind)} | {_md(by)} | {_md(_details(r))} |")
    out += [
        "",
        (
            f"Chain {_code(facts.chain)}: {len(facts.records)} records, head {_code(facts.head)}. "
            f"Prove it with `siaga audit verify --incident {facts.chain} --head {facts.head}` "
            "(the rows above are shown with secrets redacted, so only the store or an export verifies)."
        ),
    ]
    return "\n".join(out) + "\n"


_HTML = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Post-incident report: {{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1040px; color: #222; line-height: 1.4; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; width: 100%; font-size: 0.9rem; margin: 0.5rem 0; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } code { font-size: 0.85rem; white-space: nowrap; } code.hash { white-space: normal; overflow-wrap: anywhere; }
.met { color: #1a7f37; } .missed { color: #c62828; font-weight: bold; } .pending { color: #8a6d00; }
.meta { color: #555; font-size: 0.9rem; } .note { background: #fff8e1; padding: 0.5rem; } figure { margin: 0; overflow-x: auto; }
</style>
</head>
<body>
<h1>Post-incident report: {{ title }}</h1>
<p class="meta">Generated {{ when(facts.generated_at) }} from the audit chain <code>{{ facts.chain }}</code>
({{ facts.records|length }} records, head <code class="hash">{{ facts.head }}</code>).</p>

<h2 id="summary">Summary</h2>
<table class="summary">{% for name, value in summary %}<tr><th>{{ name }}</th><td>{{ value }}</td></tr>{% endfor %}</table>
{% for note in facts.notes %}<p class="note">{{ note }}</p>{% endfor %}

<h2 id="impact">Impact and durations</h2>
<table class="targets"><tr><th>measure</th><th>actual</th><th>target</th><th></th></tr>
{% for t in story.targets %}<tr><td>{{ t.name }}</td><td>{{ human_duration(t.actual_s) }}{% if t.note %} ({{ t.note }}){% endif %}</td>
<td>{{ human_duration(t.target_s) if t.target_s else "-" }}</td>
<td class="{{ {True: 'met', False: 'missed', None: 'pending'}[t.met] }}">{{ mark(t) }}</td></tr>
{% endfor %}</table>

<h2 id="timeline">Timeline</h2>
<figure>{{ picture }}</figure>

<h2 id="decisions">Decisions</h2>
{% if story.decisions %}<table class="decisions"><tr><th>time (UTC)</th><th>gate</th><th>event</th><th>by</th>
<th>channel</th><th>evidence (SHA-256 of the parameters)</th><th>note</th></tr>
{% for d in story.decisions %}<tr><td>{{ d.at.strftime("%H:%M:%S") }}</td><td><code>{{ d.step_id }}</code></td>
<td>{{ d.event.replace("_", " ") }}</td><td>{{ d.by or "-" }}</td><td>{{ d.channel or "-" }}</td>
<td><code class="hash">{{ d.evidence or "-" }}</code></td><td>{{ d.note }}</td></tr>
{% endfor %}</table>{% else %}<p>No approval gate was passed.</p>{% endif %}

<h2 id="messages">Messages sent</h2>
{% if story.messages %}<table class="messages"><tr><th>time (UTC)</th><th>kind</th><th>to</th><th>channel</th>
<th>step</th><th>subject</th></tr>
{% for m in story.messages %}<tr><td>{{ m.at.strftime("%H:%M:%S") }}</td><td>{{ m.kind }}</td><td>{{ m.audience }}</td>
<td>{{ m.channel }}</td><td>{% if m.step_id %}<code>{{ m.step_id }}</code>{% else %}-{% endif %}</td><td>{{ m.subject }}</td></tr>
{% endfor %}</table>{% else %}<p>No message was sent.</p>{% endif %}

<h2 id="failures">What failed and what was undone</h2>
{% if failures %}<ul>{% for line in failures %}<li>{{ line }}</li>{% endfor %}</ul>
{% else %}<p>Nothing failed; nothing was undone.</p>{% endif %}
{% if facts.deadlines %}
<h2 id="deadlines">Statement deadlines</h2>
<table class="deadlines"><tr><th>deadline</th><th>due</th><th>state</th><th>statement sent</th><th>reminders</th><th>escalated</th></tr>
{% for d in facts.deadlines %}<tr><td>{{ d.name }}</td><td>{{ when(d.due_at) }}</td><td>{{ d.state }}</td>
<td>{% if d.met_at %}{{ when(d.met_at) }} ({{ d.met_by }}){% else %}not yet{% endif %}</td><td>{{ d.reminders }}</td>
<td>{{ d.escalated }}</td></tr>
{% endfor %}</table>{% endif %}
{% if facts.voices %}
<h2 id="voices">Voices</h2>
<table class="voices"><tr>{% for name in voice_columns %}<th>{{ name }}</th>{% endfor %}</tr>
{% for row in voice_rows %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>
{% endfor %}</table>{% endif %}

<h2 id="lessons">Lessons learned</h2>
<ol class="lessons">{% for lesson in story.lessons %}<li>{{ lesson.question }}{% if lesson.step_id %}
(step <code>{{ lesson.step_id }}</code>{% if lesson.place %}, <code class="hash">{{ lesson.place }}</code>{% endif %}){% endif %}</li>
{% endfor %}</ol>

<h2 id="trail">Audit trail</h2>
<table class="trail"><tr><th>#</th><th>time (UTC)</th><th>event</th><th>by</th><th>details</th></tr>
{% for r in facts.records %}<tr class="event" data-seq="{{ r.seq }}"><td>{{ r.seq }}</td>
<td>{{ r.at.strftime("%H:%M:%S.%f")[:-3] }}</td><td><code>{{ r.kind }}</code></td>
<td>{{ [r.actor, r.channel]|select|join(" / ") }}</td><td>{{ details(r) }}</td></tr>
{% endfor %}</table>
<p class="meta">Chain <code>{{ facts.chain }}</code>: {{ facts.records|length }} records, head <code class="hash">{{ facts.head }}</code>.
Prove it with <code class="hash">siaga audit verify --incident {{ facts.chain }} --head {{ facts.head }}</code> (the rows above are
shown with secrets redacted, so only the store or an export verifies).</p>
</body>
</html>
"""


@cache
def _html_environment() -> Environment:
    return Environment(autoescape=True, keep_trailing_newline=True)


def report_html(story: Story) -> str:
    """The report as one HTML page: inline CSS, the timeline as inline SVG, nothing fetched."""
    return (
        _html_environment()
        .from_string(_HTML)
        .render(
            title=_title(story),
            facts=story.facts,
            story=story,
            summary=_summary(story),
            failures=_failures(story),
            picture=Markup(timeline_svg(story)),  # escaped by its own autoescaping template
            when=_when,
            human_duration=human_duration,
            mark=_mark,
            details=_details,
            voice_columns=VOICE_COLUMNS,
            voice_rows=_voice_rows(story.facts.voices) if story.facts.voices else [],
        )
    )

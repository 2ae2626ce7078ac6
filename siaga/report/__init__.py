"""Reports on incidents: the post-incident report and, while an incident is open, situation reports.

`gather` reads the facts (the audit chain, the incident, its gates and statement deadlines, its
runbook) with every value redacted; everything else is pure: `story.tell` turns facts into a
`Story` (spans, decisions, messages, targets met or missed, lessons), and `postmortem` and `chart`
render it as Markdown, HTML and SVG.
"""

from __future__ import annotations

from .chart import timeline_svg
from .facts import IncidentFacts
from .postmortem import report_html, report_markdown
from .story import Story, tell

__all__ = ["IncidentFacts", "Story", "report_html", "report_markdown", "tell", "timeline_svg"]

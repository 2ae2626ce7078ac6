"""``siaga voices``: voices to answer, listed by time left, drafted, dismissed, answered."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.markup import escape
from rich.table import Table

from siaga.catalog import Catalog
from siaga.errors import BadInput
from siaga.wiring import Wiring

from .common import BAD_INPUT, OK, err, out

__all__ = ["VOICE_ACTIONS", "cmd_voices"]


VOICE_ACTIONS = ("draft", "dismiss", "answered")


def cmd_voices(args: argparse.Namespace, wiring: Wiring) -> int:
    """Voices to answer: listed by time left (taking new ones in first), drafted, dismissed, answered."""
    from datetime import UTC, datetime

    from siaga.report.incident import find_incident_id
    from siaga.report.gather import learn_environment_secrets
    from siaga.voices.intake import take_in
    from siaga.voices.records import VoiceRecords

    learn_environment_secrets()  # a mention may quote a credential back: what is printed is redacted
    store = wiring.engine
    words = list(args.words)
    action = words.pop(0) if words and words[0] in VOICE_ACTIONS else None
    actor = args.as_ or wiring.settings.user
    if action in ("dismiss", "answered"):
        if not words:
            raise BadInput(f"siaga voices {action}: name the voices (ids as `siaga voices` lists them)")
        if not actor:
            raise BadInput(f"siaga voices {action}: say who you are (--as PERSON, or SIAGA_USER): the audit trail keeps it")
        records = VoiceRecords(store)
        wanted = records.resolve(words)
        if action == "dismiss":
            changes = records.dismiss(wanted, reason=args.reason or "", by=actor)
        else:
            changes = records.answer(wanted, by=actor, url=args.url)
        for change in changes:
            (out if change.done else err).print(change.said, markup=False)
        return OK if all(c.done for c in changes) else BAD_INPUT
    if len(words) > 1:
        raise BadInput(f"siaga voices: one incident at most, got {' '.join(words)}")
    catalog = wiring.catalog(wiring.folder(args.runbooks))
    incident = find_incident_id(store, words[0]) if words else None
    take_in(store, catalog.runbooks, roster=catalog.roster)
    if action == "draft":
        return _draft_voices(store, catalog, incident, args.json)
    return _list_voices(store, incident, args.all, args.json, datetime.now(UTC))


def _list_voices(store: Any, incident: str | None, include_closed: bool, as_json: bool, now: Any) -> int:
    from rich.text import Text

    from siaga.secrets import REDACTOR
    from siaga.voices.views import excerpt, list_voices, time_left, voice_json

    listed = list_voices(store, incident_id=incident, include_closed=include_closed, now=now)
    if as_json:
        print(REDACTOR.text(json.dumps([voice_json(v, now) for found in listed for v in found.voices], indent=2)))
        return OK
    if not listed:
        out.print(f"no voices of {incident}" if incident else "no voices: no incident of a runbook with `voices:` "
                  "has had a mention", markup=False)
        return OK
    for found in listed:
        late = f", resolved {found.resolved_at:%Y-%m-%d %H:%M} UTC" if found.resolved_at else ""
        out.print(f"[bold]{found.incident_id}[/bold] {found.runbook_id} ({found.state}{late}): "
                  f"{found.open} open, {found.overdue} overdue, {found.closed} closed", highlight=False)
        if found.voices:
            table = Table(box=None, pad_edge=False)
            cells = {"voice": [v.id for v in found.voices], "left": [time_left(v, now) for v in found.voices],
                     "platform": [v.platform or "-" for v in found.voices],
                     "state": [v.state + (" (late)" if v.late else "") for v in found.voices]}
            widths = {name: max(len(name), *map(len, values)) for name, values in cells.items()}
            for name, width in widths.items():  # whole: ids are there to be copied
                table.add_column(name, no_wrap=True, min_width=width)
            table.add_column("author: text", no_wrap=True)
            room = max(12, out.width - sum(widths.values()) - 2 * len(widths))
            for row, v in enumerate(found.voices):
                said = f"{v.problem}: {v.text}" if v.state == "refused" else f"{v.author or '-'}: {v.text}"
                if v.problem and v.is_open:  # its approved reply could not be posted: why
                    said = f"NOT POSTED ({v.problem}) {said}"
                left = v.left(now)
                table.add_row(*(Text(cells[name][row]) for name in cells), Text(excerpt(REDACTOR.text(said), room)),
                              style="red" if left is not None and left.total_seconds() < 0 else None)
            out.print(table)
        hidden = found.closed if not include_closed else 0
        if hidden:
            out.print(f"  `siaga voices {found.incident_id} --all` shows the {hidden} closed", markup=False)
    return OK


def _draft_voices(store: Any, catalog: Catalog, incident: str | None, as_json: bool) -> int:
    from siaga.runbook.loader import read_templates
    from siaga.secrets import REDACTOR
    from siaga.voices.drafting import draft_replies

    done = draft_replies(store, catalog.runbooks, read_templates(catalog.folder), incident_id=incident)
    if as_json:
        print(REDACTOR.text(json.dumps({"drafts": [d.as_dict() for d in done.drafts], "problems": done.problems},
                                       indent=2)))
    else:
        for d in done.drafts:
            out.print(f"[bold]{d.id}[/bold] {d.incident_id} {escape(d.topic)} {d.language}: {len(d.voices)} voice(s), "
                      f"text sha256 {d.text_hash}", highlight=False)
            out.print(REDACTOR.text(d.text), markup=False)
            out.print("  answers " + " ".join(d.voices), markup=False)
        if not done.drafts and not done.problems:
            out.print("nothing to draft: no voice is new or drafted", markup=False)
    for problem in done.problems:
        err.print(problem, markup=False)
    return BAD_INPUT if done.problems else OK

"""Reports of an incident: ``siaga report | sitrep``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from siaga.wiring import Wiring

from .common import OK, err, out

__all__ = ["cmd_report", "cmd_sitrep"]


def cmd_report(args: argparse.Namespace, wiring: Wiring) -> int:
    """The post-incident report of an incident (or run), built from its audit trail."""
    import base64
    import hashlib

    from siaga.report import report_html, report_markdown, tell, timeline_svg
    from siaga.report.gather import gather, learn_environment_secrets
    from siaga.secrets import REDACTOR

    learn_environment_secrets()
    facts = gather(wiring.engine, args.incident, registry=wiring.registry, folder=wiring.folder(args.runbooks),
                   settings=wiring.settings)
    story = tell(facts)
    output = Path(args.output) if args.output and args.output != "-" else None
    written: list[Path] = []
    if args.format == "html":
        text = REDACTOR.text(report_html(story))
    else:
        svg = REDACTOR.text(timeline_svg(story))
        if output is None:
            picture = "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")
        else:
            picture_path = output.with_name(f"{output.stem}.timeline.svg")
            picture_path.write_text(svg, encoding="utf-8")
            written.append(picture_path)
            picture = picture_path.name
        text = REDACTOR.text(report_markdown(story, picture))
    if output is None:
        sys.stdout.write(text)
        return OK
    output.write_text(text, encoding="utf-8")
    written.insert(0, output)
    run_id = facts.chain.removeprefix("run:") if facts.chain.startswith("run:") else None
    wiring.audit.append(
        "report.generated", chain=facts.chain, incident_id=facts.incident.id if facts.incident else None,
        run_id=run_id, actor=wiring.settings.user, channel="cli",
        data={"format": args.format, "files": [str(p) for p in written], "records": len(facts.records),
              "head": facts.head, "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()},
    )
    err.print(f"wrote {', '.join(str(p) for p in written)}: {len(facts.records)} records up to head {facts.head}",
              markup=False)
    return OK


def cmd_sitrep(args: argparse.Namespace, wiring: Wiring) -> int:
    """A situation report of an open incident: shown, or (--send) sent to the liaison and commander."""
    from siaga.report.gather import learn_environment_secrets

    learn_environment_secrets()
    folder = wiring.folder(args.runbooks)
    if args.send:
        import asyncio

        from siaga.flows.secret_blocks import prefect_secret
        from siaga.flows.sitreps import send_sitrep

        done = asyncio.run(send_sitrep(
            args.incident, wiring, folder=folder, actor=wiring.settings.user, channel="cli",
            secret_source=prefect_secret if wiring.settings.prefect_api_url else None,
        ))
        report, sent = done["sitrep"], done["sent"]
    else:
        from siaga.report import tell
        from siaga.report.gather import gather
        from siaga.report.sitrep import build_sitrep
        from siaga.secrets import REDACTOR

        report = build_sitrep(tell(gather(wiring.engine, args.incident, registry=wiring.registry, folder=folder, settings=wiring.settings))).as_dict()
        report["text"] = REDACTOR.text(report["text"])
        sent = []
    if args.json:
        print(json.dumps(report | {"sent": sent}, indent=2))
        return OK
    print(report["text"])
    if sent:
        out.print("sent to " + ", ".join(f"{s['to']} ({s['channel']})" for s in sent), markup=False)
    return OK

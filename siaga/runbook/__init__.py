"""The runbook language: models, loading with positions, validation and planning. No I/O but
reading the files it is asked to read; no Prefect, no network, no clock."""

from .diagnostics import Diagnostic, RunbookError
from .durations import Duration, format_duration, parse_duration
from .loader import Inspection, inspect_runbook, inspect_runbook_file, load_roster, load_runbook, parse_runbook, runbook_files
from .models import Approval, Input, InputType, Runbook, Severity, Step, Trigger, Undo
from .plan import Plan, plan_runbook
from .roster import Person, Roster, parse_roster, role_members

__all__ = [
    "Approval",
    "Diagnostic",
    "Duration",
    "Input",
    "Inspection",
    "InputType",
    "Person",
    "Plan",
    "Runbook",
    "Roster",
    "RunbookError",
    "Severity",
    "Step",
    "Trigger",
    "Undo",
    "format_duration",
    "inspect_runbook",
    "inspect_runbook_file",
    "load_roster",
    "load_runbook",
    "parse_duration",
    "parse_roster",
    "parse_runbook",
    "plan_runbook",
    "role_members",
    "runbook_files",
]

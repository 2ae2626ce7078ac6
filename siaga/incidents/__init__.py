"""Incidents: the engine that turns normalised alerts into incidents, one per problem, and owes each
its runs. Pure routing, recording in Siaga's store, ranking, the runs due, and read views.

* `alert`: `Alert`, the one shape every source is normalised into (by `siaga.alerts`).
* `routing` (pure): the routes an alert takes (every trigger considered; per runbook the first
  that fires decides), its incident key, the run's inputs.
* `recording`: `process` / `process_batch` record alerts once and open, join or resolve incidents,
  each with its audit records: one path, a batch in pieces of bounded transactions.
* `thresholds`: what threshold triggers counted, counted with an index.
* `ranking`: severity, priority, age.
* `runs`: the first and resolve runs due, and noting them started or failed.
* `views`: the ranked list and one incident with its alerts.
* `heartbeats`: signals expected at least every so often, and the alert a quiet one raises.
* `suppression`: recording's check whether a maintenance window holds an alert back;
  `maintenance`: the windows (opened, ended, recurring) and the release of what they held.
* `watching`: one pass of the receiver's watcher (what the clock, not an alert, changes).

Direction: `siaga.alerts` (parsers, signatures, the receiver) imports this package, never the
reverse; this package imports the runbook language, the store and the audit trail.

Importing the package loads only its pure parts (`Alert`, routing); the store-backed modules are
imported by name (`siaga.incidents.recording`, ...), so the pure parts stay free of SQLAlchemy.
"""

from .alert import Alert, AlertStatus
from .routing import Route, decide, group_key, matches, render_inputs, routes

__all__ = [
    "Alert",
    "AlertStatus",
    "Route",
    "decide",
    "group_key",
    "matches",
    "render_inputs",
    "routes",
]

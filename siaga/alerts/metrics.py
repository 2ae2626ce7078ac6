"""The receiver's figures as Prometheus text (``GET /metrics``): its worker's queue, and what the
store says was given up on. Counts only: no alert, label or source name appears.

* ``siaga_receiver_queued_webhooks`` (gauge): webhooks taken in, waiting to be recorded here.
* ``siaga_receiver_busy`` (gauge, 0 or 1): recording, or starting runs.
* ``siaga_receiver_processed_webhooks_total`` (counter): webhooks this process finished.
* ``siaga_inbox_failed_webhooks`` (gauge): webhooks answered 2xx and given up on (any receiver
  of this store): an alert of theirs could not be recorded after every try. Alert on > 0.
* ``siaga_inbox_lost_alerts`` (gauge): their alerts that were not recorded (where known).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .inbox import Losses

if TYPE_CHECKING:
    from .worker import Worker

__all__ = ["METRICS_CONTENT_TYPE", "metrics_text"]

METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST


class _Snapshot:
    """A collector of figures read once, for one scrape."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def metrics_text(worker: Worker, losses: Losses) -> str:
    """The figures of `worker` and the store's `losses`, in Prometheus' text format."""
    processed = CounterMetricFamily("siaga_receiver_processed_webhooks", "Webhooks this receiver finished recording (or gave up on).")
    processed.add_metric([], worker.processed)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot([
        GaugeMetricFamily("siaga_receiver_queued_webhooks", "Webhooks taken in and waiting to be recorded.", value=worker.queued),
        GaugeMetricFamily("siaga_receiver_busy", "1 while the receiver records alerts or starts runs.", value=int(worker.busy)),
        processed,
        GaugeMetricFamily("siaga_inbox_failed_webhooks",
                          "Webhooks answered 2xx whose alerts could not all be recorded after every try.", value=losses.webhooks),
        GaugeMetricFamily("siaga_inbox_lost_alerts", "Alerts of those webhooks that were not recorded.", value=losses.alerts),
    ]))
    return generate_latest(registry).decode()

"""``GET /metrics``: the stages' counts from every process of this data directory, and gauges read now.

See :mod:`inbound.metrics` for what is counted where; the gauges here are read
at each scrape from what ``inbound status`` reads, so they cost nothing between
scrapes and are never stale.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..activity import ActivityStore
from ..bus import Bus
from ..config import Settings
from ..metricsdir import MULTIPROCESS
from ..ops.status import collect

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Backlog(Collector):
    """The scrape-time gauges, from what ``inbound status`` reads."""

    def __init__(self, settings: Settings, bus: Bus, store: ActivityStore) -> None:
        self.settings, self.bus, self.store = settings, bus, store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        report = collect(self.settings, self.bus, self.store)
        yield GaugeMetricFamily("inbound_spool_entries", "Messages in this host's spool", report.spool_entries)
        yield _optional("inbound_spool_oldest_age_seconds", "Age of the oldest spool entry", report.spool_oldest_age)
        lag = GaugeMetricFamily("inbound_bus_lag", "Records not yet committed, per group", labels=["group", "topic"])
        for name, value in report.lag.items():
            lag.add_metric(name.split("/", 1), value)
        yield lag
        waiting = GaugeMetricFamily("inbound_deliveries_waiting", "In the outbox: due or retrying", labels=["stream"])
        held = GaugeMetricFamily("inbound_deliveries_held", "Waiting in a paused stream", labels=["stream"])
        for s in report.streams:
            waiting.add_metric([s.stream], s.waiting)
            held.add_metric([s.stream], s.waiting if s.paused or report.everything_paused else 0)
        yield waiting
        yield held
        yield _optional(
            "inbound_oldest_waiting_age_seconds", "Age of the oldest message not yet final", report.oldest_waiting_age
        )
        yield GaugeMetricFamily("inbound_disk_free_bytes", "Free space under the data directory",
                                self.settings.data.free_bytes())  # fmt: skip


def _optional(name: str, documentation: str, value: float | None) -> GaugeMetricFamily:
    """A gauge that is 0 when there is nothing to measure (no spool entry, nothing waiting)."""
    return GaugeMetricFamily(name, documentation, value if value is not None else 0.0)


def exposition(settings: Settings, bus: Bus, store: ActivityStore) -> bytes:
    """Everything, in Prometheus' text format: the counts of every process on this data directory, and now's gauges."""
    registry = CollectorRegistry()
    registry.register(_Backlog(settings, bus, store))
    if MULTIPROCESS in os.environ:
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped upstream
        return generate_latest(registry)
    return generate_latest(REGISTRY) + generate_latest(registry)  # one process: its own registry


def failing_streams() -> list[str]:
    """The streams whose endpoint a deliverer on this data directory currently finds failing."""
    if MULTIPROCESS not in os.environ:
        return []
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped upstream
    return sorted(
        sample.labels["stream"]
        for family in registry.collect()
        if family.name == "inbound_endpoint_failing"
        for sample in family.samples
        if sample.value
    )

"""Prometheus metrics: counted where things happen, read at ``GET /metrics`` (role ``api``).

Two kinds:

* **Counted by the stages**, in whichever process runs them: SMTP connections
  and replies by code, messages accepted, deliveries leaving the processor by
  outcome, webhook attempts by result class, end-of-DATA to 2xx latency, and
  whether each stream's endpoint is failing. ``inbound serve`` points
  prometheus-client's multiprocess mode at ``<data_dir>/metrics/``
  (:mod:`inbound.metricsdir`, before prometheus-client is imported), so every
  process on one data directory -- the supervisor's edge and pipeline children,
  or roles started apart, or all in one -- writes there, and ``/metrics`` sums
  them. Processes on other hosts are scraped on their own host's API. Counts
  are at least once: a batch the bus makes a stage handle again is counted
  again.
* **Read at scrape time** (:mod:`inbound.web.exposition`) from the same
  sources as ``inbound status`` (:func:`inbound.ops.status.collect`): spool
  entries and the oldest one's age, bus lag per consumer group, deliveries
  waiting (first attempt or retry) and held (paused) per stream, the oldest
  message not yet final, and the disk space free under the data directory.

Label values are stream names, result classes and SMTP codes only: never an
address, subject or id, so the series stay few and say nothing about mail.
"""

from __future__ import annotations

import os

from prometheus_client import Counter, Gauge, Histogram, multiprocess

from .metricsdir import MULTIPROCESS

SMTP_CONNECTIONS = Counter("inbound_smtp_connections", "SMTP connections accepted")
SMTP_REPLIES = Counter("inbound_smtp_replies", "SMTP replies sent, by reply code", ["code"])
ACCEPTED = Counter("inbound_messages_accepted", "Messages accepted: 250 after DATA, spooled")
PROCESSED = Counter(
    "inbound_deliveries_processed", "Deliveries out of the processor, by outcome", ["stream", "outcome"]
)  # outcome: processed, blocked, failed
ATTEMPTS = Counter(
    "inbound_webhook_attempts", "Webhook POSTs by result: 2xx, 3xx, 4xx, 5xx, error", ["stream", "result"]
)
DELIVERED_AFTER = Histogram(
    "inbound_accepted_to_delivered_seconds",
    "From the end of DATA to the endpoint's 2xx",
    ["stream"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 86400),
)
ENDPOINT_FAILING = Gauge(
    "inbound_endpoint_failing", "1 while the stream's endpoint fails", ["stream"], multiprocess_mode="livemax"
)


def result_class(status_code: int | None) -> str:
    return "error" if status_code is None else f"{status_code // 100}xx"


def process_ended() -> None:
    """Drop this process's live gauges (its counts stay)."""
    if MULTIPROCESS in os.environ:
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]  # untyped upstream

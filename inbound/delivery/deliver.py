"""Deliver: POST each payload to its stream's webhook, signed, retried on a schedule.

Input: ``messages`` records, copied into the :class:`~inbound.delivery.outbox.Outbox`
(offsets are committed once the copy is durable). Output: HTTP POSTs, and
``attempt`` plus ``delivered`` / ``retrying`` / ``failed`` events on the bus.

Each stream has its own pool of ``webhooks.concurrency_per_stream`` workers,
so a slow or failing endpoint only ever holds up its own stream; a delivery
waiting for its retry sits in the outbox, not in front of other work. An
attempt's outcome goes to the bus before the outbox forgets the delivery: a
crash in between repeats the POST (same ``webhook-id``) rather than losing it.

When a stream's endpoint fails, the stream is *failing*: one attempt at a time
(the endpoint is not flooded), and every ``webhooks.probe_interval`` its
oldest waiting delivery is tried early as a probe (a failed probe uses no step
of the retry schedule). The first 2xx releases the whole backlog at once, in
arrival order, ``concurrency_per_stream`` at a time -- so a recovered customer
gets their mail in seconds, not at the next scheduled retry hours later.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import httpx

from ..bus import Producer, Record
from ..clock import now_rfc3339, rfc3339
from ..config import Settings, StreamSettings
from ..errors import InboundError
from ..events import Attempt, Event, EventType
from ..records import EVENTS, decode_message, event_record
from .groupcommit import GroupCommitter
from .outbox import Delivery, Outbox
from .retry import Decision, Outcome, decide
from .signing import signed_headers

log = logging.getLogger(__name__)

USER_AGENT = "inbound-webhooks/0.1"
# Finished deliveries stay in the outbox (without payload) this long, so that a late duplicate
# of their `messages` record is recognised and not sent again.
KEEP_DONE = 7 * 86400.0
PRUNE_EVERY = 3600.0


def deliveries_from(records: list[Record]) -> list[Delivery]:
    """Outbox rows from ``messages`` records; the body (up to tens of MB) is stored as it is, never parsed."""
    deliveries = []
    for record in records:
        try:
            message = decode_message(record)
        except ValueError as exc:
            log.error("stage=deliver skipping a messages record at offset %d: %s", record.offset, exc)
            continue
        deliveries.append(
            Delivery(
                delivery_id=message.delivery_id,
                stream=message.stream,
                queue_id=message.queue_id,
                generation=message.generation,
                payload=message.body,
                attempts=0,
                steps=0,
                due_at=0.0,
                content_type=message.content_type,
            )
        )
    return deliveries


@dataclass
class StreamHealth:
    failing: bool = False
    next_probe_at: float = 0.0
    in_flight: int = 0


class Deliverer:
    def __init__(
        self,
        settings: Settings,
        outbox: Outbox,
        producer: Producer,
        client: httpx.Client,
        paused: Callable[[str], bool] = lambda stream: False,
    ) -> None:
        self.settings = settings
        self.paused = paused
        self.outbox = outbox
        self.outcomes = GroupCommitter(producer)  # many attempt threads, one flush at a time
        self.client = client
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        # Long enough for one attempt and the flush of its outcome; a killed process's leases lapse
        # after this long and another deliverer sharing the outbox takes its deliveries over.
        self.lease_seconds = settings.webhooks.timeout * 1.5 + 10
        self.pools = {
            s.name: ThreadPoolExecutor(settings.webhooks.concurrency_per_stream, thread_name_prefix=f"deliver-{s.name}")
            for s in settings.streams
        }
        self.health = {name: StreamHealth() for name in self.pools}
        self.health_lock = threading.Lock()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._dispatch, name="deliver-dispatch", daemon=True)

    # -- intake (runs on the consumer worker's thread) --------------------------------------
    def handle(self, records: list[Record]) -> None:
        self.outbox.add(deliveries_from(records))
        self.wake.set()

    # -- dispatch ----------------------------------------------------------------------------
    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Start nothing new; wait for attempts under way so their outcome is recorded."""
        self.stopping.set()
        self.wake.set()
        self.thread.join(timeout)
        for pool in self.pools.values():
            pool.shutdown(wait=True)

    def _dispatch(self) -> None:
        pruned_at = 0.0
        while not self.stopping.is_set():
            try:
                if time.time() - pruned_at > PRUNE_EVERY:
                    self.outbox.prune(older_than=KEEP_DONE)
                    pruned_at = time.time()
                for stream in self.settings.streams:
                    if not self.paused(stream.name):
                        self._fill(stream)
                due = self.outbox.next_due()
            except InboundError as exc:
                log.warning("stage=deliver outbox unavailable: %s", exc)
                due = None
            # New work and finished attempts wake us at once; the floor stops a busy loop over
            # deliveries that are due but held (a paused stream, or one at its concurrency limit).
            wait = 1.0 if due is None else min(max(due - time.time(), 0.1), 1.0)
            self.wake.wait(wait)
            self.wake.clear()

    def _fill(self, stream: StreamSettings) -> None:
        health = self.health[stream.name]
        with self.health_lock:
            limit = 1 if health.failing else self.settings.webhooks.concurrency_per_stream
            free = limit - health.in_flight
            probe = health.failing and free > 0 and time.time() >= health.next_probe_at
            if probe:
                health.next_probe_at = time.time() + self.settings.webhooks.probe_interval
        if free <= 0:
            return
        claimed = self.outbox.claim(stream.name, free, self.owner, self.lease_seconds, due_only=not probe)
        for delivery in claimed:
            with self.health_lock:
                health.in_flight += 1
            self.pools[stream.name].submit(self._attempt_and_release, stream, delivery)

    def _attempt_and_release(self, stream: StreamSettings, delivery: Delivery) -> None:
        try:
            self.attempt(stream, delivery)
        except Exception:
            log.exception("delivery_id=%s stage=deliver attempt crashed; it will be tried again", delivery.delivery_id)
            self.outbox.release(delivery)
        finally:
            with self.health_lock:
                self.health[stream.name].in_flight -= 1
            self.wake.set()

    def _endpoint_answered(self, stream: str, up: bool) -> bool:
        """Update the stream's health; True when a failing endpoint just came back."""
        health = self.health[stream]
        with self.health_lock:
            recovered = up and health.failing
            if not up and not health.failing:
                health.next_probe_at = time.time() + self.settings.webhooks.probe_interval
            health.failing = not up
        return recovered

    def attempt(self, stream: StreamSettings, delivery: Delivery) -> None:
        number = delivery.attempts + 1
        started_at = now_rfc3339()
        probe = delivery.due_at > time.time()
        status_code, error, latency_ms = self.post(stream, delivery)
        decision = decide(delivery.steps + 1, status_code, error, self.settings.webhooks.retry_schedule)
        delay = None if probe else decision.delay  # a failed probe keeps the delivery's place in its schedule
        next_attempt_at = time.time() + delay if delay is not None else delivery.due_at
        attempt = Attempt(number, started_at, status_code, error, latency_ms)
        events = self.events_for(delivery, attempt, decision, next_attempt_at)
        try:
            self.outcomes.publish([(EVENTS, *event_record(e)) for e in events])
        except InboundError as exc:
            # The outcome is not on the bus: forget this attempt and make it again later.
            log.warning("delivery_id=%s stage=deliver outcome not recorded (%s); will retry", delivery.delivery_id, exc)
            self.outbox.release(delivery)
            return
        if decision.outcome is Outcome.RETRY:
            self.outbox.reschedule(delivery, delay)
        else:
            self.outbox.finish(delivery)
        endpoint_up = decision.outcome is Outcome.DELIVERED or status_code == 403
        if self._endpoint_answered(stream.name, endpoint_up):
            log.info("stream=%s stage=deliver endpoint answers again: releasing its backlog", stream.name)
            self.outbox.release_backlog(stream.name)
        log.info(
            "delivery_id=%s stream=%s stage=deliver attempt=%d%s %s (%s, %.0fms)",
            delivery.delivery_id,
            stream.name,
            number,
            " (probe)" if probe else "",
            decision.outcome.value,
            status_code if status_code is not None else error,
            latency_ms,
        )

    def post(self, stream: StreamSettings, delivery: Delivery) -> tuple[int | None, str | None, float]:
        headers = signed_headers(stream.signing_secret, delivery.delivery_id, delivery.payload, delivery.content_type)
        headers["user-agent"] = USER_AGENT
        started = time.monotonic()
        try:
            response = self.client.post(stream.webhook_url, content=delivery.payload, headers=headers)
            status_code, error = response.status_code, None
            if not 200 <= status_code < 300:
                error = f"HTTP {status_code}"
        except httpx.TimeoutException:
            status_code, error = None, f"timeout after {self.settings.webhooks.timeout:g}s"
        except httpx.HTTPError as exc:
            status_code, error = None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return status_code, error, (time.monotonic() - started) * 1000

    def events_for(
        self, delivery: Delivery, attempt: Attempt, decision: Decision, next_attempt_at: float
    ) -> list[Event]:
        """The attempt itself, then what it decided."""
        now = now_rfc3339()
        base = Event(
            EventType.ATTEMPT, delivery.delivery_id, delivery.queue_id, delivery.stream, now, delivery.generation
        )
        outcome = {
            Outcome.DELIVERED: replace(base, type=EventType.DELIVERED),
            Outcome.FAILED: replace(base, type=EventType.FAILED, reason=decision.reason),
            Outcome.RETRY: replace(
                base,
                type=EventType.RETRYING,
                reason=decision.reason,
                next_attempt_at=rfc3339(next_attempt_at),
            ),
        }[decision.outcome]
        return [replace(base, attempt=attempt), outcome]

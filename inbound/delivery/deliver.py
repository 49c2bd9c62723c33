"""Deliver: POST each payload to its stream's webhook, signed, retried on a schedule.

Input: ``messages`` records, copied into the :class:`~inbound.delivery.outbox.Outbox`
(offsets are committed once the copy is durable). Output: HTTP POSTs, and
``attempt`` plus ``delivered`` / ``retrying`` / ``failed`` events on the bus.

This module is the dispatcher; the parts it drives each have one job: the
policy (:mod:`.retry`: what an answer means and what follows), endpoint
health (:mod:`.health`, a pure state machine), the POST itself
(:mod:`.webhook`), the events an attempt produces (:mod:`.outcome`), and the
due-time table (:mod:`.outbox`). Time comes from an injected clock, and the
workers from an injected pool, so the whole of it runs in-process in tests.

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
from concurrent.futures import Executor, ThreadPoolExecutor

import httpx

from ..bus import Producer, Record
from ..clock import rfc3339
from ..config import Settings, StreamSettings
from ..errors import InboundError
from ..events import Attempt
from ..records import EVENTS, decode_message, event_record
from .groupcommit import GroupCommitter
from .health import EndpointHealth
from .outbox import Delivery, Outbox
from .outcome import outcome_events
from .retry import Outcome, decide, endpoint_is_up
from .webhook import WebhookClient

log = logging.getLogger(__name__)

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


def thread_pool(stream: str, workers: int) -> Executor:
    return ThreadPoolExecutor(workers, thread_name_prefix=f"deliver-{stream}")


class Deliverer:
    """Intake into the outbox, and the loop that hands due deliveries to each stream's workers."""

    def __init__(
        self,
        settings: Settings,
        outbox: Outbox,
        producer: Producer,
        client: httpx.Client,
        paused: Callable[[str], bool] = lambda stream: False,
        *,
        clock: Callable[[], float] = time.time,
        pool: Callable[[str, int], Executor] = thread_pool,
    ) -> None:
        self.settings = settings
        self.paused = paused
        self.outbox = outbox
        self.outcomes = GroupCommitter(producer)  # many attempt threads, one flush at a time
        self.webhook = WebhookClient(client, settings.webhooks.timeout)
        self.clock = clock
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        # Long enough for one attempt and the flush of its outcome; a killed process's leases lapse
        # after this long and another deliverer sharing the outbox takes its deliveries over.
        self.lease_seconds = settings.webhooks.timeout * 1.5 + 10
        hooks = settings.webhooks
        self.pools = {s.name: pool(s.name, hooks.concurrency_per_stream) for s in settings.streams}
        self.health = {name: EndpointHealth(hooks.concurrency_per_stream, hooks.probe_interval) for name in self.pools}
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
                if self.clock() - pruned_at > PRUNE_EVERY:
                    self.outbox.prune(older_than=KEEP_DONE)
                    pruned_at = self.clock()
                due = self.dispatch_due()
            except InboundError as exc:
                log.warning("stage=deliver outbox unavailable: %s", exc)
                due = None
            # New work and finished attempts wake us at once; the floor stops a busy loop over
            # deliveries that are due but held (a paused stream, or one at its concurrency limit).
            wait = 1.0 if due is None else min(max(due - self.clock(), 0.1), 1.0)
            self.wake.wait(wait)
            self.wake.clear()

    def dispatch_due(self) -> float | None:
        """Hand every stream's due deliveries (and probes) to its workers; when the next one is due."""
        for stream in self.settings.streams:
            if not self.paused(stream.name):
                self._fill(stream)
        return self.outbox.next_due()

    def _fill(self, stream: StreamSettings) -> None:
        health = self.health[stream.name]
        now = self.clock()
        with self.health_lock:
            slots = health.slots(now)
        if slots.free <= 0:
            return
        claimed = self.outbox.claim(stream.name, slots.free, self.owner, self.lease_seconds, due_only=not slots.probe)
        with self.health_lock:
            health.started(len(claimed))
        for delivery in claimed:
            # A probe is a delivery taken before it is due; decided here, once, and passed along.
            probe = slots.probe and delivery.due_at > now
            self.pools[stream.name].submit(self._attempt_and_release, stream, delivery, probe)

    def _attempt_and_release(self, stream: StreamSettings, delivery: Delivery, probe: bool) -> None:
        endpoint_up: bool | None = None
        try:
            endpoint_up = self.attempt(stream, delivery, probe)
        except Exception:
            log.exception("delivery_id=%s stage=deliver attempt crashed; it will be tried again", delivery.delivery_id)
            self.outbox.release(delivery)
        finally:
            with self.health_lock:
                recovered = self.health[stream.name].finished(endpoint_up, self.clock())
            if recovered:
                log.info("stream=%s stage=deliver endpoint answers again: releasing its backlog", stream.name)
                self.outbox.release_backlog(stream.name)
            self.wake.set()

    def attempt(self, stream: StreamSettings, delivery: Delivery, probe: bool) -> bool | None:
        """POST *delivery* once and record what followed; whether the endpoint is up (None: not recorded)."""
        number = delivery.attempts + 1
        started_at = rfc3339(self.clock())
        result = self.webhook.post(stream, delivery)
        decision = decide(
            result.status_code,
            result.error,
            attempt=number,
            steps_used=delivery.steps,
            schedule=self.settings.webhooks.retry_schedule,
            probe=probe,
        )
        now = self.clock()
        next_attempt_at = now + decision.delay if decision.delay is not None else delivery.due_at
        attempt = Attempt(number, started_at, result.status_code, result.error, result.latency_ms)
        events = outcome_events(delivery, attempt, decision, now=now, next_attempt_at=next_attempt_at)
        try:
            self.outcomes.publish([(EVENTS, *event_record(e)) for e in events])
        except InboundError as exc:
            # The outcome is not on the bus: forget this attempt and make it again later.
            log.warning("delivery_id=%s stage=deliver outcome not recorded (%s); will retry", delivery.delivery_id, exc)
            self.outbox.release(delivery)
            return None
        if decision.outcome is Outcome.RETRY:
            self.outbox.reschedule(delivery, decision.delay)
        else:
            self.outbox.finish(delivery)
        log.info(
            "delivery_id=%s stream=%s stage=deliver attempt=%d%s %s (%s, %.0fms)",
            delivery.delivery_id,
            stream.name,
            number,
            " (probe)" if probe else "",
            decision.outcome.value,
            result.status_code if result.status_code is not None else result.error,
            result.latency_ms,
        )
        return endpoint_is_up(result.status_code)

"""Deliver: POST each payload to its stream's webhook, signed, retried on a schedule.

Input: ``messages`` records, copied into the :class:`~inbound.outbox.Outbox`
(offsets are committed once the copy is durable). Output: HTTP POSTs, and
``attempt`` plus ``delivered`` / ``retrying`` / ``failed`` events on the bus.

Each stream has its own pool of ``webhooks.concurrency_per_stream`` workers,
so a slow or failing endpoint only ever holds up its own stream; a delivery
waiting for its retry sits in the outbox, not in front of other work. An
attempt's outcome goes to the bus before the outbox forgets the delivery: a
crash in between repeats the POST (same ``webhook-id``) rather than losing it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import httpx

from .bus import Producer, Record
from .clock import now_rfc3339, rfc3339
from .config import Settings, StreamSettings
from .errors import InboundError
from .events import Attempt, Event, EventType
from .outbox import Delivery, Outbox
from .retry import Decision, Outcome, decide
from .signing import signed_headers

log = logging.getLogger(__name__)

USER_AGENT = "inbound-webhooks/0.1"


def deliveries_from(records: list[Record]) -> list[Delivery]:
    deliveries = []
    for record in records:
        payload = json.loads(record.value)
        deliveries.append(
            Delivery(
                delivery_id=payload["id"],
                stream=payload["stream"],
                queue_id=payload["queue_id"],
                generation=int(record.header("generation") or b"0"),
                payload=record.value,
                attempts=0,
            )
        )
    return deliveries


class Deliverer:
    def __init__(self, settings: Settings, outbox: Outbox, producer: Producer, client: httpx.Client) -> None:
        self.settings = settings
        self.outbox = outbox
        self.producer = producer
        self.producer_lock = threading.Lock()  # one producer, many attempt threads
        self.client = client
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.lease_seconds = settings.webhooks.timeout * 2 + 30
        self.pools = {
            s.name: ThreadPoolExecutor(settings.webhooks.concurrency_per_stream, thread_name_prefix=f"deliver-{s.name}")
            for s in settings.streams
        }
        self.in_flight = dict.fromkeys(self.pools, 0)
        self.in_flight_lock = threading.Lock()
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
        while not self.stopping.is_set():
            try:
                for stream in self.settings.streams:
                    self._fill(stream)
                due = self.outbox.next_due()
            except InboundError as exc:
                log.warning("stage=deliver outbox unavailable: %s", exc)
                due = None
            wait = 1.0 if due is None else min(max(due - time.time(), 0.01), 1.0)
            self.wake.wait(wait)
            self.wake.clear()

    def _fill(self, stream: StreamSettings) -> None:
        with self.in_flight_lock:
            free = self.settings.webhooks.concurrency_per_stream - self.in_flight[stream.name]
        if free <= 0:
            return
        for delivery in self.outbox.claim(stream.name, free, self.owner, self.lease_seconds):
            with self.in_flight_lock:
                self.in_flight[stream.name] += 1
            self.pools[stream.name].submit(self._attempt_and_release, stream, delivery)

    def _attempt_and_release(self, stream: StreamSettings, delivery: Delivery) -> None:
        try:
            self.attempt(stream, delivery)
        except Exception:
            log.exception("delivery_id=%s stage=deliver attempt crashed; it will be tried again", delivery.delivery_id)
        finally:
            with self.in_flight_lock:
                self.in_flight[stream.name] -= 1
            self.wake.set()

    def attempt(self, stream: StreamSettings, delivery: Delivery) -> None:
        number = delivery.attempts + 1
        started_at = now_rfc3339()
        status_code, error, latency_ms = self.post(stream, delivery)
        decision = decide(number, status_code, error, self.settings.webhooks.retry_schedule)
        events = self.events_for(delivery, Attempt(number, started_at, status_code, error, latency_ms), decision)
        try:
            with self.producer_lock:
                for event in events:
                    self.producer.send("events", event.encode(), key=event.delivery_id.encode())
                self.producer.flush()
        except InboundError as exc:
            # The outcome is not on the bus: forget this attempt and make it again later.
            log.warning("delivery_id=%s stage=deliver outcome not recorded (%s); will retry", delivery.delivery_id, exc)
            self.outbox.release(delivery)
            return
        if decision.outcome is Outcome.RETRY:
            assert decision.delay is not None
            self.outbox.reschedule(delivery, decision.delay)
        else:
            self.outbox.finish(delivery)
        log.info(
            "delivery_id=%s stream=%s stage=deliver attempt=%d %s (%s, %.0fms)",
            delivery.delivery_id,
            stream.name,
            number,
            decision.outcome.value,
            status_code if status_code is not None else error,
            latency_ms,
        )

    def post(self, stream: StreamSettings, delivery: Delivery) -> tuple[int | None, str | None, float]:
        headers = signed_headers(stream.signing_secret, delivery.delivery_id, delivery.payload)
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

    def events_for(self, delivery: Delivery, attempt: Attempt, decision: Decision) -> list[Event]:
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
                next_attempt_at=rfc3339(time.time() + (decision.delay or 0)),
            ),
        }[decision.outcome]
        return [replace(base, attempt=attempt), outcome]

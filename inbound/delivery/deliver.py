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
What is measured in memory (probes, alerts, the rate, pruning) is measured on
its monotonic side, which a step of the system clock leaves alone.

Each stream has its own pool of workers, so a slow or failing endpoint only
ever holds up its own stream; a delivery waiting for its retry sits in the
outbox, not in front of other work. At most ``webhooks.concurrency_per_stream``
of a stream's attempts POST at a time, and as many again may be recording their
outcome: an attempt gives its POST's place up once the answer is judged, so the
next POST starts while the outcome waits for the flush it shares (2.8 outcomes
a flush instead of 1.7, and 6-8 % less of the pipeline's CPU a message,
measured). An attempt's outcome goes to the bus before the outbox forgets the
delivery: a crash in between repeats the POST (same ``webhook-id``) rather
than losing it.

A message's own failure follows its own schedule while the rest of its stream
flows. When the endpoint itself is down (:mod:`.health`: several distinct
deliveries failing with no success between them, or no connection at all) the
stream is *held*: its deliveries wait without using their schedule, up to
``webhooks.max_hold``, and only a probe goes out every
``webhooks.probe_interval``; the first answer that shows the endpoint back
lets them go in arrival order, ``concurrency_per_stream`` at a time.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from .. import metrics
from ..bus import Producer, Record
from ..clock import SYSTEM, Clock, rfc3339
from ..config import Settings, StreamSettings
from ..durations import format_duration
from ..errors import InboundError
from ..events import Attempt, Event
from ..ids import queue_id_time
from ..records import EVENTS, decode_message, event_record, is_settled
from .alerts import Alerter
from .groupcommit import GroupCommitter
from .health import Change, EndpointHealth
from .outbox import Delivery, Outbox
from .outcome import held_too_long, outcome_events
from .ratelimit import RateLimit
from .retry import Decision, Outcome, decide, describe
from .webhook import AttemptResult, WebhookClient

log = logging.getLogger(__name__)

# Finished deliveries stay in the outbox (without payload) this long, so that a late duplicate
# of their `messages` record is recognised and not sent again.
KEEP_DONE = 7 * 86400.0
PRUNE_EVERY = 3600.0
# Seconds an outcome's flush waits for those of the POSTs under way (groupcommit.py). 2 ms made a
# third fewer flushes at 300 msg/s and half as many at saturation; 5 ms held the outcomes so long
# that they took the places that bound the POSTs, and less was delivered.
OUTCOME_LINGER = 0.002


def deliveries_from(records: list[Record]) -> list[Delivery]:
    """Outbox rows from ``messages`` records; the body (up to tens of MB) is stored as it is, never parsed.

    A settled record (a message final before ``inbound recover`` put it back) is not delivered again."""
    deliveries = []
    for record in records:
        if is_settled(record):
            continue
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
                url=message.url,
            )
        )
    return deliveries


def thread_pool(stream: str, workers: int) -> Executor:
    return ThreadPoolExecutor(workers, thread_name_prefix=f"deliver-{stream}")


@dataclass(frozen=True, slots=True)
class Tried:
    """An attempt whose answer is in and judged: what recording it takes."""

    result: AttemptResult
    decision: Decision
    events: list[Event]
    probe: bool


class Deliverer:
    """Intake into the outbox, and the loop that hands due deliveries to each stream's workers."""

    def __init__(
        self,
        settings: Settings,
        outbox: Outbox,
        producer: Producer,
        transport: httpx.BaseTransport,
        paused: Callable[[str], bool] = lambda stream: False,
        *,
        clock: Clock = SYSTEM,
        pool: Callable[[str, int], Executor] = thread_pool,
    ) -> None:
        self.settings = settings
        self.paused = paused
        self.outbox = outbox
        # Many attempt threads, one flush at a time, then one outbox transaction for what it settled;
        # a flush waits a moment for the outcomes of the POSTs under way.
        self.outcomes = GroupCommitter[Delivery](
            producer, self.outbox.finish_many, linger=OUTCOME_LINGER, more_coming=self._posting
        )
        self.webhook = WebhookClient(transport, settings.webhooks.timeout)
        self.clock = clock
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        # Long enough for one attempt and the flush of its outcome; a killed process's leases lapse
        # after this long and another deliverer sharing the outbox takes its deliveries over.
        self.lease_seconds = settings.webhooks.timeout * 1.5 + 10
        # No delivery is rescheduled further ahead: one due later is from a step back of the system clock.
        self.longest_delay = max(settings.webhooks.retry_schedule, default=0.0)
        self.pool = pool
        # Per stream; a stream removed by a reload keeps its entries, unused, until the process ends.
        self.pools: dict[str, Executor] = {}
        # Places for outcomes waiting for their flush. Bounded, so that while the bus cannot take
        # outcomes (each attempt's fails, and it is tried again), POSTs stop once these are taken
        # instead of going on at the endpoint's pace, each of them to be repeated.
        self.recording: dict[str, threading.BoundedSemaphore] = {}
        self.health: dict[str, EndpointHealth] = {}
        # Deliveries whose attempt here has not ended. An outcome waits for its flush with nothing
        # renewing the lease (a write an attempt), and a slow flush (a Kafka leader election) can
        # outlast it: the next claim of such a delivery renews the lease instead of POSTing again.
        self.in_hand: set[str] = set()
        self.rates: dict[str, RateLimit] = {}
        self._add_streams(settings)
        self.alerter = Alerter(settings, self.outcomes.publish, self.webhook, clock.monotonic())
        self.health_lock = threading.Lock()  # guards self.health, self.rates, self.alerter and self.in_hand
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._dispatch, name="deliver-dispatch", daemon=True)

    def _add_streams(self, settings: Settings) -> None:
        """Workers, health and rate for each stream not seen yet; a changed rate starts afresh."""
        hooks = settings.webhooks
        for stream in settings.streams:
            if stream.name not in self.pools:
                # Half of them POSTing, half recording an outcome (see the module's docstring).
                self.pools[stream.name] = self.pool(stream.name, 2 * hooks.concurrency_per_stream)
                self.recording[stream.name] = threading.BoundedSemaphore(hooks.concurrency_per_stream)
                held_since = self.outbox.held_since(stream.name)
                self.health[stream.name] = EndpointHealth(
                    hooks.concurrency_per_stream,
                    hooks.probe_interval,
                    None if held_since is None else self._monotonic_at(held_since),
                )
            rate = self.rates.get(stream.name)
            if rate is None or rate.per_second != stream.max_requests_per_second:
                self.rates[stream.name] = RateLimit(stream.max_requests_per_second)

    def _monotonic_at(self, wall: float) -> float:
        """The monotonic time at *wall*, a past time read from the outbox; one in the future (the
        system clock stepped back since) is taken for now."""
        return self.clock.monotonic() - max(0.0, self.clock.time() - wall)

    def use(self, settings: Settings) -> None:
        """Deliver with these streams from the next attempt on (HUP; any thread).

        Only ``streams`` may differ from the running settings (inbound/reload.py sees to it).
        An attempt under way finishes with the settings it started with; a retry goes to the
        new URL, signed with the new secrets. A removed stream's deliveries wait in the outbox,
        as after a restart, until a stream of that name is configured again.
        """
        with self.health_lock:
            self._add_streams(settings)
            self.alerter.use(settings, self.clock.monotonic())
        removed = {s.name for s in self.settings.streams} - {s.name for s in settings.streams}
        self.settings = settings  # the dispatcher reads it once per pass: the new streams all at once
        for name in sorted(removed):
            try:
                waiting = self.outbox.waiting(name).count
            except InboundError:
                continue  # only a log line is lost: the dispatcher says when the outbox is unavailable
            if waiting:
                log.warning(
                    "stream=%s stage=deliver removed from the configuration: %d deliveries wait in the outbox"
                    " until it is configured again",
                    name,
                    waiting,
                )
        self.wake.set()

    # -- intake (runs on the consumer worker's thread) --------------------------------------
    def handle(self, records: list[Record]) -> None:
        deliveries = deliveries_from(records)
        self.outbox.add(deliveries)
        now = self.clock.monotonic()
        with self.health_lock:
            for delivery in deliveries:
                self.alerter.mail(delivery.stream, now)
        self.wake.set()

    # -- dispatch ----------------------------------------------------------------------------
    def start(self) -> None:
        self.alerter.start()
        self.thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Start nothing new; wait for attempts under way so their outcome is recorded, then the alerts."""
        self.stopping.set()
        self.wake.set()
        self.thread.join(timeout)
        for pool in self.pools.values():
            pool.shutdown(wait=True)
        self.alerter.stop(timeout)

    def _dispatch(self) -> None:
        pruned_at = float("-inf")  # the first pass prunes
        while not self.stopping.is_set():
            try:
                if self.clock.monotonic() - pruned_at > PRUNE_EVERY:
                    self.outbox.prune(older_than=KEEP_DONE)
                    pruned_at = self.clock.monotonic()
                due = self.dispatch_due()
            except InboundError as exc:
                log.warning("stage=deliver outbox unavailable: %s", exc)
                due = None
            except Exception:
                # A bug, not an outage: loudly, and the next pass goes on (a dead dispatcher would
                # deliver nothing more until a restart).
                log.exception("stage=deliver unexpected error in the dispatcher; the next pass goes on")
                due = None
            # New work and finished attempts wake us at once; the floor stops a busy loop over
            # deliveries that are due but held (a paused stream, or one at its concurrency limit).
            wait = 1.0 if due is None else min(max(due - self.clock.time(), 0.1), 1.0)
            self.wake.wait(wait)
            self.wake.clear()

    def dispatch_due(self) -> float | None:
        """Hand every stream's due deliveries (and probes) to its workers; when the next one is due.

        None: nothing is due, or nothing could start before an attempt under way ends.
        """
        busy = [not self.paused(stream.name) and self._fill(stream) for stream in self.settings.streams]
        with self.health_lock:
            down_since = {name: health.down_since for name, health in self.health.items()}
            alerts = self.alerter.check(down_since, self.clock.monotonic(), self.clock.time())
        self.alerter.send(alerts)
        if all(busy):
            # Every worker is under way and the end of each attempt wakes us: nothing can start
            # before then. Under load that is most passes, and each saves a read of the outbox.
            return None
        return self.outbox.next_due()

    def _fill(self, stream: StreamSettings) -> bool:
        """Start what may start; whether every worker of *stream* is now under way."""
        health = self.health[stream.name]
        now, monotonic = self.clock.time(), self.clock.monotonic()
        rate = self.rates[stream.name]
        with self.health_lock:
            slots = health.slots(monotonic)
            down = health.down
            free = min(slots.free, rate.available(monotonic))
        if down:
            self._expire_held(stream, now)
        if free <= 0:
            return not down and slots.free == 0
        claimed = self._taken(
            self.outbox.claim(
                stream.name, free, self.owner, self.lease_seconds, probe=slots.probe, longest_delay=self.longest_delay
            )
        )
        with self.health_lock:
            health.started(len(claimed))
            rate.spend(len(claimed))
        for delivery in claimed:
            # Whether this is a probe is decided here, once, and passed along.
            self.pools[stream.name].submit(self._attempt_and_release, stream, delivery, slots.probe)
        return not down and len(claimed) == slots.free

    def _expire_held(self, stream: StreamSettings, now: float) -> None:
        """Fail what has been held longer than ``webhooks.max_hold``: an outage has to end somewhere."""
        max_hold = self.settings.webhooks.max_hold
        expired = self._taken(
            self.outbox.claim(
                stream.name,
                100,
                self.owner,
                self.lease_seconds,
                added_before=now - max_hold,
                payloads=False,
                longest_delay=self.longest_delay,
            )
        )
        if not expired:
            return
        reason = f"held for {format_duration(max_hold)} while the endpoint was down"
        # Each one's Failed event, then each one done: one flush and one outbox transaction for them all.
        try:
            self.outcomes.commit([([(EVENTS, *event_record(held_too_long(d, reason, now=now)))], d) for d in expired])
        finally:
            self._let_go(expired)
        log.error("stream=%s stage=deliver %d deliveries %s: Failed", stream.name, len(expired), reason)

    def _taken(self, claimed: list[Delivery]) -> list[Delivery]:
        """Of *claimed*, those not in hand here already, now in hand."""
        with self.health_lock:
            taken = [delivery for delivery in claimed if delivery.delivery_id not in self.in_hand]
            self.in_hand.update(delivery.delivery_id for delivery in taken)
        return taken

    def _let_go(self, deliveries: list[Delivery]) -> None:
        with self.health_lock:
            self.in_hand.difference_update(delivery.delivery_id for delivery in deliveries)

    def _attempt_and_release(self, stream: StreamSettings, delivery: Delivery, probe: bool) -> None:
        posting = True
        try:
            tried = self.attempt(stream, delivery, probe)
            with self.recording[stream.name]:
                self._posted(stream)
                posting = False
                self.record(stream, delivery, tried)
        except Exception:
            # Not the endpoint's doing (the attempt's own failures come back as results): the bus or
            # the outbox failed us. Give the lease back; the delivery is tried again later.
            log.exception("delivery_id=%s stage=deliver attempt crashed; it will be tried again", delivery.delivery_id)
            self.outbox.release(delivery)
        finally:
            self._let_go([delivery])
            if posting:
                self._posted(stream)

    def _posting(self) -> bool:
        """Whether an attempt is POSTing: its outcome will want a flush in a moment."""
        with self.health_lock:
            return any(health.in_flight for health in self.health.values())

    def _posted(self, stream: StreamSettings) -> None:
        """An attempt's POST is over, whatever came of it: another may start."""
        with self.health_lock:
            self.health[stream.name].ended()
        self.wake.set()

    def _judge(self, stream: StreamSettings, delivery: Delivery, result: AttemptResult) -> bool:
        """Tell the stream's health how the attempt went; whether the endpoint is down (counting it).

        An attempt at an operator's replay target (``inbound replay --to``) tells nothing about the
        stream's own webhook: it follows its delivery's schedule, and a target that refuses every
        connection must not hold the stream's live mail behind probes of it.
        """
        if delivery.url is not None and delivery.url != stream.webhook_url:
            return False
        health = self.health[stream.name]
        now = self.clock.time()
        with self.health_lock:
            change = health.judge(delivery.delivery_id, result.answer, self.clock.monotonic())
            failed_before = health.failing - {delivery.delivery_id}
            down = health.down
            metrics.ENDPOINT_FAILING.labels(stream.name).set(down)
            if result.error is not None:
                self.alerter.failed(stream.name, describe(result.status_code, result.error))
            alerts = self.alerter.recovered(stream.name, now) if change is Change.CAME_BACK else []
        self.alerter.send(alerts)
        if change is Change.WENT_DOWN:
            self.outbox.hold(stream.name, now, failed_before)
            waiting = self.outbox.waiting(stream.name)
            oldest = format_duration(now - waiting.oldest_added_at) if waiting.oldest_added_at is not None else "-"
            log.warning(
                "stream=%s stage=deliver endpoint down (%s): held, %d waiting, the oldest for %s",
                stream.name,
                describe(result.status_code, result.error),
                waiting.count,
                oldest,
            )
        elif change is Change.CAME_BACK:
            log.info("stream=%s stage=deliver endpoint answers again: sending what it held", stream.name)
            self.outbox.unhold(stream.name)
        return down

    def attempt(self, stream: StreamSettings, delivery: Delivery, probe: bool) -> Tried:
        """POST *delivery* once and judge the answer."""
        number = delivery.attempts + 1
        started_at = rfc3339(self.clock.time())
        result = self.webhook.post(stream, delivery)
        held = self._judge(stream, delivery, result)
        decision = decide(
            result.answer,
            describe(result.status_code, result.error),
            attempt=number,
            steps_used=delivery.steps,
            schedule=self.settings.webhooks.retry_schedule,
            held=held,
        )
        now = self.clock.time()
        # A held delivery has no time of its own: it goes at a probe, or when the endpoint is back.
        wait = decision.delay if decision.delay is not None else self.settings.webhooks.probe_interval
        attempt = Attempt(number, started_at, result.status_code, result.error, result.latency_ms)
        events = outcome_events(delivery, attempt, decision, now=now, next_attempt_at=now + wait)
        return Tried(result, decision, events, probe)

    def record(self, stream: StreamSettings, delivery: Delivery, tried: Tried) -> None:
        """Put what the attempt *tried* came to on the bus, then in the outbox."""
        result, decision = tried.result, tried.decision
        retry = decision.outcome is Outcome.RETRY
        try:
            self.outcomes.publish(
                [(EVENTS, *event_record(e)) for e in tried.events], settles=None if retry else delivery
            )
        except InboundError as exc:
            # The outcome is not on the bus, or the outbox does not know it is final: forget this
            # attempt and make it again later (the same webhook-id, so the endpoint can tell).
            log.warning("delivery_id=%s stage=deliver outcome not recorded (%s); will retry", delivery.delivery_id, exc)
            self.outbox.release(delivery)
            return
        if retry:
            self.outbox.reschedule(delivery, decision.delay)
        log.info(
            "delivery_id=%s stream=%s stage=deliver attempt=%d%s %s (%s, %.0fms)",
            delivery.delivery_id,
            stream.name,
            delivery.attempts + 1,
            " (probe)" if tried.probe else "",
            decision.outcome.value,
            result.status_code if result.status_code is not None else result.error,
            result.latency_ms,
        )
        metrics.ATTEMPTS.labels(stream.name, metrics.result_class(result.status_code)).inc()
        accepted_at = queue_id_time(delivery.queue_id)
        if decision.outcome is Outcome.DELIVERED and accepted_at is not None:
            metrics.DELIVERED_AFTER.labels(stream.name).observe(max(0.0, self.clock.time() - accepted_at))

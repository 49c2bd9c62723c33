"""The activity events one attempt produces: the attempt itself, then what it decided."""

from __future__ import annotations

from dataclasses import replace

from ..clock import rfc3339
from ..events import Attempt, Event, EventType
from .outbox import Delivery
from .retry import Decision, Outcome


def outcome_events(
    delivery: Delivery, attempt: Attempt, decision: Decision, *, now: float, next_attempt_at: float
) -> list[Event]:
    """``attempt`` then ``delivered`` / ``failed`` / ``retrying`` (with when the next attempt is due)."""
    base = Event(
        EventType.ATTEMPT, delivery.delivery_id, delivery.queue_id, delivery.stream, rfc3339(now), delivery.generation
    )
    outcome = {
        Outcome.DELIVERED: replace(base, type=EventType.DELIVERED),
        Outcome.FAILED: replace(base, type=EventType.FAILED, reason=decision.reason),
        Outcome.RETRY: replace(
            base, type=EventType.RETRYING, reason=decision.reason, next_attempt_at=rfc3339(next_attempt_at)
        ),
    }[decision.outcome]
    return [replace(base, attempt=attempt), outcome]

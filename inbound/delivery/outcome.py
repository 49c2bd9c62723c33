"""The activity events an attempt (or a hold that ran out) produces for one delivery."""

from __future__ import annotations

from ..clock import rfc3339
from ..events import Attempt, Event, EventType
from .outbox import Delivery
from .retry import Decision, Outcome


def _event(
    delivery: Delivery,
    kind: EventType,
    now: float,
    *,
    attempt: Attempt | None = None,
    reason: str | None = None,
    next_attempt_at: str | None = None,
) -> Event:
    return Event(
        kind,
        delivery.delivery_id,
        delivery.queue_id,
        delivery.stream,
        rfc3339(now),
        delivery.generation,
        attempt=attempt,
        reason=reason,
        next_attempt_at=next_attempt_at,
    )


def outcome_events(
    delivery: Delivery, attempt: Attempt, decision: Decision, *, now: float, next_attempt_at: float
) -> list[Event]:
    """``attempt`` then ``delivered`` / ``failed`` / ``retrying`` (with when the next attempt is due)."""
    if decision.outcome is Outcome.DELIVERED:
        outcome = _event(delivery, EventType.DELIVERED, now)
    elif decision.outcome is Outcome.FAILED:
        outcome = _event(delivery, EventType.FAILED, now, reason=decision.reason)
    else:
        outcome = _event(
            delivery, EventType.RETRYING, now, reason=decision.reason, next_attempt_at=rfc3339(next_attempt_at)
        )
    return [_event(delivery, EventType.ATTEMPT, now, attempt=attempt), outcome]


def held_too_long(delivery: Delivery, reason: str, *, now: float) -> Event:
    """``failed`` without an attempt: held past ``webhooks.max_hold`` while its endpoint was down."""
    return _event(delivery, EventType.FAILED, now, reason=reason)

"""Retry policy: pure functions deciding what an attempt's outcome means.

Kept free of I/O so every rule is a one-line unit test: 2xx is delivered; 403
means the customer refused the message (Failed at once); anything else -- any
other status, a timeout, a refused connection -- is tried again after the next
step of ``webhooks.retry_schedule``, and Failed once the schedule is used up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum


class Outcome(Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    delay: float | None = None  # seconds until the next attempt, for RETRY
    reason: str | None = None  # for RETRY and FAILED


def describe(status_code: int | None, error: str | None) -> str:
    return f"HTTP {status_code}" if status_code is not None else (error or "no response")


def decide(attempt_number: int, status_code: int | None, error: str | None, schedule: Sequence[float]) -> Decision:
    """What to do after attempt *attempt_number* (1-based) ended with this status or error."""
    if status_code is not None and 200 <= status_code < 300:
        return Decision(Outcome.DELIVERED)
    reason = describe(status_code, error)
    if status_code == 403:
        return Decision(Outcome.FAILED, reason=f"{reason}: the endpoint refused the message")
    if attempt_number > len(schedule):
        return Decision(Outcome.FAILED, reason=f"{reason}; gave up after {attempt_number} attempts")
    return Decision(Outcome.RETRY, delay=schedule[attempt_number - 1], reason=reason)

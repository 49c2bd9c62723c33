"""Retry policy: pure functions deciding what an attempt's outcome means.

Kept free of I/O and of any clock so every rule is a one-line unit test. The
one rule about what an answer *is* lives in :func:`answer_of`:

* 2xx: the endpoint took the message -- delivered;
* 403: the endpoint refused *this message* -- Failed at once, and the endpoint
  itself is fine;
* anything else (another status, a timeout, a refused connection): the attempt
  failed and the endpoint may be down.

:func:`decide` turns an answer into what happens next. An ordinary attempt
that failed uses the next step of ``webhooks.retry_schedule`` and, once the
schedule is used up, the message is Failed. A *probe* (the oldest waiting
delivery of a failing endpoint, tried early) that failed uses no step and
never fails a message: the delivery keeps its place in its own schedule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum


class Answer(Enum):
    ACCEPTED = "accepted"  # 2xx
    REFUSED = "refused"  # 403: the customer refused this message
    FAILED = "failed"  # anything else, or no answer at all


def answer_of(status_code: int | None) -> Answer:
    if status_code is not None and 200 <= status_code < 300:
        return Answer.ACCEPTED
    if status_code == 403:
        return Answer.REFUSED
    return Answer.FAILED


def endpoint_is_up(status_code: int | None) -> bool:
    """Whether the answer shows a working endpoint (it took or refused the message on purpose)."""
    return answer_of(status_code) is not Answer.FAILED


class Outcome(Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    delay: float | None = None  # for RETRY: seconds until the next attempt; None keeps the due time (a probe)
    reason: str | None = None  # for RETRY and FAILED


def describe(status_code: int | None, error: str | None) -> str:
    return f"HTTP {status_code}" if status_code is not None else (error or "no response")


def decide(
    status_code: int | None,
    error: str | None,
    *,
    attempt: int,
    steps_used: int,
    schedule: Sequence[float],
    probe: bool = False,
) -> Decision:
    """What follows attempt number *attempt* (probes counted) of a delivery that has used *steps_used* steps."""
    answer = answer_of(status_code)
    if answer is Answer.ACCEPTED:
        return Decision(Outcome.DELIVERED)
    reason = describe(status_code, error)
    if answer is Answer.REFUSED:
        return Decision(Outcome.FAILED, reason=f"{reason}: the endpoint refused the message")
    if probe:
        return Decision(Outcome.RETRY, delay=None, reason=reason)
    if steps_used >= len(schedule):
        return Decision(Outcome.FAILED, reason=f"{reason}; gave up after {attempt} attempts")
    return Decision(Outcome.RETRY, delay=schedule[steps_used], reason=reason)

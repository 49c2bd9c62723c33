"""Retry policy: pure functions deciding what an attempt's outcome means.

Kept free of I/O and of any clock so every rule is a one-line unit test. The
one rule about what an answer *is* lives in :func:`answer_of`:

* 2xx: the endpoint took the message -- delivered;
* 403: the endpoint refused *this message* -- Failed at once, and the endpoint
  itself is fine;
* no connection at all (refused, DNS, TLS): the endpoint is unreachable --
  nothing about the message can cause that;
* anything else (another status, a timeout): the attempt failed; whether the
  endpoint or this message is at fault, only several deliveries can tell
  (:mod:`.health`).

:func:`decide` turns an answer into what happens next. A failure while the
endpoint is up uses the next step of ``webhooks.retry_schedule`` and, once the
schedule is used up, the message is Failed. A failure while the endpoint is
down (health says so, counting this attempt) *holds* the delivery: it uses no
step and never fails the message, however long the outage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum


class Answer(Enum):
    ACCEPTED = "accepted"  # 2xx
    REFUSED = "refused"  # 403: the customer refused this message
    FAILED = "failed"  # any other status, or a timeout
    UNREACHABLE = "unreachable"  # no connection could be made


def answer_of(status_code: int | None, *, connected: bool = True) -> Answer:
    if not connected:
        return Answer.UNREACHABLE
    if status_code is not None and 200 <= status_code < 300:
        return Answer.ACCEPTED
    if status_code == 403:
        return Answer.REFUSED
    return Answer.FAILED


class Outcome(Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    delay: float | None = None  # for RETRY: seconds until the next attempt; None: held (no step used)
    reason: str | None = None  # for RETRY and FAILED


def describe(status_code: int | None, error: str | None) -> str:
    return f"HTTP {status_code}" if status_code is not None else (error or "no response")


def decide(
    answer: Answer,
    reason: str,
    *,
    attempt: int,
    steps_used: int,
    schedule: Sequence[float],
    held: bool = False,
) -> Decision:
    """What follows attempt number *attempt* (probes counted) of a delivery that has used *steps_used* steps.

    *held*: the endpoint is down (counting this attempt), so a failure waits for it to come back.
    """
    if answer is Answer.ACCEPTED:
        return Decision(Outcome.DELIVERED)
    if answer is Answer.REFUSED:
        return Decision(Outcome.FAILED, reason=f"{reason}: the endpoint refused the message")
    if held:
        return Decision(Outcome.RETRY, delay=None, reason=f"{reason}; held: the endpoint is down")
    if steps_used >= len(schedule):
        return Decision(Outcome.FAILED, reason=f"{reason}; gave up after {attempt} attempts")
    return Decision(Outcome.RETRY, delay=schedule[steps_used], reason=reason)

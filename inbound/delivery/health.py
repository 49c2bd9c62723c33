"""Endpoint health: is a stream's webhook down as a whole, and how hard may we press it?

A pure state machine, one per stream: no I/O, no clock of its own (every call
is given ``now``, monotonic time: a probe due in 30 s waited an hour and 30 s
after a step back of the wall clock), no lock (the deliverer serialises calls).

Health is about the *endpoint*, never about one message. A message the
endpoint keeps refusing (a 500 for that body only) must follow its own retry
schedule while the rest of the stream flows; an endpoint that is down must not
burn every message's schedule and turn an outage into Failed mail. So:

* **up**: up to ``concurrency`` attempts at a time; each failure follows its
  message's schedule.
* it goes **down** when ``open_after`` *distinct* deliveries have failed with
  no success between them, or at once when an attempt could not even connect
  (refused, DNS, TLS: nothing about the message can cause that);
* **down**: no attempt but a *probe* -- the oldest waiting delivery, one at a
  time, every ``probe_interval`` -- and every failure while down uses no step
  of any schedule (the delivery is *held*). The first answer that shows the
  endpoint working (2xx or 403, see :func:`~inbound.delivery.retry.answer_of`)
  makes it **up** again and the held deliveries go out in arrival order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from .retry import Answer

#: Distinct deliveries failing in a row that show the endpoint itself is down.
OPEN_AFTER = 3


class Change(Enum):
    NONE = "none"
    WENT_DOWN = "went_down"  # the caller holds the stream
    CAME_BACK = "came_back"  # the caller releases the stream's held deliveries


@dataclass(frozen=True, slots=True)
class Slots:
    free: int  # how many attempts may start now
    probe: bool  # whether the one granted is a probe (the oldest waiting, due or not)


@dataclass
class EndpointHealth:
    concurrency: int
    probe_interval: float
    down_since: float | None = None  # when the endpoint went down (monotonic); None while it is up
    open_after: int = OPEN_AFTER
    next_probe_at: float = 0.0
    in_flight: int = 0
    # Deliveries that failed since the last success: held (their step given back) if the endpoint goes down.
    failing: set[str] = field(default_factory=set)

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def slots(self, now: float) -> Slots:
        """What may start now; a probe granted here is the only one until ``probe_interval`` has run."""
        if not self.down:
            return Slots(max(self.concurrency - self.in_flight, 0), probe=False)
        if self.in_flight or now < self.next_probe_at:
            return Slots(0, probe=False)
        self.next_probe_at = now + self.probe_interval
        return Slots(1, probe=True)

    def started(self, count: int = 1) -> None:
        self.in_flight += count

    def ended(self) -> None:
        """An attempt is over, whatever came of it: its slot is free."""
        self.in_flight -= 1

    def judge(self, delivery_id: str, answer: Answer, now: float) -> Change:
        """What an attempt's answer says about the endpoint."""
        if answer is not Answer.FAILED and answer is not Answer.UNREACHABLE:
            self.failing.clear()
            came_back = self.down
            self.down_since = None
            return Change.CAME_BACK if came_back else Change.NONE
        if self.down:
            return Change.NONE  # a failed probe: nothing new
        self.failing.add(delivery_id)
        if answer is Answer.FAILED and len(self.failing) < self.open_after:
            return Change.NONE
        self.down_since = now
        self.next_probe_at = now + self.probe_interval
        return Change.WENT_DOWN

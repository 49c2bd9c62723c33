"""Endpoint health: is a stream's webhook up, and how hard may we press it?

A pure state machine, one per stream: no I/O, no clock of its own (every call
is given ``now``), no lock (the deliverer serialises calls). Two states:

* **up**: up to ``concurrency`` attempts at a time;
* **failing** (an attempt found the endpoint down, see
  :func:`~inbound.delivery.retry.endpoint_is_up`): one attempt at a time, so a
  struggling endpoint is not flooded, and every ``probe_interval`` the oldest
  waiting delivery may go early as a *probe*. The first answer that shows the
  endpoint up again -- a probe's or any other attempt's -- makes it *up* and
  tells the caller to release the backlog.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Slots:
    free: int  # how many attempts may start now
    probe: bool  # whether the first of them is a probe (may be taken before it is due)


@dataclass
class EndpointHealth:
    concurrency: int
    probe_interval: float
    failing: bool = False
    next_probe_at: float = 0.0
    in_flight: int = 0

    def slots(self, now: float) -> Slots:
        """What may start now; a probe granted here is the only one until ``probe_interval`` has run."""
        limit = 1 if self.failing else self.concurrency
        free = max(limit - self.in_flight, 0)
        probe = self.failing and free > 0 and now >= self.next_probe_at
        if probe:
            self.next_probe_at = now + self.probe_interval
        return Slots(free, probe)

    def started(self, count: int = 1) -> None:
        self.in_flight += count

    def finished(self, endpoint_up: bool | None, now: float) -> bool:
        """Count an attempt's end; True when a failing endpoint has just come back (release its backlog).

        *endpoint_up* None: the attempt ended with nothing to judge the endpoint by (it crashed, or
        its outcome could not be recorded); only the slot is given back.
        """
        self.in_flight -= 1
        if endpoint_up is None:
            return False
        recovered = endpoint_up and self.failing
        if not endpoint_up and not self.failing:
            self.next_probe_at = now + self.probe_interval
        self.failing = not endpoint_up
        return recovered

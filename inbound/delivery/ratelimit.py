"""Per-stream request rate: ``max_requests_per_second``, honoured while a backlog drains.

A recovering endpoint gets its held mail at once, which is the point -- unless
its owner says how much it can take. A token bucket, pure like
:mod:`.health`: no clock of its own (``now`` is passed in), no lock (the
deliverer calls it under its own). The bucket holds at most one second's worth
of requests, so a stream idle for an hour still starts at its rate, not with a
burst.

``now`` is monotonic time (:class:`~inbound.clock.Clock`): on the wall clock, a
step back of an hour left the bucket 7,200 tokens short at 2 a second, and the
stream sent nothing for that hour.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RateLimit:
    per_second: float | None  # None: no limit
    tokens: float = 0.0
    updated_at: float | None = None

    def available(self, now: float) -> int:
        """How many requests may start now."""
        if self.per_second is None:
            return 2**31
        capacity = max(self.per_second, 1.0)
        if self.updated_at is None:
            self.tokens = capacity
        else:
            self.tokens = min(capacity, self.tokens + (now - self.updated_at) * self.per_second)
        self.updated_at = now
        return int(self.tokens)

    def spend(self, count: int) -> None:
        if self.per_second is not None:
            self.tokens -= count

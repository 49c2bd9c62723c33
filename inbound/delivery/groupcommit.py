"""Group commit: many threads' records made durable by one flush.

Every delivery attempt must have its outcome on the bus before the outbox
moves on, and a flush is an fsync (embedded) or a round trip to every replica
(Kafka). Flushing once per attempt would make the fsync the ceiling of the
whole deliverer. Instead, the first thread to arrive becomes the leader: it
sends everything queued so far and flushes once, while the threads that
arrived meanwhile wait for that flush and share its outcome. Nothing is
acknowledged before it is durable, and the producer is only ever used by one
thread at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from ..bus import Producer
from ..errors import InboundError

Outgoing = tuple[str, bytes, bytes]  # topic, key, value


class GroupCommitter:
    def __init__(self, producer: Producer) -> None:
        self.producer = producer
        self.changed = threading.Condition()
        self.queued: list[Outgoing] = []
        self.next_group = 1  # the group that queued records will go out in
        self.flushing = False
        self.outcomes: dict[int, InboundError | None] = {}

    def publish(self, records: Sequence[Outgoing]) -> None:
        """Return once *records* are durable on the bus; raise the flush's error otherwise."""
        with self.changed:
            self.queued.extend(records)
            group = self.next_group
            while group not in self.outcomes and self.flushing:
                self.changed.wait()
            if group in self.outcomes:
                return self._outcome(group)
            self.flushing, batch, self.queued = True, self.queued, []
            self.next_group += 1
        error: InboundError | None = None
        try:
            for topic, key, value in batch:
                self.producer.send(topic, value, key=key)
            self.producer.flush()
        except InboundError as exc:
            error = exc
        with self.changed:
            self.outcomes[group] = error
            self.flushing = False
            self.changed.notify_all()
            return self._outcome(group)

    def _outcome(self, group: int) -> None:
        error = self.outcomes[group]
        # Keep only recent outcomes: every waiter of older groups has read its own by now.
        for old in [g for g in self.outcomes if g < group - 1000]:
            del self.outcomes[old]
        if error is not None:
            raise error

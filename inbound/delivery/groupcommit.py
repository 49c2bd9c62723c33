"""Group commit: many threads' writes made durable by one flush.

Every delivery attempt must have its outcome on the bus before the outbox
moves on, and the outbox must record that the delivery is done before a
restart could try it again; a flush is an fsync (embedded, the outbox) or a
round trip to every replica (Kafka). Flushing once per attempt would make the
fsync the ceiling of the whole deliverer. Instead, the first thread to arrive
becomes the leader: it writes everything queued so far at once, while the
threads that arrived meanwhile wait for that write and share its outcome.
Nothing is acknowledged before it is durable, and the writer is only ever used
by one thread at a time.

At a moderate rate the threads rarely meet: each outcome came alone and paid
for a flush of its own. So a leader that knows more items are on their way
(``more_coming``: the deliverer's POSTs under way) waits ``linger`` seconds for
them first, as Kafka's producer lingers for a batch. Only the recording waits;
the POSTs have been answered already.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from ..bus import Producer

Outgoing = tuple[str, bytes, bytes]  # topic, key, value
Item = TypeVar("Item")
Settled = TypeVar("Settled")  # what an outcome settles once it is on the bus (an outbox delivery)
# Groups whose outcome is kept. Each group drops the one this many before it: a scan of them all on
# every commit was 5 % of a draining pipeline's CPU.
KEPT_OUTCOMES = 1000


class GroupCommit(Generic[Item]):
    """``commit(items)`` returns once *write* made them durable, sharing the write with concurrent callers."""

    def __init__(
        self,
        write: Callable[[list[Item]], None],
        *,
        linger: float = 0.0,
        more_coming: Callable[[], bool] = lambda: False,
    ) -> None:
        self.write = write
        self.linger = linger
        self.more_coming = more_coming
        self.changed = threading.Condition()
        self.queued: list[Item] = []
        self.next_group = 1  # the group that queued items will go out in
        self.writing = False
        self.outcomes: dict[int, Exception | None] = {}

    def commit(self, items: Sequence[Item]) -> None:
        """Return once *items* are durable; raise the write's error otherwise."""
        with self.changed:
            self.queued.extend(items)
            group = self.next_group
            while group not in self.outcomes and self.writing:
                self.changed.wait()
            if group in self.outcomes:
                return self._outcome(group)
            self.writing = True  # this thread leads the group: whoever comes now joins it
        lingering = self.linger > 0 and self.more_coming()  # outside our lock: the answer takes its own
        with self.changed:
            if lingering:
                self.changed.wait(self.linger)
            batch, self.queued = self.queued, []
            self.next_group += 1
        error: Exception | None = None
        try:
            self.write(batch)
        except Exception as exc:  # noqa: BLE001 -- every caller of the group gets it; none may wait forever
            error = exc
        with self.changed:
            self.outcomes[group] = error
            # Keep only recent outcomes: every waiter of older groups has read its own by now.
            self.outcomes.pop(group - KEPT_OUTCOMES, None)
            self.writing = False
            self.changed.notify_all()
            return self._outcome(group)

    def _outcome(self, group: int) -> None:
        error = self.outcomes[group]
        if error is not None:
            raise error


class GroupCommitter(GroupCommit[tuple[Sequence[Outgoing], Settled | None]]):
    """Records for the bus, sent and flushed once per group; then what they settle, in one call.

    An attempt's outcome must be on the bus before the outbox forgets the delivery, so both
    writes belong to the same group: one leader, one hand-off for the attempt threads instead
    of one a write, and *settle* (the outbox's ``finish_many``) only ever after the flush.
    A failure of either fails the whole group: nobody is told their outcome is settled.
    """

    def __init__(
        self,
        producer: Producer,
        settle: Callable[[list[Settled]], None],
        *,
        linger: float = 0.0,
        more_coming: Callable[[], bool] = lambda: False,
    ) -> None:
        super().__init__(self._send, linger=linger, more_coming=more_coming)
        self.producer = producer
        self.settle = settle

    def _send(self, batch: list[tuple[Sequence[Outgoing], Settled | None]]) -> None:
        for records, _ in batch:
            for topic, key, value in records:
                self.producer.send(topic, value, key=key)
        self.producer.flush()
        settled = [item for _, item in batch if item is not None]
        if settled:
            self.settle(settled)

    def publish(self, records: Sequence[Outgoing], settles: Settled | None = None) -> None:
        """Return once *records* are on the bus and then *settles* is settled."""
        self.commit([(records, settles)])

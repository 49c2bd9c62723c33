"""Rebuild the activity store from the bus, the source of truth.

Every ``messages`` and ``events`` record still retained is applied again to an
emptied store. The store's merge is idempotent and order-independent, so a
rebuild gives the same records as the live record stage did -- and the same
records however often it is run; a rebuild that was interrupted is simply run
again. A record stage running meanwhile does no harm: it applies the same
events.

It relies on retention: the bus must still hold every record of every message
you want to see (the embedded bus keeps them all; on Kafka set ``retention.ms``
of the ``messages`` and ``events`` topics accordingly -- see README).
"""

from __future__ import annotations

from collections.abc import Callable

from ..bus import Bus, Record
from . import ActivityStore
from .record import Recorder

SOURCE_TOPICS = ("messages", "events")
BATCH = 500
# A consumer group that never commits: its lag is every retained record.
_COUNTING_GROUP = "inbound-rebuild-count"


def records_to_replay(bus: Bus) -> int:
    return sum(bus.lag(_COUNTING_GROUP, topic) for topic in SOURCE_TOPICS)


def rebuild(bus: Bus, store: ActivityStore, advance: Callable[[int], None] = lambda n: None) -> int:
    """Empty *store* and apply every retained record again; return how many were read."""
    recorder = Recorder(store)
    store.reset()
    seen = 0
    for topic in SOURCE_TOPICS:
        batch: list[Record] = []
        for record in bus.read_all(topic):
            batch.append(record)
            if len(batch) >= BATCH:
                recorder.handle(batch)
                seen += len(batch)
                advance(len(batch))
                batch = []
        recorder.handle(batch)
        seen += len(batch)
        advance(len(batch))
    return seen

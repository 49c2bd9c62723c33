"""The bus interface: a durable, partitioned, replayable log of records.

Every stage talks to the bus only through these three small protocols, so the
embedded SQLite log and Apache Kafka are interchangeable (like httpx's
transports). Topic names given here are *logical* (``received``,
``messages``, ``events``, ``control``); a backend may map them to physical
names (Kafka applies ``bus.topic_prefix``).

Contract every backend keeps (``tests/test_bus_contract.py`` checks it):

* ``Producer.flush()`` returns only once every record sent before it is
  durable on the bus; otherwise it raises :class:`inbound.errors.BusError`.
  Nothing is durable before ``flush()`` returns.
* Records with the same key on the same topic are consumed in the order they
  were sent.
* A consumer group sees every record at least once. ``commit()`` marks every
  record returned by ``poll()`` so far as done for the group; records polled
  but not committed are delivered again after ``rewind()``, after a restart,
  or to another member of the group that takes over.
* A new group starts at the earliest retained record.
* All calls block: callers keep them off the asyncio event loop.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

Headers = tuple[tuple[str, bytes], ...]


#: Records a stage takes in one batch unless it asks otherwise.
BATCH = 100


@dataclass(frozen=True, slots=True)
class Record:
    """One record as read back from the bus."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    headers: Headers
    timestamp_ms: int

    def header(self, name: str) -> bytes | None:
        """The value of the first header called *name*, or None."""
        return next((v for k, v in self.headers if k == name), None)


class Producer(Protocol):
    def send(self, topic: str, value: bytes, *, key: bytes, headers: Headers = ()) -> None:
        """Queue one record; it is durable only after the next ``flush()``."""

    def flush(self) -> None:
        """Block until every record sent so far is durable; raise BusError if not.

        A failed flush drops what was sent before it, durable or not: the sender sends it again
        (every stage does: its batch is handled again from its last commit).
        """

    def close(self) -> None: ...


class Consumer(Protocol):
    def poll(self, timeout: float, max_records: int = BATCH) -> list[Record]:
        """Wait up to *timeout* seconds for records; return at most *max_records*."""

    def commit(self) -> None:
        """Mark every record returned by ``poll()`` so far as processed for the group."""

    def rewind(self) -> None:
        """Go back to the last committed position, so uncommitted records come again."""

    def close(self) -> None: ...


class Follower(Protocol):
    """A reader of one topic outside any group that keeps its place between reads."""

    def read_new(self) -> Iterator[Record]:
        """The records written since the last read (the first read: all retained), up to the end
        the topic had when this read started."""

    def close(self) -> None: ...


class Bus(Protocol):
    def ensure_topics(self, topics: Sequence[str]) -> None:
        """Create the topics that do not exist yet (idempotent)."""

    def producer(self) -> Producer: ...

    def consumer(self, group: str, topics: Sequence[str]) -> Consumer: ...

    def read_all(self, topic: str) -> Iterator[Record]:
        """Every retained record of *topic* from the start, outside any group."""

    def follow(self, topic: str) -> Follower:
        """A reader of *topic* for a process that reads it again and again (the control topic)."""

    def lag(self, group: str, topic: str) -> int:
        """How many records of *topic* the group has not committed yet."""

    def close(self) -> None: ...

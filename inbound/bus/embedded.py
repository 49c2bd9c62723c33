"""The embedded bus: a durable log in one SQLite file, for a single machine.

Same contract as Kafka (see ``_base.py``) with one partition per topic:
records get increasing offsets, consumer groups keep committed offsets in the
same file, and one member of a group consumes at a time (the others stand by
until its lease lapses: that is how a second process of the same role takes
over from one killed with SIGKILL).

Durability: WAL with ``synchronous=FULL``, so a ``flush()`` that returned has
been fsynced. A consumer's offsets and lease are bookkeeping, committed without
an fsync of their own (as Kafka's are): a power cut can only move a group back
to records it had already handled, and every stage handles a record again
idempotently. Records are kept until deleted on purpose: the activity store is
rebuilt from them.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from .. import jsoncodec
from ..errors import BusError
from ..sqlitefile import SQLiteFile
from ._base import BATCH, Headers, Record

LEASE_SECONDS = 15.0
# Other processes' writes are seen within this much: a poll that finds nothing new asks SQLite
# every _IDLE_POLL whether any other connection has committed since (PRAGMA data_version, a read
# of the WAL index in shared memory: microseconds), and reads the records only then. A member
# standing by for another's lease looks every _STANDBY_POLL.
_IDLE_POLL = 0.005
_STANDBY_POLL = 0.05
# The values one read of records holds, beyond its first record: a backlog of large messages is read
# a few at a time, not a whole batch by count (100 ``received`` records of 25 MB would be 2.5 GB).
BATCH_BYTES = 16 * 1024 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    offset INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    key BLOB NOT NULL,
    value BLOB NOT NULL,
    headers TEXT NOT NULL,
    timestamp_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS records_by_topic ON records (topic, offset);
CREATE TABLE IF NOT EXISTS topics (name TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS committed (
    group_name TEXT NOT NULL, topic TEXT NOT NULL, offset INTEGER NOT NULL,
    PRIMARY KEY (group_name, topic)
);
CREATE TABLE IF NOT EXISTS leases (
    group_name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at REAL NOT NULL
);
"""


class EmbeddedBus:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = SQLiteFile(path, "embedded bus", BusError)
        self._written = threading.Condition()  # wakes this process's pollers after a flush
        with self._connection() as db:
            db.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """A short-lived connection, for calls made now and then (topics, lag, a full read)."""
        db = self.file.connect()
        try:
            with self.file.errors():
                yield db
        finally:
            db.close()

    def ensure_topics(self, topics: Sequence[str]) -> None:
        with self._connection() as db:
            db.executemany("INSERT OR IGNORE INTO topics (name) VALUES (?)", [(t,) for t in topics])

    def producer(self) -> EmbeddedProducer:
        return EmbeddedProducer(self)

    def consumer(self, group: str, topics: Sequence[str]) -> EmbeddedConsumer:
        return EmbeddedConsumer(self, group, topics)

    def read_all(self, topic: str) -> Iterator[Record]:
        return EmbeddedFollower(self, topic).read_new()

    def follow(self, topic: str) -> EmbeddedFollower:
        return EmbeddedFollower(self, topic)

    def lag(self, group: str, topic: str) -> int:
        with self._connection() as db:
            committed = _committed(db, group, topic)
            count: int = db.execute(
                "SELECT COUNT(*) FROM records WHERE topic = ? AND offset > ?", (topic, committed)
            ).fetchone()[0]
            return count

    def notify(self) -> None:
        with self._written:
            self._written.notify_all()

    def wait(self, timeout: float) -> None:
        with self._written:
            self._written.wait(timeout)

    def close(self) -> None:
        pass


class EmbeddedFollower:
    def __init__(self, bus: EmbeddedBus, topic: str) -> None:
        self.bus = bus
        self.topic = topic
        self.position = 0  # the offset of the last record read

    def read_new(self) -> Iterator[Record]:
        with self.bus._connection() as db:
            end = db.execute("SELECT COALESCE(MAX(offset), 0) FROM records").fetchone()[0]
            while True:
                rows = _read(
                    db,
                    "SELECT * FROM records WHERE topic = ? AND offset > ? AND offset <= ? ORDER BY offset LIMIT ?",
                    (self.topic, self.position, end),
                    100,
                )
                if not rows:
                    return
                for row in rows:
                    self.position = row[0]
                    yield _record(row)

    def close(self) -> None:
        pass


_Row = tuple[int, str, bytes, bytes, str, int]  # a row of ``records``


def _read(db: sqlite3.Connection, query: str, params: tuple[object, ...], most: int) -> list[_Row]:
    """The first rows *query* finds (its last parameter, LIMIT, is *most*), as :func:`_first` cuts them.

    The cursor is read no further than that (sqlite3 steps it a row at a time), then closed.
    """
    cursor = db.execute(query, (*params, most))
    try:
        return _first(cursor, most)
    finally:
        cursor.close()


def _first(rows: Iterable[_Row], most: int) -> list[_Row]:
    """The first of *rows*: at most *most*, and none after those that hold BATCH_BYTES of values."""
    taken: list[_Row] = []
    held = 0
    for row in rows:
        taken.append(row)
        held += len(row[3])
        if len(taken) >= most or held >= BATCH_BYTES:
            break
    return taken


def _full(records: list[Record], most: int) -> bool:
    """Whether a read that returned *records* was cut short, by count or by size (so more may wait)."""
    return len(records) >= most or sum(len(r.value) for r in records) >= BATCH_BYTES


def _record(row: _Row) -> Record:
    offset, topic, key, value, headers, timestamp_ms = row
    decoded: Headers = tuple((name, bytes.fromhex(v)) for name, v in jsoncodec.loads(headers))
    return Record(topic, 0, offset, bytes(key), bytes(value), decoded, timestamp_ms)


def _committed(db: sqlite3.Connection, group: str, topic: str) -> int:
    row = db.execute("SELECT offset FROM committed WHERE group_name = ? AND topic = ?", (group, topic)).fetchone()
    return int(row[0]) if row else 0


class EmbeddedProducer:
    def __init__(self, bus: EmbeddedBus) -> None:
        self.bus = bus
        self.db = bus.file.connect()
        self.pending: list[tuple[str, bytes, bytes, str, int]] = []

    def send(self, topic: str, value: bytes, *, key: bytes, headers: Headers = ()) -> None:
        encoded = jsoncodec.dumps([(name, v.hex()) for name, v in headers]).decode()
        self.pending.append((topic, key, value, encoded, int(time.time() * 1000)))

    def flush(self) -> None:
        """Write what was sent; after a failure nothing of it stays queued, as on Kafka (see Producer).

        Its senders send it again: kept, each retry of a stage's batch (a disk full for minutes)
        added another copy, in memory until the disk had room, then on the bus.
        """
        pending, self.pending = self.pending, []
        if not pending:
            return
        with self.bus.file.transaction(self.db) as db:
            db.executemany(
                "INSERT INTO records (topic, key, value, headers, timestamp_ms) VALUES (?, ?, ?, ?, ?)", pending
            )
        self.bus.notify()

    def close(self) -> None:
        self.db.close()


class EmbeddedConsumer:
    def __init__(self, bus: EmbeddedBus, group: str, topics: Sequence[str]) -> None:
        self.bus = bus
        self.group = group
        self.topics = list(topics)
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.db = bus.file.connect(durable=False)  # it writes only its lease and offsets
        self.positions: dict[str, int] | None = None  # None until this member holds the lease
        self.renewed_at = 0.0
        self.caught_up_at: int | None = None  # the data_version at which a fetch found no more records

    def _hold_lease(self) -> bool:
        """Take or renew the group's lease; False while another live member holds it.

        Renewing is a write, so a member that holds a fresh lease does not renew it on every
        poll, only once a third of it has run.
        """
        now = time.time()
        if self.positions is not None and now < self.renewed_at + LEASE_SECONDS / 3:
            return True
        with self.bus.file.transaction(self.db) as db:
            row = db.execute("SELECT owner, expires_at FROM leases WHERE group_name = ?", (self.group,)).fetchone()
            if row is not None and row[0] != self.owner and row[1] > now:
                self.positions = None
                return False
            db.execute(
                "INSERT OR REPLACE INTO leases (group_name, owner, expires_at) VALUES (?, ?, ?)",
                (self.group, self.owner, now + LEASE_SECONDS),
            )
            if self.positions is None or row is None or row[0] != self.owner:
                self.positions = {t: _committed(db, self.group, t) for t in self.topics}
        self.renewed_at = now
        return True

    def poll(self, timeout: float, max_records: int = BATCH) -> list[Record]:
        deadline = time.monotonic() + timeout
        while True:
            with self.bus.file.errors():
                records = self._fetch_if_written(max_records)
            remaining = deadline - time.monotonic()
            if records or remaining <= 0:
                return records
            self.bus.wait(min(remaining, _IDLE_POLL if self.positions is not None else _STANDBY_POLL))

    def _fetch_if_written(self, max_records: int) -> list[Record]:
        """:meth:`_fetch`, skipped while nothing was committed since it last found every record read."""
        version: int = self.db.execute("PRAGMA data_version").fetchone()[0]
        lease_due = time.time() >= self.renewed_at + LEASE_SECONDS / 3
        if self.positions is not None and version == self.caught_up_at and not lease_due:
            return []
        records = self._fetch(max_records)
        self.caught_up_at = None if _full(records, max_records) else version
        return records

    def _fetch(self, max_records: int) -> list[Record]:
        if not self._hold_lease():
            return []
        positions = self.positions
        assert positions is not None
        # A topic at a time, each read in index order up to the limit, then the lowest offsets of
        # them all: one query with a clause per topic made SQLite gather and sort every record
        # behind the consumer's positions (33 ms a poll with 40,000 behind; 0.8 ms this way), so
        # a backlog slowed its own catch-up. One read transaction: one snapshot of every topic.
        with self.bus.file.transaction(self.db, "DEFERRED") as db:
            rows = [
                row
                for topic in self.topics
                for row in _read(
                    db,
                    "SELECT * FROM records WHERE topic = ? AND offset > ? ORDER BY offset LIMIT ?",
                    (topic, positions[topic]),
                    max_records,
                )
            ]
        rows.sort(key=lambda row: int(row[0]))
        records = [_record(row) for row in _first(rows, max_records)]
        for record in records:
            positions[record.topic] = record.offset
        return records

    def commit(self) -> None:
        positions = self.positions
        if positions is None:
            return
        with self.bus.file.transaction(self.db) as db:
            owner = db.execute("SELECT owner FROM leases WHERE group_name = ?", (self.group,)).fetchone()
            if owner is None or owner[0] != self.owner:
                self.positions = None
                raise BusError(f"consumer group {self.group!r}: lease lost to another member; not committed")
            db.executemany(
                "INSERT OR REPLACE INTO committed (group_name, topic, offset) VALUES (?, ?, ?)",
                [(self.group, t, o) for t, o in positions.items()],
            )

    def rewind(self) -> None:
        self.positions = None
        self.caught_up_at = None

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # if this fails the lease lapses by itself
            self.db.execute("DELETE FROM leases WHERE group_name = ? AND owner = ?", (self.group, self.owner))
        self.db.close()

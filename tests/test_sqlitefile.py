"""How every SQLite file is opened: WAL, however many open it at once; which commits are fsynced (every
output, and no bookkeeping -- offsets, leases, finishes -- of its own); how long the log grows; how a
writer waits for another."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from inbound import sqlitefile
from inbound.bus.embedded import EmbeddedBus
from inbound.delivery.outbox import Delivery, Outbox
from inbound.errors import StoreError
from inbound.sqlitefile import CHECKPOINT_PAGES, SQLiteFile

FULL, NORMAL = 2, 1  # PRAGMA synchronous: FULL fsyncs every commit; NORMAL (in WAL) only at checkpoints


def synchronous(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA synchronous").fetchone()[0])


def busy_timeout_ms(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA busy_timeout").fetchone()[0])


Locked = tuple[SQLiteFile, sqlite3.Connection, sqlite3.Connection]


@pytest.fixture
def locked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Locked]:
    """A file, a connection of ours to it, and another writer holding its write lock (half a second of busy timeout)."""
    monkeypatch.setattr(sqlitefile, "BUSY_TIMEOUT_SECONDS", 0.5)
    file = SQLiteFile(tmp_path / "x.db", "test file", StoreError)
    db = file.connect()
    db.execute("CREATE TABLE t (x)")
    other = sqlite3.connect(file.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    yield file, db, other
    other.close()
    db.close()


def test_a_file_another_connection_is_writing_is_switched_to_wal_once_it_is_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes opening a new file race to switch it to WAL; SQLite answers the one that finds
    the other's write lock "database is locked" at once, whatever the busy timeout."""
    path = tmp_path / "x.db"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("CREATE TABLE t (x)")
    other.execute("BEGIN IMMEDIATE")  # the other process, mid-write
    waits: list[float] = []

    def pause(seconds: float) -> None:  # the other process commits while this one waits
        waits.append(seconds)
        other.execute("COMMIT")

    monkeypatch.setattr(sqlitefile.time, "sleep", pause)
    db = SQLiteFile(path, "test file", StoreError).connect()
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert len(waits) == 1
    db.close()
    other.close()


def test_only_a_connection_asked_for_bookkeeping_commits_without_an_fsync(tmp_path: Path) -> None:
    file = SQLiteFile(tmp_path / "x.db", "test file", StoreError)
    assert synchronous(file.connect()) == FULL
    assert synchronous(file.connect(durable=False)) == NORMAL


def test_every_connection_checkpoints_after_the_same_long_log(tmp_path: Path) -> None:
    """Set per connection: one left at SQLite's 1,000 pages would checkpoint the shared file ten times as often."""
    file = SQLiteFile(tmp_path / "x.db", "test file", StoreError)
    for db in (file.connect(), file.connect(durable=False)):
        assert db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == CHECKPOINT_PAGES > 1000


def test_the_outbox_leases_and_finishes_on_a_connection_of_their_own(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    assert synchronous(outbox.db) == FULL  # deliveries and their schedule
    assert synchronous(outbox.bookkeeping) == NORMAL  # claims, and deliveries done
    durable: list[str] = []
    bookkeeping: list[str] = []
    outbox.db.set_trace_callback(durable.append)
    outbox.bookkeeping.set_trace_callback(bookkeeping.append)
    outbox.add([Delivery("Q1-s", "s", "Q1", 0, b"{}", 0, 0, 0.0)])
    [claimed] = outbox.claim("s", 1, "me", lease_seconds=60)
    assert outbox.claim("s", 1, "other", lease_seconds=60) == []  # the lease is seen by every connection
    wrote = len(durable)
    outbox.finish_many([claimed])
    assert len(durable) == wrote  # the finish went through the bookkeeping connection alone
    assert any("done = 1" in sql for sql in bookkeeping)
    assert any(sql.startswith("INSERT INTO deliveries") for sql in durable)
    assert outbox.waiting("s").count == 0  # and is seen by every connection
    assert synchronous(outbox.db) == FULL


def test_an_embedded_consumer_writes_only_bookkeeping_and_a_producer_only_outputs(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path / "bus.db")
    assert synchronous(bus.consumer("group", ["topic"]).db) == NORMAL
    assert synchronous(bus.producer().db) == FULL


def test_a_writer_waits_for_the_write_lock_in_steps_of_a_few_milliseconds(
    locked: Locked, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's busy handler sleeps 1, 2, 5, 10, 15 ms and more between tries: a lock held for 3 ms cost 8."""
    file, db, other = locked
    waits: list[float] = []

    def pause(seconds: float) -> None:  # the other writer commits during the fourth step
        waits.append(seconds)
        if len(waits) == 4:
            other.execute("COMMIT")

    monkeypatch.setattr(sqlitefile.time, "sleep", pause)
    with file.transaction(db) as tx:
        tx.execute("INSERT INTO t VALUES (1)")
    assert waits == [0.0005, 0.001, 0.002, 0.002]
    assert db.execute("SELECT x FROM t").fetchall() == [(1,)]
    assert busy_timeout_ms(db) == 500  # every other statement waits in SQLite's busy handler, as before


def test_a_writer_that_never_gets_the_write_lock_fails_with_the_files_error_at_the_busy_timeout(locked: Locked) -> None:
    file, db, other = locked
    with pytest.raises(StoreError, match=r"test file.*locked"), file.transaction(db) as tx:
        tx.execute("INSERT INTO t VALUES (1)")
    assert not db.in_transaction
    assert busy_timeout_ms(db) == 500
    other.execute("COMMIT")
    with file.transaction(db) as tx:  # and the next one, once the lock is free, goes through
        tx.execute("INSERT INTO t VALUES (2)")
    assert db.execute("SELECT x FROM t").fetchall() == [(2,)]

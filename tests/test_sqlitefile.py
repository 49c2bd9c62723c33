"""Which SQLite commits are fsynced: every output, and no bookkeeping (offsets, leases) of its own."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from inbound.bus.embedded import EmbeddedBus
from inbound.errors import StoreError
from inbound.sqlitefile import SQLiteFile

FULL, NORMAL = 2, 1  # PRAGMA synchronous: FULL fsyncs every commit; NORMAL (in WAL) only at checkpoints


def synchronous(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA synchronous").fetchone()[0])


def test_bookkeeping_commits_are_not_fsynced_and_everything_else_is(tmp_path: Path) -> None:
    file = SQLiteFile(tmp_path / "x.db", "test file", StoreError)
    db = file.connect()
    assert synchronous(db) == FULL
    with file.bookkeeping(db):
        assert synchronous(db) == NORMAL
    assert synchronous(db) == FULL  # the connection's next output is durable again
    assert synchronous(file.connect(durable=False)) == NORMAL


def test_an_embedded_consumer_writes_only_bookkeeping_and_a_producer_only_outputs(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path / "bus.db")
    assert synchronous(bus.consumer("group", ["topic"]).db) == NORMAL
    assert synchronous(bus.producer().db) == FULL

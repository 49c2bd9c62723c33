"""Which SQLite commits are fsynced: every output, and no bookkeeping (offsets, leases) of its own."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from inbound.bus.embedded import EmbeddedBus
from inbound.delivery.outbox import Delivery, Outbox
from inbound.errors import StoreError
from inbound.sqlitefile import SQLiteFile

FULL, NORMAL = 2, 1  # PRAGMA synchronous: FULL fsyncs every commit; NORMAL (in WAL) only at checkpoints


def synchronous(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA synchronous").fetchone()[0])


def test_only_a_connection_asked_for_bookkeeping_commits_without_an_fsync(tmp_path: Path) -> None:
    file = SQLiteFile(tmp_path / "x.db", "test file", StoreError)
    assert synchronous(file.connect()) == FULL
    assert synchronous(file.connect(durable=False)) == NORMAL


def test_the_outbox_leases_on_a_connection_of_their_own(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    assert synchronous(outbox.db) == FULL  # deliveries, attempts, finishes
    assert synchronous(outbox.leases) == NORMAL  # claims
    outbox.add([Delivery("Q1-s", "s", "Q1", 0, b"{}", 0, 0, 0.0)])
    assert [d.delivery_id for d in outbox.claim("s", 1, "me", lease_seconds=60)] == ["Q1-s"]
    assert outbox.claim("s", 1, "other", lease_seconds=60) == []  # the lease is seen by every connection
    assert synchronous(outbox.db) == FULL


def test_an_embedded_consumer_writes_only_bookkeeping_and_a_producer_only_outputs(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path / "bus.db")
    assert synchronous(bus.consumer("group", ["topic"]).db) == NORMAL
    assert synchronous(bus.producer().db) == FULL

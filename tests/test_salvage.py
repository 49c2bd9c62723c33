"""Reading rows out of damaged SQLite files, page by page (inbound.ops.salvage), on real SQLite files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from inbound.activity import SQLiteActivityStore
from inbound.bus import TOPICS
from inbound.bus.embedded import EmbeddedBus
from inbound.datadir import DataDir
from inbound.delivery.outbox import Delivery, Outbox
from inbound.edge.spool import Spool
from inbound.ops.recover import Recovery
from inbound.ops.salvage import salvage_rows
from inbound.records import decode_message


def make_database(path: Path, rows: int) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, blob BLOB, n INTEGER, x REAL)")
    db.executemany(
        "INSERT INTO t VALUES (?, ?, ?, ?, ?)",
        # Every third row is bigger than a page, so it spills onto an overflow chain.
        [(i, f"row {i}", bytes([i % 256]) * (9000 if i % 3 == 0 else 50), i * 1000, i / 4) for i in range(1, rows + 1)],
    )
    db.commit()
    db.close()


def test_a_sound_file_gives_every_row_back(tmp_path: Path) -> None:
    path = tmp_path / "sound.db"
    make_database(path, 60)
    rows = salvage_rows(path, columns=(5,))
    assert sorted(rows) == list(range(1, 61))
    assert rows[3] == [None, "row 3", b"\x03" * 9000, 3000, 0.75]  # the rowid alias is stored as NULL
    assert rows[7] == [None, "row 7", b"\x07" * 50, 7000, 1.75]


def test_a_damaged_file_gives_back_what_its_sound_pages_hold(tmp_path: Path) -> None:
    path = tmp_path / "damaged.db"
    make_database(path, 60)
    data = bytearray(path.read_bytes())
    data[:100] = b"\0" * 100  # the header: SQLite refuses the file outright
    middle = len(data) // 4096 // 2 * 4096
    data[middle : middle + 4096] = b"\xff" * 4096  # and one page in the middle
    path.write_bytes(bytes(data))
    rows = salvage_rows(path, columns=(5,))
    assert 0 < len(rows) < 60
    for rowid, values in rows.items():  # whatever comes back is intact
        assert values[1] == f"row {rowid}"
        assert values[2] == bytes([rowid % 256]) * (9000 if rowid % 3 == 0 else 50)


def test_waiting_deliveries_are_salvaged_from_an_outbox_with_rows_of_both_ages(tmp_path: Path) -> None:
    """Rows written before the outbox had ``content_type`` keep 12 columns on disk, newer ones 13 or 14;
    payloads are in the row (before ``payloads``) or in ``payloads``."""
    data = DataDir(tmp_path / "data")
    data.quarantine.mkdir(parents=True)
    damaged = data.quarantine / "outbox.db.20261123T000000"
    old = sqlite3.connect(damaged)
    old.execute(
        "CREATE TABLE deliveries (delivery_id TEXT PRIMARY KEY, stream TEXT NOT NULL, queue_id TEXT NOT NULL,"
        " generation INTEGER NOT NULL, payload BLOB, attempts INTEGER NOT NULL DEFAULT 0, steps INTEGER NOT NULL"
        " DEFAULT 0, due_at REAL NOT NULL, added_at REAL NOT NULL, done INTEGER NOT NULL DEFAULT 0,"
        " lease_owner TEXT, lease_until REAL NOT NULL DEFAULT 0)"
    )
    old.execute("INSERT INTO deliveries VALUES ('Q1-support', 'support', 'Q1', 0, X'7B7D', 1, 1, 0, 0, 0, NULL, 0)")
    old.commit()
    old.close()
    outbox = Outbox(damaged)  # adds the column, as a newer inbound does on start
    form = Delivery("Q2-support", "support", "Q2", 0, b"a=1", 0, 0, 0.0, "application/x-www-form-urlencoded")
    outbox.add([form])
    outbox.close()
    before_payloads = sqlite3.connect(damaged)  # as an outbox of before ``payloads`` wrote a delivery
    before_payloads.execute(
        "INSERT INTO deliveries (delivery_id, stream, queue_id, generation, payload, due_at, added_at)"
        " VALUES ('Q3-support', 'support', 'Q3', 0, X'5B5D', 0, 0)"
    )
    before_payloads.commit()
    before_payloads.close()
    bus = EmbeddedBus(data.bus)
    bus.ensure_topics(TOPICS)
    store = SQLiteActivityStore(data.activity)
    Recovery(data.quarantine, Spool(data), bus, store).run()
    saved = {m.delivery_id: (m.content_type, m.body) for m in map(decode_message, bus.read_all("messages"))}
    assert saved == {
        "Q1-support": ("application/json", b"{}"),
        "Q2-support": ("application/x-www-form-urlencoded", b"a=1"),
        "Q3-support": ("application/json", b"[]"),
    }
    store.close()
    bus.close()

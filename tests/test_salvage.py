"""Reading rows out of damaged SQLite files, page by page (inbound.ops.salvage), on real SQLite files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from inbound.ops.salvage import salvage_rows


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
    rows = salvage_rows(path, columns=5)
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
    rows = salvage_rows(path, columns=5)
    assert 0 < len(rows) < 60
    for rowid, values in rows.items():  # whatever comes back is intact
        assert values[1] == f"row {rowid}"
        assert values[2] == bytes([rowid % 256]) * (9000 if rowid % 3 == 0 else 50)

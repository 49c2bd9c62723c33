"""The start-up check of the data directory's databases (inbound.ops.integrity), on real SQLite files:
damage moves a file aside; anything else stops the start and moves nothing."""

from __future__ import annotations

import resource
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from inbound.datadir import DataDir
from inbound.ops.integrity import check_databases


def sound_database(path: Path, rows: int = 1) -> None:
    """A WAL database, closed cleanly (no -wal or -shm left), as a stopped service leaves it."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("CREATE TABLE records (id INTEGER PRIMARY KEY, value BLOB)")
    db.executemany("INSERT INTO records (value) VALUES (?)", [(b"x" * 3000,) for _ in range(rows)])
    db.commit()
    db.close()


def no_file_may_grow() -> None:
    """In the child: every write that would grow a file fails (EFBIG), as on a full disk."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))


def test_a_sound_database_that_cannot_be_checked_stops_the_start_and_stays(tmp_path: Path) -> None:
    data = DataDir(tmp_path)
    sound_database(data.bus)
    # A read-only connection to a WAL database makes its -shm file: on a full disk it cannot.
    check = (
        "import sys; from pathlib import Path; from inbound.datadir import DataDir;"
        " from inbound.ops.integrity import check_databases; check_databases(DataDir(Path(sys.argv[1])))"
    )
    result = subprocess.run(
        [sys.executable, "-c", check, str(tmp_path)],
        preexec_fn=no_file_may_grow,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert f"DataDirError: cannot check {data.bus}: disk I/O error" in result.stderr
    assert data.bus.exists()  # not taken for damage: what the bus holds stays where the service reads it
    assert not data.quarantine.exists()
    assert check_databases(data) == []  # and once files may grow again, it is sound


@pytest.mark.parametrize("directory", ["data", "pct%41", "mail#1", "why?"])
def test_a_file_that_is_not_a_database_is_moved_aside(tmp_path: Path, directory: str) -> None:
    data = DataDir(tmp_path / directory)  # a "%", "#" or "?" in the name is no URI escape, fragment or query
    data.quarantine.parent.mkdir()
    data.outbox.write_bytes(b"not SQLite at all " * 500)
    moved = check_databases(data)
    assert [path.parent for path in moved] == [data.quarantine]
    assert moved[0].name.startswith("outbox.db.")
    assert not data.outbox.exists()


def test_a_database_with_damaged_pages_is_moved_aside(tmp_path: Path) -> None:
    data = DataDir(tmp_path)
    sound_database(data.activity, rows=40)
    with data.activity.open("r+b") as f:
        f.seek(4096)  # the table's root page: past SQLite's own header, so the file still opens
        f.write(b"#" * 4096)
    moved = check_databases(data)
    (quarantined,) = moved
    assert quarantined.name.startswith("activity.db.")
    assert not data.activity.exists()

"""Start-up integrity checks: a damaged database is moved aside, never opened and never fatal.

A host crash or a failing disk can leave a SQLite file (the embedded bus, the
outbox, the activity store) that SQLite refuses or reports as malformed. At
start-up each one is checked (``PRAGMA quick_check``); a damaged one is moved,
with its WAL, into ``quarantine/`` under a timestamped name, the path is
logged, and the service starts with a fresh file and keeps accepting mail.
``inbound recover`` then salvages what the quarantined file still holds.

Only damage moves a file: SQLite saying the file is corrupt or not a database,
or ``quick_check`` finding a problem. Any other failure to check it (a full
disk, where a read-only connection cannot make its ``-shm``; a permission; an
I/O error) says nothing about the file, so it stops the start instead
(:class:`~inbound.errors.DataDirError`) and the file stays where it is: moving a
sound bus aside would leave what it holds waiting for a manual recover.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path
from urllib.parse import quote

from ..datadir import DataDir, fsync_dir
from ..errors import DataDirError

log = logging.getLogger(__name__)

# SQLite's primary result codes that are about the file itself (the low byte of an extended code).
_DAMAGE_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


def damage(path: Path) -> str | None:
    """Why SQLite will not trust *path*, or None when it is sound (or absent).

    DataDirError when it cannot be checked for a reason that is not the file's.
    """
    if not path.exists():
        return None
    try:
        # A URI, for read-only; its path quoted, so that a "%", "#" or "?" in a data directory's
        # name is a character of the path, not an escape, a fragment or a query cutting it short.
        db = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True)
        try:
            rows = db.execute("PRAGMA quick_check").fetchall()
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in _DAMAGE_CODES:
            return str(exc)
        raise DataDirError(f"cannot check {path}: {exc}") from exc
    problems = [str(row[0]) for row in rows if row[0] != "ok"]
    return "; ".join(problems[:3]) or None


def quarantine_database(path: Path, quarantine: Path, reason: str) -> Path:
    quarantine.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    target = quarantine / f"{path.name}.{stamp}"
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{path}{suffix}")
        if source.exists():
            os.replace(source, Path(f"{target}{suffix}"))
    fsync_dir(quarantine)
    fsync_dir(path.parent)
    log.error(
        "damaged database quarantined: %s (%s); starting with a fresh one -- run `inbound recover`", target, reason
    )
    return target


def check_databases(data: DataDir) -> list[Path]:
    """Quarantine every damaged database in *data*; return where they went."""
    moved = []
    for path in data.databases:
        reason = damage(path)
        if reason is not None:
            moved.append(quarantine_database(path, data.quarantine, reason))
    return moved

"""One way to open and write every SQLite file inbound keeps: the embedded bus, the outbox, the activity store.

Each of them must be durable before the stage that wrote it moves on, and may
be shared by several processes (roles, the CLI, a rebuild). So every
connection gets the same settings:

* WAL, so readers run beside the one writer. Switching a *new* file to WAL
  needs a lock that another process creating the same file at the same moment
  may hold, and SQLite then reports the old mode instead of waiting: the
  switch is tried again for a few seconds.
* ``synchronous=FULL``: a committed transaction has been fsynced -- except on
  a connection that only writes *bookkeeping* (a consumer's offsets, a lease,
  a delivery marked done once its outcome is on the bus):
  ``connect(durable=False)``. WAL keeps such
  a commit atomic and in order, and any later durable commit to the file
  fsyncs it too (the WAL is one file, appended to); only a power cut before
  that can undo it, and then the stage redoes that work, which is idempotent
  by id. A process killed (SIGKILL) loses nothing: the bytes are the kernel's.
  The outputs themselves are always written durably, before the bookkeeping.
* a busy timeout, so a writer waits for another rather than failing. A write
  transaction waits for the write lock in steps of its own, 0.5 ms doubling to
  2 ms, up to the same timeout: SQLite's busy handler sleeps 1, 2, 5, 10, 15 ms
  and more between tries, so a writer that found the lock taken for 3 ms slept
  8, and one that found it taken for 9 ms slept 18. The bus has many writers
  (the edge's publisher, the process stage, each consumer's offsets, the
  attempts' outcomes), and with 300 msg/s those sleeps were most of the slowest
  messages' time from DATA to the webhook (p99 40-67 ms in eight runs, 24-42 in
  six with the short steps, and the same throughput at saturation).
* a checkpoint every ``CHECKPOINT_PAGES`` pages of log instead of SQLite's 1,000:
  the pages every commit changes (index pages, a consumer's offsets, the
  outbox's hot rows) are copied into the file once per checkpoint, however often
  they were written to the log, and a checkpoint has an fsync of its own.

Every ``sqlite3.Error`` leaves here as the caller's :class:`InboundError`
subclass (``BusError``, ``StoreError``), naming the file: the stages treat
those as temporary and try again.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import InboundError

BUSY_TIMEOUT_SECONDS = 30.0
# About 40 MB of log a file (4 KiB pages) before a checkpoint copies it in: the pipeline's CPU a message 1,242-1,297
# -> 1,196-1,212 us and delivered 557-586 -> 586-613 msg/s (bench/throughput.py, four alternating pairs),
# p99 at 300 msg/s unchanged (35 and 36 ms). Four times as many pages gained nothing more.
CHECKPOINT_PAGES = 10_000
_WAL_TRIES = 50
_WAL_PAUSE = 0.1
_LOCK_PAUSE_FIRST = 0.0005
_LOCK_PAUSE_MAX = 0.002


class SQLiteFile:
    """Connections to one file, with its errors raised as *error* prefixed with *name* and the path."""

    def __init__(self, path: Path, name: str, error: type[InboundError]) -> None:
        self.path = path
        self.name = name
        self.error = error

    def fail(self, exc: BaseException) -> InboundError:
        return self.error(f"{self.name} {self.path}: {exc}")

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """Raise any sqlite3 error inside as this file's error."""
        try:
            yield
        except sqlite3.Error as exc:
            raise self.fail(exc) from exc

    def connect(self, durable: bool = True) -> sqlite3.Connection:
        """A connection in autocommit mode (transactions are explicit), usable from any one thread at a time.

        *durable* False: for bookkeeping only (see the module's docstring).
        """
        with self.errors():
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False)
            try:
                self._use_wal(db)
                db.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
                db.execute(f"PRAGMA wal_autocheckpoint = {CHECKPOINT_PAGES}")
            except BaseException:
                db.close()
                raise
        return db

    def _use_wal(self, db: sqlite3.Connection) -> None:
        """Switch the file to WAL, or see that it is, waiting a while for another connection's lock.

        Processes started together (the edge and the pipeline on a new data directory) race to
        switch a new file; while another holds its write lock, SQLite answers "database is
        locked" at once, without the busy timeout (waiting there could deadlock), so it is tried again.
        """
        for _ in range(_WAL_TRIES):
            try:
                if db.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal":
                    return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY:
                    raise
            time.sleep(_WAL_PAUSE)
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
        raise sqlite3.OperationalError(f"cannot use WAL (journal_mode is {mode})")

    @contextlib.contextmanager
    def transaction(self, db: sqlite3.Connection, mode: str = "IMMEDIATE") -> Iterator[sqlite3.Connection]:
        """One transaction on *db* (IMMEDIATE: a write; DEFERRED: a consistent read); rolled back on any error."""
        with self.errors():
            if mode == "IMMEDIATE":
                _begin_write(db)
            else:
                db.execute(f"BEGIN {mode}")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise


def _begin_write(db: sqlite3.Connection) -> None:
    """``BEGIN IMMEDIATE``, waiting for the write lock in short steps (see the module's docstring).

    The busy timeout is off only for this statement: every other one (a read that meets a
    recovery, a statement outside a transaction) still waits in SQLite's busy handler.
    """
    db.execute("PRAGMA busy_timeout = 0")
    try:
        deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
        pause = _LOCK_PAUSE_FIRST
        while True:
            try:
                db.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                # The primary code: SQLITE_BUSY_RECOVERY (another connection recovering the log) waits too.
                if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, _LOCK_PAUSE_MAX)
    finally:
        db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")

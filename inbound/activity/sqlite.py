"""The activity store in one SQLite file (``<data_dir>/activity.db``).

Several processes may open the same file (the record stage of each ``inbound
serve``, the CLI, a rebuild): WAL lets readers run beside the one writer, each
``apply()`` is one ``BEGIN IMMEDIATE`` transaction (so two writers merging the
same delivery serialise instead of overwriting each other's read), and a busy
timeout makes them wait rather than fail. ``synchronous=FULL``: once
``apply()`` returns, the record stage commits its bus offsets, so the rows must
already be on disk.

The tables, the statements and the merge are shared with PostgreSQL
(``_sql.py``); this module adds the file, its transactions and an FTS5 index
for full-text search. Every sqlite3 error is raised as :class:`StoreError`
naming the file, so the record stage retries the batch.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..errors import StoreError
from ..sqlitefile import SQLiteFile
from ._sql import (
    ORDER_COLUMNS,
    STATE_COLUMNS,
    Connection,
    Dialect,
    SQLActivityStore,
    upgrade_logged,
)

# 2: size, attachments, payload as opaque bytes with its type; 3: full-text search; 4: verdicts;
# 5: folded addresses; 6: claims; 7: the full-text index holds _sql.indexed_words(), in order;
# 8: its tokenizer takes those words as they are, marks and all
SCHEMA_VERSION = 8
_V2_COLUMNS = STATE_COLUMNS.removesuffix(", verdicts")  # what a version 2 file has of them

# What version 3 added or changed: version 2's files are migrated by re-creating these (see _upgrade_from_2),
# and _TEXT_INDEX.
_DELIVERIES = (
    """CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY,  -- a stable rowid: the full-text index refers to it
        delivery_id TEXT NOT NULL UNIQUE,
        queue_id TEXT NOT NULL,
        stream TEXT NOT NULL,
        status TEXT NOT NULL,
        generation INTEGER NOT NULL,
        reason TEXT,
        next_attempt_at TEXT,
        status_key TEXT NOT NULL,
        received_at TEXT,
        mail_from TEXT,
        rcpt_to TEXT NOT NULL,
        size INTEGER,
        attachments INTEGER,
        summary_key TEXT,
        subject TEXT,
        subject_key TEXT,
        payload BLOB,
        payload_key TEXT,
        payload_type TEXT,
        updated_at TEXT NOT NULL,
        verdicts TEXT,  -- JSON
        mail_from_folded TEXT,  -- see _sql.fold()
        rcpt_to_folded TEXT  -- JSON
    )""",
    f"CREATE INDEX deliveries_newest ON deliveries ({ORDER_COLUMNS})",
    f"CREATE INDEX deliveries_by_status ON deliveries (status, {ORDER_COLUMNS})",
    f"CREATE INDEX deliveries_by_stream ON deliveries (stream, {ORDER_COLUMNS})",
    "CREATE INDEX deliveries_by_queue_id ON deliveries (queue_id)",
)
# _sql.indexed_words() of each delivery in order, under its id, read as they are: a run of letters, digits
# and marks is one token (unicode61 by default split "दाल" at its vowel sign, and "दिल" found it), and
# nothing is taken off them (Python already took off the accents, and only those).
_TEXT_INDEX = (
    "CREATE VIRTUAL TABLE deliveries_text USING fts5(text,"
    " tokenize = \"unicode61 remove_diacritics 0 categories 'L* N* Co M*'\")"
)
# the generations operator actions reserved (see ActivityStore.claim_generations)
_CLAIMS = """CREATE TABLE claims (
    delivery_id TEXT PRIMARY KEY,
    generation INTEGER NOT NULL,
    held_until TEXT
) WITHOUT ROWID"""
_SCHEMA = (
    *_DELIVERIES,
    _TEXT_INDEX,
    _CLAIMS,
    """CREATE TABLE attempts (
        delivery_id TEXT NOT NULL,
        generation INTEGER NOT NULL,
        number INTEGER NOT NULL,
        at TEXT NOT NULL,
        status_code INTEGER,
        error TEXT,
        latency_ms REAL NOT NULL,
        PRIMARY KEY (delivery_id, generation, number)
    ) WITHOUT ROWID""",
)

_DIALECT = Dialect(
    mark="?",
    text_match="id IN (SELECT rowid FROM deliveries_text WHERE deliveries_text MATCH ?)",
    # each phrase one quoted FTS5 string, its words side by side; the strings ANDed. Words are runs of
    # letters, digits and marks (_sql.search_words()), so no quote can occur in them: no operator
    # syntax from the user's input
    text_query=lambda phrases: " ".join(f'"{" ".join(words)}"' for words in phrases),
    has_recipient="EXISTS (SELECT 1 FROM json_each(rcpt_to_folded) WHERE value = ?)",
)


class SQLiteActivityStore(SQLActivityStore):
    dialect = _DIALECT
    tables = ("attempts", "deliveries", "deliveries_text")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = SQLiteFile(path, "activity store", StoreError)
        self._lock = threading.Lock()  # one connection, shared by the threads of this process
        self._db: sqlite3.Connection | None = None
        self._inode = 0
        self._connect()

    def _connect(self) -> None:
        db = self.file.connect()
        try:
            self._set_up(db)
            self._inode = os.stat(self.path).st_ino
        except BaseException:
            db.close()
            raise
        self._db = db

    def _reconnect_if_replaced(self) -> None:
        """Follow the file if it was deleted or replaced (say, by a rebuild) under a running process.

        Otherwise this process would go on writing into the old, unlinked inode, and every record
        written after the rebuild would be invisible to everyone else.
        """
        try:
            replaced = os.stat(self.path).st_ino != self._inode
        except FileNotFoundError:
            replaced = True
        if replaced and self._db is not None:
            self._db.close()
            self._connect()

    def _set_up(self, db: sqlite3.Connection) -> None:
        # Checked and created under the write lock, so two processes starting together create it once.
        with self.file.transaction(db):
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                for statement in _SCHEMA:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                return
            if version == SCHEMA_VERSION:
                return
            if not 2 <= version < SCHEMA_VERSION:
                raise StoreError(
                    f"activity store {self.path}: schema version {version}, this inbound reads {SCHEMA_VERSION}"
                    " (move the file away and run `inbound activity rebuild`)"
                )
            deliveries = db.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0]
            with upgrade_logged(str(self.path), version, SCHEMA_VERSION, deliveries):
                self._upgrade(db, version)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _upgrade(self, db: sqlite3.Connection, version: int) -> None:
        """Take the file from schema *version* to today's, in the transaction that read the version."""
        if version == 2:
            self._upgrade_from_2(db)
            version = 5
        elif version in (3, 4):
            if version == 3:
                db.execute("ALTER TABLE deliveries ADD COLUMN verdicts TEXT")
            db.execute("ALTER TABLE deliveries ADD COLUMN mail_from_folded TEXT")
            db.execute("ALTER TABLE deliveries ADD COLUMN rcpt_to_folded TEXT")
            self._fold_addresses(db)
            version = 5
        if version == 5:
            db.execute(_CLAIMS)
        # every version before 8 indexed other words or read them otherwise (version 2: had no index)
        db.execute("DROP TABLE IF EXISTS deliveries_text")
        db.execute(_TEXT_INDEX)
        self._index_every_delivery(db)

    def _upgrade_from_2(self, db: sqlite3.Connection) -> None:
        """Version 2 had no stable row id and no full-text index: copy its rows into today's table.

        In the transaction that checks the version, so it happens once and wholly. The store is a
        view of the bus, but the bus may no longer hold old payloads: upgrading keeps them.
        """
        db.execute("ALTER TABLE deliveries RENAME TO deliveries_v2")
        for index in ("deliveries_newest", "deliveries_by_status", "deliveries_by_stream"):
            db.execute(f"DROP INDEX IF EXISTS {index}")  # they moved with the table; their names are needed
        for statement in _DELIVERIES:
            db.execute(statement)
        db.execute(f"INSERT INTO deliveries ({_V2_COLUMNS}, payload) SELECT {_V2_COLUMNS}, payload FROM deliveries_v2")
        db.execute("DROP TABLE deliveries_v2")
        self._fold_addresses(db)  # and the text is indexed by the upgrade to version 8

    @contextlib.contextmanager
    def _transaction(self, write: bool = True) -> Iterator[Connection]:
        """One transaction (IMMEDIATE: write; DEFERRED: a consistent read) on this process's connection."""
        with self._lock, self.file.errors():
            if self._db is None:
                raise sqlite3.ProgrammingError("the store is closed")
            self._reconnect_if_replaced()
            assert self._db is not None
            with self.file.transaction(self._db, "IMMEDIATE" if write else "DEFERRED") as db:
                yield db

    def _lock_delivery(self, db: Connection, delivery_id: str) -> None:
        """Nothing to do: BEGIN IMMEDIATE already made this the only writer of the whole file."""

    def _index_words(self, db: Connection, words: Sequence[tuple[str, list[str]]]) -> None:
        row_id = "(SELECT id FROM deliveries WHERE delivery_id = ?)"
        db.cursor().executemany(f"DELETE FROM deliveries_text WHERE rowid = {row_id}", [(d,) for d, _ in words])
        db.cursor().executemany(
            f"INSERT INTO deliveries_text (rowid, text) VALUES ({row_id}, ?)", [(d, " ".join(w)) for d, w in words]
        )

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

"""The activity store in one SQLite file (``<data_dir>/activity.db``).

Several processes may open the same file (the record stage of each ``inbound
serve``, the CLI, a rebuild): WAL lets readers run beside the one writer, each
``apply()`` is one ``BEGIN IMMEDIATE`` transaction (so two writers merging the
same delivery serialise instead of overwriting each other's read), and a busy
timeout makes them wait rather than fail. ``synchronous=FULL``: once
``apply()`` returns, the record stage commits its bus offsets, so the rows must
already be on disk.

The merge itself is backend-independent (:class:`Merged` in ``_base.py``); this
module only loads and stores it. The precedence keys are stored next to the
fields they decided, as JSON text. Every sqlite3 error is raised as
:class:`StoreError` naming the file, so the record stage retries the batch.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import StoreError
from ..events import Attempt, Event, Status
from ..sqlitefile import SQLiteFile
from ._base import ActivityRecord, Merged, RecordedAttempt, attempt_key, decode_key, encode_key

SCHEMA_VERSION = 2  # 2: size, attachments, payload as opaque bytes with its type

_SCHEMA = (
    """CREATE TABLE deliveries (
        delivery_id TEXT PRIMARY KEY,
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
        updated_at TEXT NOT NULL
    )""",
    "CREATE INDEX deliveries_newest ON deliveries (received_at, delivery_id)",
    "CREATE INDEX deliveries_by_status ON deliveries (status, received_at, delivery_id)",
    "CREATE INDEX deliveries_by_stream ON deliveries (stream, received_at, delivery_id)",
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

# Everything but the payload, which is read only by get() and written only when it changes.
_STATE_COLUMNS = (
    "delivery_id, queue_id, stream, status, generation, reason, next_attempt_at, status_key, "
    "received_at, mail_from, rcpt_to, size, attachments, summary_key, subject, subject_key, payload_key, "
    "payload_type, updated_at"
)
_ORDER = "ORDER BY received_at DESC, delivery_id DESC"


class SQLiteActivityStore:
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
            elif version != SCHEMA_VERSION:
                raise StoreError(
                    f"activity store {self.path}: schema version {version}, this inbound reads {SCHEMA_VERSION}"
                    " (move the file away and run `inbound activity rebuild`)"
                )

    @contextlib.contextmanager
    def _transaction(self, mode: str = "IMMEDIATE") -> Iterator[sqlite3.Connection]:
        """One transaction (IMMEDIATE: write; DEFERRED: a consistent read) on this process's connection."""
        with self._lock, self.file.errors():
            if self._db is None:
                raise sqlite3.ProgrammingError("the store is closed")
            self._reconnect_if_replaced()
            assert self._db is not None
            with self.file.transaction(self._db, mode) as db:
                yield db

    def apply(self, events: Sequence[Event]) -> None:
        if not events:
            return
        by_delivery: dict[str, list[Event]] = {}
        for event in events:
            by_delivery.setdefault(event.delivery_id, []).append(event)
        with self._transaction() as db:
            for delivery_id, batch in by_delivery.items():
                merged = _load(db, delivery_id) or Merged.start(batch[0])
                payload: bytes | None = None
                for event in batch:
                    if merged.add(event):
                        payload = event.payload
                    if event.attempt is not None:
                        _put_attempt(db, delivery_id, event.generation, event.attempt)
                _save(db, merged)
                if payload is not None:
                    db.execute("UPDATE deliveries SET payload = ? WHERE delivery_id = ?", (payload, delivery_id))

    def get(self, delivery_id: str) -> ActivityRecord | None:
        with self._transaction("DEFERRED") as db:
            row = db.execute(
                f"SELECT {_STATE_COLUMNS}, payload FROM deliveries WHERE delivery_id = ?", (delivery_id,)
            ).fetchone()
            if row is None:
                return None
            attempts = _attempts(db, "WHERE delivery_id = ?", (delivery_id,))
        return _record(row[:-1], row[-1], attempts.get(delivery_id, ()))

    def list(
        self, *, status: Status | None = None, stream: str | None = None, limit: int = 100
    ) -> builtins.list[ActivityRecord]:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, not {limit}")
        conditions, params = [], []
        if status is not None:
            conditions.append("status = ?")
            params.append(status.value)
        if stream is not None:
            conditions.append("stream = ?")
            params.append(stream)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        page = f"SELECT delivery_id FROM deliveries {where} {_ORDER} LIMIT ?"
        with self._transaction("DEFERRED") as db:
            query = f"SELECT {_STATE_COLUMNS} FROM deliveries {where} {_ORDER} LIMIT ?"
            rows = db.execute(query, (*params, limit)).fetchall()
            attempts = _attempts(db, f"WHERE delivery_id IN ({page})", (*params, limit))
        return [_record(row, None, attempts.get(row[0], ())) for row in rows]

    def count_by_status(self) -> dict[Status, int]:
        counts = dict.fromkeys(Status, 0)
        with self._transaction("DEFERRED") as db:
            for status, count in db.execute("SELECT status, COUNT(*) FROM deliveries GROUP BY status"):
                counts[Status(status)] = count
        return counts

    def oldest_waiting(self) -> str | None:
        waiting = tuple(s.value for s in Status if not s.is_final)
        marks = ", ".join("?" * len(waiting))
        with self._transaction("DEFERRED") as db:
            row = db.execute(f"SELECT MIN(received_at) FROM deliveries WHERE status IN ({marks})", waiting).fetchone()
        return str(row[0]) if row[0] is not None else None

    def reset(self) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM attempts")
            db.execute("DELETE FROM deliveries")

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def _load(db: sqlite3.Connection, delivery_id: str) -> Merged | None:
    row = db.execute(f"SELECT {_STATE_COLUMNS} FROM deliveries WHERE delivery_id = ?", (delivery_id,)).fetchone()
    if row is None:
        return None
    (did, queue_id, stream, status, generation, reason, next_at, status_key, received_at, mail_from, rcpt_to,
     size, attachments, summary_key, subject, subject_key, payload_key, payload_type, updated_at) = row  # fmt: skip
    return Merged(
        did, queue_id, stream, Status(status), generation, reason, next_at, decode_key(status_key) or (),
        received_at, mail_from, tuple(json.loads(rcpt_to)), size, attachments, decode_key(summary_key),
        subject, decode_key(subject_key), decode_key(payload_key), payload_type, updated_at,
    )  # fmt: skip


def _save(db: sqlite3.Connection, m: Merged) -> None:
    values = (
        m.delivery_id, m.queue_id, m.stream, m.status.value, m.generation, _text(m.reason),
        _text(m.next_attempt_at), encode_key(m.status_key), _text(m.received_at), _text(m.mail_from),
        json.dumps(list(m.to)), m.size, m.attachments, encode_key(m.summary_key), _text(m.subject),
        encode_key(m.subject_key), encode_key(m.payload_key), _text(m.payload_type), _text(m.updated_at),
    )  # fmt: skip
    columns = _STATE_COLUMNS.split(", ")
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns[1:])
    db.execute(
        f"INSERT INTO deliveries ({_STATE_COLUMNS}) VALUES ({', '.join('?' * len(columns))})"
        f" ON CONFLICT (delivery_id) DO UPDATE SET {updates}",
        values,
    )


def _put_attempt(db: sqlite3.Connection, delivery_id: str, generation: int, attempt: Attempt) -> None:
    """Insert the attempt, or replace the stored version of it if this one wins (see attempt_key)."""
    row = db.execute(
        "SELECT number, at, status_code, error, latency_ms FROM attempts"
        " WHERE delivery_id = ? AND generation = ? AND number = ?",
        (delivery_id, generation, attempt.number),
    ).fetchone()
    if row is not None and attempt_key(Attempt(*row)) >= attempt_key(attempt):
        return
    db.execute(
        "INSERT OR REPLACE INTO attempts (delivery_id, generation, number, at, status_code, error, latency_ms)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (delivery_id, generation, attempt.number, _text(attempt.at), attempt.status_code, _text(attempt.error),
         attempt.latency_ms),
    )  # fmt: skip


def _attempts(db: sqlite3.Connection, where: str, params: Sequence[Any]) -> dict[str, tuple[RecordedAttempt, ...]]:
    found: dict[str, builtins.list[RecordedAttempt]] = {}
    for did, generation, number, at, status_code, error, latency_ms in db.execute(
        "SELECT delivery_id, generation, number, at, status_code, error, latency_ms FROM attempts"
        f" {where} ORDER BY delivery_id, generation, number",
        params,
    ):
        found.setdefault(did, []).append(RecordedAttempt(number, at, status_code, error, latency_ms, generation))
    return {did: tuple(attempts) for did, attempts in found.items()}


def _record(row: Sequence[Any], payload: bytes | None, attempts: tuple[RecordedAttempt, ...]) -> ActivityRecord:
    (did, queue_id, stream, status, generation, reason, next_at, _status_key, received_at, mail_from, rcpt_to,
     size, attachments, _summary_key, subject, _subject_key, _payload_key, payload_type, updated_at) = row  # fmt: skip
    return ActivityRecord(
        did, queue_id, stream, Status(status), generation, received_at, mail_from, tuple(json.loads(rcpt_to)),
        subject, size, attachments, reason, next_at, updated_at, payload, payload_type, attempts,
    )  # fmt: skip


def _text(value: str | None) -> str | None:
    """*value* as SQLite can store it: lone surrogates (undecodable header bytes) become '?'.

    Without this one odd subject would fail every apply() of its batch, forever. The
    precedence keys keep the exact text (escaped JSON), so merging is unaffected.
    """
    if value is None:
        return None
    try:
        value.encode()
    except UnicodeEncodeError:
        return value.encode("utf-8", "replace").decode()
    return value

"""The activity store over SQL: everything the SQLite and PostgreSQL backends share.

Both keep the same three tables (``deliveries``: one row per delivery holding a
:class:`Merged` state and its payload; ``attempts``: one row per webhook POST;
``claims``: the last generation an operator action reserved per delivery) and
read and write them with the same statements; a backend supplies only its
connection and transactions, how it makes two writers of one delivery wait
for each other, and its full-text index. :class:`Dialect` names the few SQL
fragments that differ.

``apply()`` loads each delivery's state, merges the events in (:class:`Merged`
decides every field, independent of order) and writes the row back, all in
one write transaction; the backend guarantees that no other writer changes a
delivery between that load and that save, or a merge would be lost.
"""

from __future__ import annotations

import abc
import builtins
import functools
import itertools
import json
import logging
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from .. import jsoncodec
from ..events import Attempt, Event, Status
from ._base import (
    ActivityRecord,
    Claimed,
    Merged,
    Position,
    RecordedAttempt,
    attempt_key,
    decode_key,
    encode_key,
    payload_made,
)

log = logging.getLogger("inbound.activity")

#: The newest-first order every backend lists in; records without a summary (no received_at) come last.
ORDER_COLUMNS = "COALESCE(received_at, ''), delivery_id"
ORDER = "ORDER BY COALESCE(received_at, '') DESC, delivery_id DESC"

# Everything but the payload, which is read only by get() and written only when it changes.
STATE_COLUMNS = (
    "delivery_id, queue_id, stream, status, generation, reason, next_attempt_at, status_key, "
    "received_at, mail_from, rcpt_to, size, attachments, summary_key, subject, subject_key, payload_key, "
    "payload_type, updated_at, verdicts"
)
_ATTEMPT_COLUMNS = "delivery_id, generation, number, at, status_code, error, latency_ms"
# Written with the state, never read back: what the sender and recipient filters compare (see fold()).
_FOLDED_COLUMNS = "mail_from_folded, rcpt_to_folded"
# Deliveries a schema upgrade reads at a time.
UPGRADE_PAGE = 10_000


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> builtins.list[Any]: ...
    def executemany(self, sql: str, params: Iterable[Sequence[Any]], /) -> object: ...


class Connection(Protocol):
    """What both sqlite3 and psycopg connections offer, and all this module uses."""

    def execute(self, sql: str, params: Sequence[Any], /) -> Cursor: ...
    def cursor(self) -> Cursor: ...


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one backend's SQL spells the parts of a query that differ between databases."""

    mark: str  # the parameter placeholder
    text_match: str  # true when the record has every phrase of the full-text query in the one parameter
    text_query: Callable[[builtins.list[builtins.list[str]]], str]  # the query's search_phrases() as that parameter
    has_recipient: str  # true when the one parameter (folded) is among the folded recipients


@dataclass(frozen=True, slots=True)
class Criteria:
    """What ``list()`` selects; None means any. In one place so that backends agree.

    Addresses compare case-insensitively (see :func:`fold`); *since*/*until* bound ``received_at`` (as
    :func:`inbound.clock.rfc3339` writes it: text order is time order), so records not yet
    summarised match neither.
    """

    status: Status | None = None
    stream: str | None = None
    queue_id: str | None = None
    text: str | None = None
    sender: str | None = None
    recipient: str | None = None
    since: str | None = None
    until: str | None = None
    after: Position | None = None

    def where(self, dialect: Dialect) -> tuple[str, builtins.list[Any]]:
        """The SQL condition (``WHERE ...`` or empty) and its parameters."""
        m = dialect.mark
        phrases = search_phrases(self.text) if self.text else []
        if self.text and self.text.strip() and not phrases:
            return "WHERE 1 = 0", []  # only punctuation: no word to find, so no record has them all
        tests: builtins.list[tuple[str, builtins.list[Any]]] = [
            (f"status = {m}", [self.status.value if self.status else None]),
            (f"stream = {m}", [self.stream]),
            (f"queue_id = {m}", [self.queue_id]),
            (dialect.text_match, [dialect.text_query(phrases) if phrases else None]),
            (f"mail_from_folded = {m}", [fold(self.sender) if self.sender else None]),
            (dialect.has_recipient, [fold(self.recipient) if self.recipient else None]),
            (f"received_at >= {m}", [self.since]),
            (f"received_at < {m}", [self.until]),
            (f"({ORDER_COLUMNS}) < ({m}, {m})", list(self.after) if self.after else [None]),
        ]
        given = [(sql, params) for sql, params in tests if params[0] is not None]
        if not given:
            return "", []
        # storable(): a NUL or a lone surrogate in a query must find nothing, not fail the query
        values = [storable(p) if isinstance(p, str) else p for _, params in given for p in params]
        return "WHERE " + " AND ".join(sql for sql, _ in given), values


def fold(address: str) -> str:
    """*address* as the sender and recipient filters compare it: case-folded by Python, for both backends.

    Not by the database's lower(): SQLite's folds ASCII only and PostgreSQL's follows the database's
    locale (ASCII only under "C"), so "Élodie@exemple.fr" was found on one backend and not the other.
    """
    return address.casefold()


def folded_addresses(mail_from: str | None, to: Sequence[str]) -> tuple[str | None, str]:
    """What a delivery stores in the folded columns: its sender, and its recipients as a JSON array."""
    sender = storable(fold(mail_from)) if mail_from is not None else None
    return sender, jsoncodec.dumps([storable(fold(a)) for a in to]).decode()


#: The longest word indexed, in UTF-8 bytes: PostgreSQL's limit for one word of a query (a lexeme of
#: a tsvector may have one byte more, and a query of such a word was refused: a 503). Longer runs of
#: letters are no word a person searches for; both backends leave them out.
MAX_WORD_BYTES = 2046
# The combining marks that are accents: those NFKD splits off Latin, Greek and Cyrillic letters
# (U+0300-036F, with its extension, supplement, marks for symbols and half marks). A script's own
# marks are part of its letters (a Devanagari vowel sign: "दिल" is not "दल"; the kana voicing mark:
# "ド" is not "ト") and stay in the word.
_ACCENTS = dict.fromkeys(
    [
        *range(0x0300, 0x0370),
        *range(0x1AB0, 0x1B00),
        *range(0x1DC0, 0x1E00),
        *range(0x20D0, 0x2100),
        *range(0xFE20, 0xFE30),
    ]
)


def search_words(text: str) -> builtins.list[str]:
    """The words full-text search compares, of a message and of a query alike: each run of letters
    and digits, case-folded, without diacritics, in order.

    Made here for both backends, as SQLite's FTS5 ``unicode61`` tokenizer makes them: PostgreSQL's
    parser kept "INV-2024-0042" and "scan_0042.pdf" whole (no "0042", no "pdf"), kept accents
    ("Resume" missed "Résumé"), and folded case by the database's locale (ASCII only under "C").
    """
    folded = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", text).casefold())
    runs = itertools.groupby(folded.translate(_ACCENTS), _in_a_word)
    words = ("".join(run) for in_word, run in runs if in_word)
    return [word for word in words if len(word.encode()) <= MAX_WORD_BYTES]


def search_phrases(query: str) -> builtins.list[builtins.list[str]]:
    """What a full-text query asks for: each whitespace-separated piece of it as a phrase, its
    :func:`search_words` side by side in that order, and every phrase in the record.

    Not its words anywhere: "alice@example.com" found alice@other.test writing to
    sales@example.com, and "INV-2024-0042" found "INV-0042-2024". A piece without a word ("-") asks
    for nothing.
    """
    return [words for piece in query.split() if (words := search_words(piece))]


def _in_a_word(character: str) -> bool:
    """A letter or digit, or a mark of one (what is left of marks once the accents are gone)."""
    return character.isalnum() or unicodedata.category(character).startswith("M")


def searched_fields(merged: Merged) -> tuple[str | None, str | None, tuple[str, ...]]:
    """What :func:`indexed_words` are made of: to tell whether they changed without making them twice."""
    return merged.subject, merged.mail_from, merged.to


#: How much of :func:`indexed_words` is indexed, in UTF-8 bytes with a space each. 100 recipients of
#: 8,000 bytes each made PostgreSQL refuse the tsvector (its limit is 1 MiB), and the record stage
#: retried that batch for ever; both backends index the same words, so they find the same records.
SEARCH_TEXT_BYTES = 64 * 1024


def indexed_words(subject: str | None, mail_from: str | None, to: Sequence[str]) -> builtins.list[str]:
    """What full-text search finds a delivery by: the :func:`search_words` of its subject, sender and
    recipients, at most :data:`SEARCH_TEXT_BYTES` of them, the subject's first, so that it is always found.

    In order, repeats included: a phrase of :func:`search_phrases` is found where its words stand side
    by side ("12-12" needs "12" twice).
    """
    text = " ".join([subject or "", *(address for address in (mail_from, *to) if address)])
    if len(text) > SEARCH_TEXT_BYTES:  # the head only: a megabyte of recipients costs what is kept of it
        head = text[:SEARCH_TEXT_BYTES]
        # at a space, if there is one: the head of a word cut in two is not a word of the message
        text = head if text[SEARCH_TEXT_BYTES].isspace() else head.rpartition(" ")[0] or head
    kept, size = [], 0
    for word in search_words(text):
        size += len(word.encode()) + 1
        if size > SEARCH_TEXT_BYTES:
            break
        kept.append(word)
    return kept


@contextmanager
def upgrade_logged(where: str, version: int, to: int, deliveries: int) -> Iterator[None]:
    """Log a schema upgrade before and after it: one that rewrites every delivery took 35 s for a
    million on SQLite, in one transaction, and every other process opening the store waits meanwhile."""
    log.info(
        "activity store %s: upgrading from schema version %d to %d (%d deliveries); other processes opening it wait",
        where, version, to, deliveries,
    )  # fmt: skip
    started = time.monotonic()
    yield
    log.info(
        "activity store %s: upgraded from schema version %d to %d in %.1fs",
        where,
        version,
        to,
        time.monotonic() - started,
    )


class SQLActivityStore(abc.ABC):
    """:class:`~inbound.activity.ActivityStore` over the shared tables; subclasses supply the database."""

    dialect: ClassVar[Dialect]
    tables: ClassVar[tuple[str, ...]]  # every table reset() empties

    @abc.abstractmethod
    def _transaction(self, write: bool = True) -> AbstractContextManager[Connection]:
        """One transaction (a write, or a consistent read), rolled back on any error, errors as StoreError."""

    @abc.abstractmethod
    def _lock_delivery(self, db: Connection, delivery_id: str) -> None:
        """Make any other writer of *delivery_id* wait until this transaction ends (called before loading it)."""

    @abc.abstractmethod
    def _index_words(self, db: Connection, words: Sequence[tuple[str, builtins.list[str]]]) -> None:
        """Put each saved delivery's :func:`indexed_words` (delivery id, words) into the full-text index."""

    def apply(self, events: Sequence[Event]) -> None:
        if not events:
            return
        by_delivery: dict[str, builtins.list[Event]] = {}
        for event in events:
            by_delivery.setdefault(event.delivery_id, []).append(event)
        with self._transaction() as db:
            to_index = []
            for delivery_id in sorted(by_delivery):  # one lock order for every writer: no deadlock
                batch = by_delivery[delivery_id]
                self._lock_delivery(db, delivery_id)
                loaded = self._load(db, delivery_id)
                searched_before = searched_fields(loaded) if loaded else None
                merged = loaded or Merged.start(batch[0])
                payload: bytes | None = None
                for event in batch:
                    if merged.add(event):
                        payload = event.payload
                    if event.attempt is not None:
                        self._put_attempt(db, delivery_id, event.generation, event.attempt)
                self._save(db, merged, payload)
                if searched_fields(merged) != searched_before:
                    to_index.append((delivery_id, indexed_words(*searched_fields(merged))))
            if to_index:
                self._index_words(db, to_index)

    def get(self, delivery_id: str) -> ActivityRecord | None:
        m = self.dialect.mark
        with self._transaction(write=False) as db:
            row = db.execute(
                f"SELECT {STATE_COLUMNS}, payload FROM deliveries WHERE delivery_id = {m}", (delivery_id,)
            ).fetchone()
            if row is None:
                return None
            attempts = self._attempts(db, f"WHERE delivery_id = {m}", (delivery_id,))
        return _record(row[:-1], bytes(row[-1]) if row[-1] is not None else None, attempts.get(delivery_id, ()))

    def list(
        self,
        *,
        status: Status | None = None,
        stream: str | None = None,
        queue_id: str | None = None,
        text: str | None = None,
        sender: str | None = None,
        recipient: str | None = None,
        since: str | None = None,
        until: str | None = None,
        after: Position | None = None,
        limit: int = 100,
    ) -> builtins.list[ActivityRecord]:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, not {limit}")
        criteria = Criteria(status, stream, queue_id, text, sender, recipient, since, until, after)
        where, params = criteria.where(self.dialect)
        m = self.dialect.mark
        page = f"SELECT delivery_id FROM deliveries {where} {ORDER} LIMIT {m}"
        with self._transaction(write=False) as db:
            rows = db.execute(f"SELECT {STATE_COLUMNS} FROM deliveries {where} {ORDER} LIMIT {m}", (*params, limit))
            records = rows.fetchall()
            attempts = self._attempts(db, f"WHERE delivery_id IN ({page})", (*params, limit))
        return [_record(row, None, attempts.get(row[0], ())) for row in records]

    def count_by_status(self) -> dict[Status, int]:
        counts = dict.fromkeys(Status, 0)
        with self._transaction(write=False) as db:
            for status, count in db.execute("SELECT status, COUNT(*) FROM deliveries GROUP BY status", ()).fetchall():
                counts[Status(status)] = count
        return counts

    def count_by_day(self, *, since: str, stream: str | None = None) -> dict[tuple[str, Status], int]:
        where, params = Criteria(stream=stream, since=since).where(self.dialect)
        day = "substr(received_at, 1, 10)"
        with self._transaction(write=False) as db:
            rows = db.execute(f"SELECT {day}, status, COUNT(*) FROM deliveries {where} GROUP BY {day}, status", params)
            return {(day, Status(status)): count for day, status, count in rows.fetchall()}

    def oldest_waiting(self) -> str | None:
        waiting = tuple(s.value for s in Status if not s.is_final)
        marks = ", ".join([self.dialect.mark] * len(waiting))
        with self._transaction(write=False) as db:
            row = db.execute(f"SELECT MIN(received_at) FROM deliveries WHERE status IN ({marks})", waiting).fetchone()
        return str(row[0]) if row[0] is not None else None

    def claim_generations(self, seen: Mapping[str, int], *, now: str, hold_until: str) -> Claimed:
        m = self.dialect.mark
        generations: dict[str, int] = {}
        refused: dict[str, str] = {}
        with self._transaction() as db:
            for delivery_id in sorted(seen):
                row = db.execute(
                    "SELECT d.generation, c.generation, c.held_until FROM deliveries d"
                    f" LEFT JOIN claims c ON c.delivery_id = d.delivery_id WHERE d.delivery_id = {m}",
                    (delivery_id,),
                ).fetchone()
                if row is None or row[0] != seen[delivery_id]:
                    refused[delivery_id] = "it changed while the action was being taken; look at it again"
                    continue
                recorded, last, held_until = row
                if last is not None and last > recorded and held_until is not None and held_until > now:
                    refused[delivery_id] = (
                        f"an action already asked for its generation {last}, not in the activity log yet;"
                        " try again once it is"
                    )
                    continue
                generation = max(recorded, last or 0) + 1
                # Compare-and-set on the claim read: of two writers that read the same one, one changes nothing.
                if last is None:
                    sql = f"INSERT INTO claims VALUES ({m}, {m}, {m}) ON CONFLICT (delivery_id) DO NOTHING"
                    params: tuple[Any, ...] = (delivery_id, generation, hold_until)
                else:
                    sql = (
                        f"UPDATE claims SET generation = {m}, held_until = {m}"
                        f" WHERE delivery_id = {m} AND generation = {m}"
                    )
                    params = (generation, hold_until, delivery_id, last)
                if db.execute(sql, params).rowcount == 1:
                    generations[delivery_id] = generation
                else:
                    refused[delivery_id] = "another action on it was taken at the same moment"
        return Claimed(generations, refused)

    def release_claims(self, claimed: Mapping[str, int]) -> None:
        m = self.dialect.mark
        with self._transaction() as db:
            db.cursor().executemany(
                f"UPDATE claims SET held_until = NULL WHERE delivery_id = {m} AND generation = {m}",
                sorted(claimed.items()),
            )

    def reset(self) -> None:
        with self._transaction() as db:
            for table in self.tables:
                db.execute(f"DELETE FROM {table}", ())

    def _load(self, db: Connection, delivery_id: str) -> Merged | None:
        m = self.dialect.mark
        row = db.execute(f"SELECT {STATE_COLUMNS} FROM deliveries WHERE delivery_id = {m}", (delivery_id,)).fetchone()
        if row is None:
            return None
        (did, queue_id, stream, status, generation, reason, next_at, status_key, received_at, mail_from, rcpt_to,
         size, attachments, summary_key, subject, subject_key, payload_key, payload_type, updated_at,
         verdicts) = row  # fmt: skip
        return Merged(
            did, queue_id, stream, Status(status), generation, reason, next_at, decode_key(status_key) or (),
            received_at, mail_from, tuple(jsoncodec.loads(rcpt_to)), size, attachments, _verdicts(verdicts),
            decode_key(summary_key), subject, decode_key(subject_key), decode_key(payload_key), payload_type,
            updated_at,
        )  # fmt: skip

    def _save(self, db: Connection, m: Merged, payload: bytes | None) -> None:
        """Write *m*'s state, and *payload* with it when it changed (None: the stored one stays)."""
        values = (
            m.delivery_id, m.queue_id, m.stream, m.status.value, m.generation, storable(m.reason),
            storable(m.next_attempt_at), encode_key(m.status_key), storable(m.received_at), storable(m.mail_from),
            jsoncodec.dumps(list(m.to)).decode(), m.size, m.attachments, encode_key(m.summary_key), storable(m.subject),
            encode_key(m.subject_key), encode_key(m.payload_key), storable(m.payload_type), storable(m.updated_at),
            _stored_verdicts(m.verdicts), *folded_addresses(m.mail_from, m.to),
        )  # fmt: skip
        columns = f"{STATE_COLUMNS}, {_FOLDED_COLUMNS}"
        if payload is None:
            db.execute(_upsert(self.dialect.mark, columns), values)
        else:
            db.execute(_upsert(self.dialect.mark, f"{columns}, payload"), (*values, payload))

    def _fold_addresses(self, db: Connection) -> None:
        """Fill in every delivery's folded addresses: for the schema upgrade that adds their columns.

        A page at a time, in key order: a store of millions of deliveries is upgraded in the memory
        of one page, not of all their addresses at once.
        """
        m = self.dialect.mark
        for rows in self._pages(db, "mail_from, rcpt_to"):
            db.cursor().executemany(
                f"UPDATE deliveries SET mail_from_folded = {m}, rcpt_to_folded = {m} WHERE delivery_id = {m}",
                [(*folded_addresses(mail_from, jsoncodec.loads(to)), did) for did, mail_from, to in rows],
            )

    def _index_every_delivery(self, db: Connection) -> None:
        """Index every delivery's words again: for the schema upgrade that changes what is indexed.

        A page at a time, in key order, as :meth:`_fold_addresses`.
        """
        for rows in self._pages(db, "subject, mail_from, rcpt_to"):
            words = [(did, indexed_words(subject, sender, jsoncodec.loads(to))) for did, subject, sender, to in rows]
            self._index_words(db, words)

    def _pages(self, db: Connection, columns: str) -> Iterator[builtins.list[Any]]:
        """Every delivery's id and *columns*, a page at a time in key order, for a schema upgrade to rewrite."""
        m = self.dialect.mark
        last = ""
        while rows := db.execute(
            f"SELECT delivery_id, {columns} FROM deliveries WHERE delivery_id > {m} ORDER BY delivery_id LIMIT {m}",
            (last, UPGRADE_PAGE),
        ).fetchall():
            yield rows
            last = rows[-1][0]

    def _put_attempt(self, db: Connection, delivery_id: str, generation: int, attempt: Attempt) -> None:
        """Insert the attempt, or replace the stored version of it if this one wins (see attempt_key)."""
        m = self.dialect.mark
        row = db.execute(
            "SELECT number, at, status_code, error, latency_ms FROM attempts"
            f" WHERE delivery_id = {m} AND generation = {m} AND number = {m}",
            (delivery_id, generation, attempt.number),
        ).fetchone()
        if row is not None and attempt_key(Attempt(*row)) >= attempt_key(attempt):
            return
        db.execute(
            f"INSERT INTO attempts ({_ATTEMPT_COLUMNS}) VALUES ({', '.join([m] * 7)})"
            " ON CONFLICT (delivery_id, generation, number) DO UPDATE SET at = excluded.at,"
            " status_code = excluded.status_code, error = excluded.error, latency_ms = excluded.latency_ms",
            (delivery_id, generation, attempt.number, storable(attempt.at), attempt.status_code,
             storable(attempt.error), attempt.latency_ms),
        )  # fmt: skip

    def _attempts(self, db: Connection, where: str, params: Sequence[Any]) -> dict[str, tuple[RecordedAttempt, ...]]:
        found: dict[str, builtins.list[RecordedAttempt]] = {}
        rows = db.execute(
            f"SELECT {_ATTEMPT_COLUMNS} FROM attempts {where} ORDER BY delivery_id, generation, number", params
        )
        for did, generation, number, at, status_code, error, latency_ms in rows.fetchall():
            found.setdefault(did, []).append(RecordedAttempt(number, at, status_code, error, latency_ms, generation))
        return {did: tuple(attempts) for did, attempts in found.items()}


@functools.cache
def _upsert(mark: str, columns: str) -> str:
    """The statement that inserts a delivery's *columns*, or updates them all but the key (made once).

    One statement writes the payload along with the state: a second would write the row twice.
    """
    names = columns.split(", ")
    updates = ", ".join(f"{c} = excluded.{c}" for c in names[1:])
    marks = ", ".join([mark] * len(names))
    return f"INSERT INTO deliveries ({columns}) VALUES ({marks}) ON CONFLICT (delivery_id) DO UPDATE SET {updates}"


def _record(row: Sequence[Any], payload: bytes | None, attempts: tuple[RecordedAttempt, ...]) -> ActivityRecord:
    (did, queue_id, stream, status, generation, reason, next_at, _status_key, received_at, mail_from, rcpt_to,
     size, attachments, summary_key, subject, _subject_key, _payload_key, payload_type, updated_at,
     verdicts) = row  # fmt: skip
    return ActivityRecord(
        did, queue_id, stream, Status(status), generation, received_at, mail_from, tuple(jsoncodec.loads(rcpt_to)),
        subject, size, attachments, _verdicts(verdicts), reason, next_at, updated_at, payload, payload_type, attempts,
        payload_made(decode_key(summary_key)),
    )  # fmt: skip


def _stored_verdicts(verdicts: dict[str, Any] | None) -> str | None:
    # ASCII JSON: a header value we quoted in a verdict may hold anything, and both databases store this.
    return json.dumps(verdicts, sort_keys=True) if verdicts is not None else None


def _verdicts(stored: str | None) -> dict[str, Any] | None:
    verdicts: dict[str, Any] | None = json.loads(stored) if stored is not None else None
    return verdicts


def storable(value: str | None) -> str | None:
    """*value* as both databases can store it: lone surrogates (undecodable header bytes) become
    '?', and NUL, which PostgreSQL text cannot hold, U+FFFD.

    Without this one odd subject would fail every apply() of its batch, forever. The
    precedence keys keep the exact text (escaped JSON), so merging is unaffected.
    """
    if value is None:
        return None
    try:
        value.encode()
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode()
    return value.replace("\x00", "\ufffd")

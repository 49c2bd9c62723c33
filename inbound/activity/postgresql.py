"""The activity store in a PostgreSQL database (``[activity] backend = "postgresql"``, ``dsn = "..."``).

For several hosts: the record stage of every ``inbound serve``, the CLI and the
API on any host read and write one database. The tables and statements are
the ones SQLite uses (``_sql.py``); this module adds the connection, the
transactions and PostgreSQL's own full-text search (a ``tsvector`` column with
a GIN index, the ``simple`` configuration: no stemming, as in SQLite's FTS5).

Writers on different hosts must not contradict each other: a merge loads a
delivery's state, adds events and saves it, so two writers merging the same
delivery at once would lose one merge. Each ``apply()`` is one transaction
that first takes a transaction-scoped advisory lock per delivery (in sorted
order, so two batches never deadlock); the lock also covers a delivery that no
row exists for yet, which ``SELECT ... FOR UPDATE`` cannot. A transaction that
fails with a serialisation failure or a deadlock anyway is run again.

Reads run in ``REPEATABLE READ, READ ONLY`` transactions, so a page and its
attempts come from one snapshot. A broken connection (the server restarted) is
replaced on the next call. Every psycopg error leaves as :class:`StoreError`
naming the server and database (never the password): the record stage does
not commit its offsets and tries again.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence

import psycopg
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ..errors import StoreError
from ..events import Event
from ._sql import ORDER_COLUMNS, Connection, Dialect, SQLActivityStore, upgrade_logged

# 2: verdicts; 3: inbound_search_vector(); 4: folded addresses; 5: claims; 6: indexed_words() at their positions;
# 7: every delivery indexed again (the words and the function changed within 6: marks kept, positions)
SCHEMA_VERSION = 7
CONNECT_TIMEOUT_SECONDS = 10
APPLY_TRIES = 5
# Any fixed number: the advisory lock under which the first process to start creates the tables.
_SCHEMA_LOCK = 0x1B0A7D

# The words are the lexemes as they are (no parser, no locale), each at its position in the delivery
# (1, 2, ...) so that a phrase query finds them side by side: written as a tsvector literal, each word
# quoted, with nothing to escape (words are runs of letters, digits and marks: no quote, no backslash).
# PostgreSQL keeps a lexeme's first 256 positions, and none past 16383 (it writes 16383 for them): a
# phrase beyond those is not found, a word alone still is. A tsvector holds at most 1 MiB of lexemes and
# positions, which its input checks with an error: each word counts its bytes and 5 more (its position,
# and the count and alignment a new lexeme adds), and past that the delivery is recorded unsearchable.
# indexed_words() are bounded far below it, but failing the batch would stop the record stage for good.
# Made again by every connect (see _connect()): the function is always the one this code indexes with.
_SEARCH_VECTOR = """CREATE OR REPLACE FUNCTION inbound_search_vector(words text[]) RETURNS tsvector
    LANGUAGE plpgsql IMMUTABLE STRICT AS $$
    DECLARE
        size bigint := octet_length(array_to_string(words, '')) + 5 * cardinality(words);
    BEGIN
        IF size > 1048575 THEN
            RAISE WARNING 'inbound: a delivery is left out of the full-text index: % bytes of words', size;
            RETURN NULL;
        END IF;
        RETURN (SELECT string_agg('''' || word || ''':' || position, ' ')
                FROM unnest(words) WITH ORDINALITY AS w (word, position))::tsvector;
    END $$"""

# the generations operator actions reserved (see ActivityStore.claim_generations)
_CLAIMS = """CREATE TABLE claims (
    delivery_id text COLLATE "C" PRIMARY KEY,
    generation integer NOT NULL,
    held_until text COLLATE "C"
)"""

_SCHEMA = (
    "CREATE TABLE inbound_activity_schema (version integer NOT NULL)",
    # COLLATE "C": order by code point, as SQLite does, whatever the database's locale
    """CREATE TABLE deliveries (
        delivery_id text COLLATE "C" PRIMARY KEY,
        queue_id text COLLATE "C" NOT NULL,
        stream text COLLATE "C" NOT NULL,
        status text NOT NULL,
        generation integer NOT NULL,
        reason text,
        next_attempt_at text,
        status_key text NOT NULL,
        received_at text COLLATE "C",
        mail_from text,
        rcpt_to text NOT NULL,
        size bigint,
        attachments integer,
        summary_key text,
        subject text,
        subject_key text,
        payload bytea,
        payload_key text,
        payload_type text,
        updated_at text NOT NULL,
        search tsvector,
        verdicts text,
        mail_from_folded text,
        rcpt_to_folded text
    )""",
    f"CREATE INDEX deliveries_newest ON deliveries ({ORDER_COLUMNS})",
    f"CREATE INDEX deliveries_by_status ON deliveries (status, {ORDER_COLUMNS})",
    f"CREATE INDEX deliveries_by_stream ON deliveries (stream, {ORDER_COLUMNS})",
    "CREATE INDEX deliveries_by_queue_id ON deliveries (queue_id)",
    "CREATE INDEX deliveries_search ON deliveries USING gin (search)",
    _CLAIMS,
    """CREATE TABLE attempts (
        delivery_id text COLLATE "C" NOT NULL,
        generation integer NOT NULL,
        number integer NOT NULL,
        at text NOT NULL,
        status_code integer,
        error text,
        latency_ms double precision NOT NULL,
        PRIMARY KEY (delivery_id, generation, number)
    )""",
)

_DIALECT = Dialect(
    mark="%s",
    text_match="search @@ %s::tsquery",
    # each phrase its words quoted, as lexemes, side by side (<->, which binds tighter than &); the phrases
    # ANDed. Words are runs of letters, digits and marks (_sql.search_words()), so no quote or backslash
    # can occur in them: no operator syntax from the user's input
    text_query=lambda phrases: " & ".join(" <-> ".join(f"'{word}'" for word in words) for words in phrases),
    has_recipient="EXISTS (SELECT 1 FROM jsonb_array_elements_text(rcpt_to_folded::jsonb) AS r (a) WHERE r.a = %s)",
)


def describe(dsn: str) -> str:
    """The DSN for messages: where, never the password."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.Error:
        return "(an invalid dsn)"
    shown = ("host", "hostaddr", "port", "dbname", "user")
    return " ".join(f"{key}={parts[key]}" for key in shown if parts.get(key) is not None) or "(default server)"


class PostgresActivityStore(SQLActivityStore):
    dialect = _DIALECT
    tables = ("attempts", "deliveries")

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.where = describe(dsn)
        self._lock = threading.Lock()  # one connection, shared by the threads of this process
        self._db: psycopg.Connection[tuple[object, ...]] | None = None
        self._closed = False
        with self._lock, self._errors():
            self._connect()

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except psycopg.Error as exc:
            raise StoreError(f"activity store {self.where}: {exc}".strip()) from exc

    def _connect(self) -> psycopg.Connection[tuple[object, ...]]:
        # connect_timeout: a server that does not answer is an error the caller retries, not a hang
        params = {"connect_timeout": CONNECT_TIMEOUT_SECONDS, **conninfo_to_dict(self.dsn)}
        db = psycopg.connect(make_conninfo("", **params), autocommit=True)
        try:
            with db.transaction():
                db.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                if db.execute("SELECT to_regclass('inbound_activity_schema')").fetchone() == (None,):
                    for statement in _SCHEMA:
                        db.execute(statement)
                    db.execute("INSERT INTO inbound_activity_schema (version) VALUES (%s)", (SCHEMA_VERSION,))
                (version,) = db.execute("SELECT version FROM inbound_activity_schema").fetchone() or (None,)
                if version not in range(1, SCHEMA_VERSION + 1):  # before anything changes
                    raise StoreError(
                        f"activity store {self.where}: schema version {version}, this inbound reads {SCHEMA_VERSION}"
                    )
                # On every connect, not only in an upgrade: when the function changed (positions) and the
                # version did not, databases kept the old one, and it indexed every new delivery the old way.
                db.execute(_SEARCH_VECTOR)
                if version < SCHEMA_VERSION:
                    (deliveries,) = db.execute("SELECT COUNT(*) FROM deliveries").fetchone() or (0,)
                    with upgrade_logged(self.where, version, SCHEMA_VERSION, deliveries):
                        while version < SCHEMA_VERSION:
                            self._upgrade(db, version)
                            version += 1
                            db.execute("UPDATE inbound_activity_schema SET version = %s", (version,))
        except BaseException:
            db.close()
            raise
        self._db = db
        return db

    def _upgrade(self, db: psycopg.Connection[tuple[object, ...]], version: int) -> None:
        """Take the database from schema *version* to the next (2 to 3 made inbound_search_vector(),
        which _connect() now makes every time, before this)."""
        if version == 1:
            db.execute("ALTER TABLE deliveries ADD COLUMN verdicts text")
        elif version == 3:
            db.execute("ALTER TABLE deliveries ADD COLUMN mail_from_folded text, ADD COLUMN rcpt_to_folded text")
            self._fold_addresses(db)
        elif version == 4:
            db.execute(_CLAIMS)
        elif version == 5:
            db.execute("DROP FUNCTION IF EXISTS inbound_search_vector(text)")  # indexed at 6 to 7, once
        elif version == 6:
            self._index_every_delivery(db)

    @contextlib.contextmanager
    def _transaction(self, write: bool = True) -> Iterator[Connection]:
        with self._lock, self._errors():
            if self._closed:
                raise StoreError(f"activity store {self.where}: the store is closed")
            db = self._db if self._db is not None and not self._db.closed else self._connect()
            with db.transaction():
                if not write:
                    db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                yield db

    def apply(self, events: Sequence[Event]) -> None:
        for tries_left in reversed(range(APPLY_TRIES)):
            try:
                super().apply(events)
                return
            except StoreError as exc:
                retryable = isinstance(exc.__cause__, errors.SerializationFailure | errors.DeadlockDetected)
                if not retryable or tries_left == 0:
                    raise

    def _lock_delivery(self, db: Connection, delivery_id: str) -> None:
        db.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (delivery_id,))

    def _index_words(self, db: Connection, words: Sequence[tuple[str, list[str]]]) -> None:
        db.cursor().executemany(
            "UPDATE deliveries SET search = inbound_search_vector(%s::text[]) WHERE delivery_id = %s",
            [(w, d) for d, w in words],
        )

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._db is not None:
                self._db.close()
                self._db = None

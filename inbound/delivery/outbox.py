"""The deliverer's due-time table: deliveries waiting for their next attempt.

A delivery waiting for a retry must never sit in front of other work, so the
deliverer does not hold it in the consumer: it copies each ``messages`` record
here (durably, then commits the offset) and attempts deliveries from this
table by due time, in arrival order within a stream.

Several deliverer processes sharing a data directory share this table: a
delivery is *leased* to one of them for the length of an attempt, and a lease
left by a process killed mid-attempt lapses so another takes it over.
Delivery ids are the primary key: a record consumed twice is kept once. Done
deliveries keep their row (without payload) for a while so that a late
duplicate is still recognised.

A lease runs on the monotonic clock, which every process of the host shares:
on the wall clock, a step forward past a lease (NTP, a VM resumed) let a second
deliverer POST a delivery whose POST was under way in the first. The monotonic
clock starts again at each boot, so the outbox keeps the boot its leases were
taken in (``lease_boot``); opened in another, it lapses them all: their holders
died with the boot.

Payloads live in a table of their own (``payloads``), written once and deleted
when the delivery is done. A row of ``deliveries`` changes at every claim,
attempt and finish, and SQLite writes a changed row whole: with the payload in
it, each of those wrote the payload again (about 50 KiB of log a 21 KiB
payload, measured, where 21 KiB is needed).

A stream whose endpoint is down is *held* (``held_streams``): kept here so that
``inbound status`` shows it and a restarted deliverer goes on holding it.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from ..clock import SYSTEM, Clock
from ..errors import StoreError
from ..records import JSON
from ..sqlitefile import SQLiteFile

# A delivery whose lease has lapsed (parameters: the monotonic now, and now + FOREIGN_LEASE). A lease
# further ahead than FOREIGN_LEASE was written on the wall clock, by a deliverer of before leases were
# monotonic still running when this outbox was first opened by one of after (say by `inbound status`):
# left as it is, it would not lapse for decades, and its delivery would wait until the next boot.
LAPSED = "(lease_until < ? OR lease_until > ?)"
FOREIGN_LEASE = 1e9  # 31 years: longer than any lease (durations are at most 10 years), shorter than the epoch

# The due deliveries of a stream, *order* first: what claim() takes (parameters: stream, now,
# now + longest_delay, LAPSED's two, added_before, limit). In arrival order it is read from
# the index ``claimable`` alone.
CLAIMABLE = f"""SELECT rowid FROM deliveries
    WHERE stream = ? AND done = 0 AND (due_at <= ? OR due_at > ?) AND {LAPSED} AND added_at < ?
    ORDER BY {{order}} LIMIT ?"""

# A claimed delivery's payload, in claim()'s RETURNING.
PAYLOAD = "(SELECT payload FROM payloads p WHERE p.delivery_id = deliveries.delivery_id)"

# When the first unleased delivery is due (parameters: LAPSED's); read from the index ``next_due`` alone.
NEXT_DUE = f"SELECT due_at FROM deliveries WHERE done = 0 AND {LAPSED} ORDER BY due_at LIMIT 1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    delivery_id TEXT PRIMARY KEY,
    stream TEXT NOT NULL,
    queue_id TEXT NOT NULL,
    generation INTEGER NOT NULL,
    payload BLOB, -- only in outboxes of before ``payloads``: moved there on open (see _move_payloads)
    attempts INTEGER NOT NULL DEFAULT 0,
    steps INTEGER NOT NULL DEFAULT 0,
    due_at REAL NOT NULL,
    added_at REAL NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until REAL NOT NULL DEFAULT 0, -- monotonic time, of the boot in lease_boot
    content_type TEXT NOT NULL DEFAULT 'application/json',
    url TEXT
);
CREATE INDEX IF NOT EXISTS waiting ON deliveries (stream, done, due_at);
-- claim(), in arrival order: everything it filters on is in the index, so it reads no row but
-- those it takes. Through the table it read every due row and the overflow pages of its payload
-- (which comes before lease_until): 25 ms a claim with 5,000 messages waiting, 0.5 ms this way.
CREATE INDEX IF NOT EXISTS claimable ON deliveries (stream, done, queue_id, due_at, lease_until, added_at);
-- next_due(), the same way: the first due time among the unleased, read from the index in due order.
-- Through the table it read lease_until, which comes after the payload, of every waiting row.
CREATE INDEX IF NOT EXISTS next_due ON deliveries (done, due_at, lease_until);
CREATE TABLE IF NOT EXISTS held_streams (stream TEXT PRIMARY KEY, since REAL NOT NULL);
CREATE TABLE IF NOT EXISTS lease_boot (boot_id TEXT NOT NULL);
-- The payload of each delivery not yet done, of its latest generation.
CREATE TABLE IF NOT EXISTS payloads (delivery_id TEXT PRIMARY KEY, generation INTEGER NOT NULL, payload BLOB NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Delivery:
    delivery_id: str
    stream: str
    queue_id: str
    generation: int
    payload: bytes
    attempts: int  # attempts made so far in this generation (probes included)
    steps: int  # retry_schedule steps used so far (failures while the endpoint is down use none)
    due_at: float  # when it was due; for a held delivery, when it was last tried
    content_type: str = JSON  # the payload's, sent as the POST's Content-Type
    url: str | None = None  # an operator's replay target; None: the stream's webhook_url


@dataclass(frozen=True, slots=True)
class Waiting:
    count: int
    oldest_added_at: float | None  # when the longest-waiting delivery arrived


class Outbox:
    def __init__(self, path: Path, clock: Clock = SYSTEM) -> None:
        self.path = path
        self.clock = clock  # due times (wall) and leases (monotonic) are read against it
        # Its connections are shared by the intake and the attempt threads; sqlite3 wants them serialised.
        self.lock = threading.Lock()
        self.file = SQLiteFile(path, "outbox", StoreError)
        self.db = self.file.connect()
        # Leases and finishes are bookkeeping (sqlitefile.py). A lease lost to a power cut has lapsed
        # anyway: its holder is gone. A finish lost to one repeats the attempt (same webhook-id),
        # whose outcome is on the bus already. Their own connection, so that neither ever leaves
        # the durable one in another mode.
        self.bookkeeping = self.file.connect(durable=False)
        for db in (self.db, self.bookkeeping):
            # SQLite as Debian builds it zeroes what a DELETE frees: every payload was written to the
            # log twice, once to keep it and once to blank it (a fifth of the pipeline's writes). FAST
            # blanks only what costs no write. What is left in free pages is a copy of a bus record,
            # which the bus keeps for longer anyway.
            db.execute("PRAGMA secure_delete = FAST")
        with self.file.errors():
            self.db.executescript(_SCHEMA)
            # An outbox.db made before payload formats has no content_type (every payload in it is
            # JSON), and one made before replays to another URL has no url.
            self._add_column("content_type", f"TEXT NOT NULL DEFAULT '{JSON}'")
            self._add_column("url", "TEXT")
            self._move_payloads()
        self._lapse_leases_of_another_boot()

    def _add_column(self, name: str, definition: str) -> None:
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(deliveries)")}
        if name in columns:
            return
        try:
            self.db.execute(f"ALTER TABLE deliveries ADD COLUMN {name} {definition}")
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):  # else another process sharing the file added it first
                raise

    def _move_payloads(self) -> None:
        """Payloads kept in ``deliveries`` (an outbox of before ``payloads``) move to ``payloads``, at once."""
        with self.lock, self.file.transaction(self.db) as db:
            db.execute(
                "INSERT OR REPLACE INTO payloads SELECT delivery_id, generation, payload FROM deliveries"
                " WHERE payload IS NOT NULL AND done = 0"
            )
            db.execute("UPDATE deliveries SET payload = NULL WHERE payload IS NOT NULL")

    def _lapse_leases_of_another_boot(self) -> None:
        """An outbox last opened in another boot (or before leases were monotonic) has no lease left.

        Read first: every ``inbound status``, API status and metrics scrape opens the outbox, and only
        the first opener of a boot has anything to write (checked again under the write lock).
        """
        boot = self.clock.boot()
        current = "SELECT 1 FROM lease_boot WHERE boot_id = ?"
        if self._read(current, (boot,)):
            return
        with self.lock, self.file.transaction(self.db) as db:
            if db.execute(current, (boot,)).fetchone() is None:
                db.execute("UPDATE deliveries SET lease_until = 0 WHERE lease_until != 0")
                db.execute("DELETE FROM lease_boot")
                db.execute("INSERT INTO lease_boot (boot_id) VALUES (?)", (boot,))

    def _write(self, sql: str, params: list[tuple[object, ...]]) -> None:
        with self.lock, self.file.transaction(self.db) as db:
            db.executemany(sql, params)

    def add(self, deliveries: list[Delivery]) -> None:
        """Keep each delivery once; a later generation (``inbound retry``) starts it over.

        Over from its arrival too: ``webhooks.max_hold`` counts from ``added_at``, and a retry of a
        message older than that would otherwise be failed as held too long before any attempt.
        """
        now = self.clock.time()
        with self.lock, self.file.transaction(self.db) as db:
            db.executemany(
                """INSERT INTO deliveries
                       (delivery_id, stream, queue_id, generation, due_at, added_at, content_type, url)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (delivery_id) DO UPDATE SET
                       generation = excluded.generation, content_type = excluded.content_type, url = excluded.url,
                       attempts = 0, steps = 0, due_at = excluded.due_at, added_at = excluded.added_at,
                       done = 0, lease_until = 0
                   WHERE excluded.generation > deliveries.generation""",
                [
                    (d.delivery_id, d.stream, d.queue_id, d.generation, now, now, d.content_type, d.url)
                    for d in deliveries
                ],
            )
            # Only for a delivery that now waits in this generation: a late duplicate of a done one stores nothing.
            db.executemany(
                """INSERT INTO payloads (delivery_id, generation, payload)
                   SELECT :id, :generation, :payload WHERE EXISTS
                       (SELECT 1 FROM deliveries WHERE delivery_id = :id AND generation = :generation AND done = 0)
                   ON CONFLICT (delivery_id) DO UPDATE SET generation = excluded.generation, payload = excluded.payload
                   WHERE excluded.generation > payloads.generation""",
                [{"id": d.delivery_id, "generation": d.generation, "payload": d.payload} for d in deliveries],
            )

    def claim(
        self,
        stream: str,
        limit: int,
        owner: str,
        lease_seconds: float,
        *,
        probe: bool = False,
        added_before: float | None = None,
        payloads: bool = True,
        longest_delay: float = float("inf"),
    ) -> list[Delivery]:
        """Lease up to *limit* due deliveries of *stream*, oldest arrival first.

        Arrival is the queue id (it sorts by the time the SMTP edge accepted the message), not the
        order records reached this outbox: on Kafka, messages of one stream may be processed out of
        order across the partitions of ``received``.

        ``probe``: the one tried least recently instead, so that probes of a down endpoint take
        the held deliveries in turn and one message the endpoint always refuses cannot keep it
        looking down. ``added_before``: only deliveries that arrived before then (held too long).
        ``payloads=False``: each with an empty payload, for a caller that will not POST them: a
        hundred held messages of tens of MB each would otherwise be read into memory at once.

        ``longest_delay``: the longest :meth:`reschedule` is given. A delivery due further ahead
        than that was rescheduled before the system clock stepped back, and is due now: due times
        are wall-clock times (they outlive the process, and the boot), and after a step back of
        an hour every retry and every held delivery waited an hour more.
        """
        now, monotonic = self.clock.time(), self.clock.monotonic()
        # A stream's queue ids are unique (the delivery id is made of both): no tie to break.
        order = "due_at, queue_id, rowid" if probe else "queue_id"
        with self.lock, self.file.errors():
            rows = self.bookkeeping.execute(
                f"""UPDATE deliveries SET lease_owner = ?, lease_until = ?
                       WHERE rowid IN ({CLAIMABLE.format(order=order)})
                       RETURNING delivery_id, stream, queue_id, generation,
                                 {PAYLOAD if payloads else "x''"},
                                 attempts, steps, due_at, content_type, url""",
                (
                    owner,
                    monotonic + lease_seconds,
                    stream,
                    now,
                    now + longest_delay,
                    *self._lapsed(monotonic),
                    added_before or float("inf"),
                    limit,
                ),
            ).fetchall()
        rows.sort(key=lambda row: row[2])  # RETURNING gives no order guarantee
        return [Delivery(*row) for row in rows]

    def reschedule(self, delivery: Delivery, delay: float | None) -> None:
        """Count the attempt; *delay* None: held -- no step used, due now, behind the others for probes.

        A *delay* was decided while the endpoint looked up; if its stream was held since (another
        attempt showed the outage while this one ended), this failure was part of that outage and
        is held too. :meth:`hold` leaves deliveries still under attempt to this.
        """
        now = self.clock.time()
        if delay is None:
            sql = "UPDATE deliveries SET attempts = attempts + 1, due_at = ?, lease_until = 0"
            params: tuple[object, ...] = (now, delivery.delivery_id, delivery.generation)
        else:
            sql = """UPDATE deliveries SET attempts = attempts + 1,
                         steps = steps + IIF(held, 0, 1), due_at = IIF(held, ?, ?), lease_until = 0
                     FROM (SELECT EXISTS (SELECT 1 FROM held_streams WHERE stream = ?) AS held)"""
            params = (now, now + delay, delivery.stream, delivery.delivery_id, delivery.generation)
        self._write(sql + " WHERE delivery_id = ? AND generation = ?", [params])

    def hold(self, stream: str, since: float, failed: set[str]) -> None:
        """The endpoint of *stream* is down: hold the stream, and the *failed* deliveries with it.

        Those failed in the run of failures that showed the outage: each gets back the schedule step
        its failure used and waits, due, for the endpoint -- not for its own next step. One whose
        attempt has not been rescheduled yet (still leased) is left to :meth:`reschedule`.
        """
        now, monotonic = self.clock.time(), self.clock.monotonic()
        with self.lock, self.file.transaction(self.db) as db:
            db.execute("INSERT OR REPLACE INTO held_streams (stream, since) VALUES (?, ?)", (stream, since))
            db.executemany(
                "UPDATE deliveries SET steps = MAX(steps - 1, 0), due_at = MIN(due_at, ?)"
                f" WHERE delivery_id = ? AND done = 0 AND {LAPSED}",
                [(now, delivery_id, *self._lapsed(monotonic)) for delivery_id in sorted(failed)],
            )

    def unhold(self, stream: str) -> None:
        """The endpoint answers again; its held deliveries are due already and go in arrival order."""
        self._write("DELETE FROM held_streams WHERE stream = ?", [(stream,)])

    def held_since(self, stream: str) -> float | None:
        row = self._read("SELECT since FROM held_streams WHERE stream = ?", (stream,))
        return float(str(row[0])) if row else None

    def finish_many(self, deliveries: list[Delivery]) -> None:
        """Done, in one transaction (the deliverer's attempts share it: :mod:`.groupcommit`).

        Bookkeeping, not fsynced on its own: it follows the outcome's flush to the bus, which is
        what makes the delivery final. Fsynced, it was one of the two fsyncs of every group.
        """
        now = self.clock.time()
        done = [(delivery.delivery_id, delivery.generation) for delivery in deliveries]
        with self.lock, self.file.transaction(self.bookkeeping) as db:
            db.executemany(
                "UPDATE deliveries SET attempts = attempts + 1, done = 1, due_at = ?, lease_until = 0"
                " WHERE delivery_id = ? AND generation = ?",
                [(now, *key) for key in done],
            )
            db.executemany("DELETE FROM payloads WHERE delivery_id = ? AND generation = ?", done)

    def release(self, delivery: Delivery) -> None:
        """Give the lease back without counting an attempt (its outcome could not be recorded)."""
        self._write("UPDATE deliveries SET lease_until = 0 WHERE delivery_id = ?", [(delivery.delivery_id,)])

    def _read(self, sql: str, params: tuple[object, ...]) -> tuple[object, ...]:
        with self.lock, self.file.errors():
            row: tuple[object, ...] = self.db.execute(sql, params).fetchone()
        return row

    def waiting(self, stream: str) -> Waiting:
        count, oldest = self._read(
            "SELECT COUNT(*), MIN(added_at) FROM deliveries WHERE stream = ? AND done = 0", (stream,)
        )
        return Waiting(int(str(count)), float(str(oldest)) if oldest is not None else None)

    def next_due(self) -> float | None:
        row = self._read(NEXT_DUE, self._lapsed(self.clock.monotonic()))
        return float(str(row[0])) if row else None

    @staticmethod
    def _lapsed(monotonic: float) -> tuple[float, float]:
        """LAPSED's parameters at *monotonic*."""
        return monotonic, monotonic + FOREIGN_LEASE

    def prune(self, older_than: float) -> None:
        self._write("DELETE FROM deliveries WHERE done = 1 AND due_at < ?", [(self.clock.time() - older_than,)])

    def close(self) -> None:
        self.bookkeeping.close()
        self.db.close()

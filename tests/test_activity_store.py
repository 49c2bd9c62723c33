"""Contract of every activity store backend: idempotent, order-free, monotonic.

The store is rebuilt from the bus by re-applying events at least once and with
no order between the ``events`` and ``messages`` topics, so most tests apply
the same events in many orders and compare the whole stored state. A new
backend runs here as soon as ``inbound.activity`` knows it: real SQLite files, and a real
PostgreSQL server (tests/postgres_server.py), no mocks.
"""

from __future__ import annotations

import itertools
import json
import logging
import multiprocessing
import random
import re
import sqlite3
import string
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource

from inbound.activity import BACKENDS, ActivityRecord, ActivityStore, Claimed, SQLiteActivityStore, _sql, open_store
from inbound.activity._sql import STATE_COLUMNS
from inbound.activity.postgresql import SCHEMA_VERSION as POSTGRESQL_SCHEMA_VERSION
from inbound.activity.postgresql import PostgresActivityStore
from inbound.activity.record import Recorder
from inbound.activity.sqlite import SCHEMA_VERSION
from inbound.bus import Record
from inbound.config import ACTIVITY_BACKENDS, ActivitySettings, Settings, StorageSettings, load_settings
from inbound.errors import ConfigError, StoreError
from inbound.events import Attempt, Event, EventType, Status, Summary
from inbound.records import JSON, encode_event, event_record
from tests.postgres_server import PostgresServer

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
PAYLOAD = b'{"subject":"Invoice 42","text_body":"Hi","attachments":[{"name":"a.pdf"}]}'  # opaque to the store

Opener = Callable[..., ActivityStore]


def qid(n: int) -> str:
    return f"01JD{n:022d}"


def t(seconds: int) -> str:
    return f"2026-11-22T10:{seconds // 60:02d}:{seconds % 60:02d}.000Z"


def ev(kind: EventType, n: int = 1, at: int = 0, *, stream: str = "support", **fields: Any) -> Event:
    if "payload" in fields:
        fields.setdefault("payload_type", JSON)
    return Event(kind, f"{qid(n)}-{stream}", qid(n), stream, t(at), **fields)


def to_json(event: Event) -> dict[str, Any]:
    """The event as the events topic carries it."""
    return dict(json.loads(encode_event(event)))


def envelope_summary(n: int = 1) -> Summary:
    return Summary(t(n), "bounce+x@sender.test", ("help@in.test",))


def parsed_summary(n: int = 1) -> Summary:
    return Summary(t(n), "alice@sender.test", ("help@in.test",), "Invoice 42")


def attempt(number: int, at: int, code: int | None, error: str | None = None) -> Attempt:
    return Attempt(number, t(at), code, error, 12.5)


def delivered_after_one_retry(n: int = 1) -> list[Event]:
    """queued -> processed -> attempt 500 -> retrying -> attempt 200 -> delivered, in bus order."""
    return [
        ev(EventType.QUEUED, n, 1, summary=envelope_summary(n)),
        ev(EventType.PROCESSED, n, 1, summary=parsed_summary(n), payload=PAYLOAD),
        ev(EventType.ATTEMPT, n, 2, attempt=attempt(1, 2, 500, "HTTP 500")),
        ev(EventType.RETRYING, n, 2, reason="HTTP 500", next_attempt_at=t(62)),
        ev(EventType.ATTEMPT, n, 62, attempt=attempt(2, 62, 200)),
        ev(EventType.DELIVERED, n, 62),
    ]


def failed_then_retried(n: int = 1) -> list[Event]:
    """Failed in generation 0 (403), `inbound retry`, delivered in generation 1; plus a stale retrying."""
    return [
        ev(EventType.QUEUED, n, 1, summary=envelope_summary(n)),
        ev(EventType.PROCESSED, n, 1, summary=parsed_summary(n), payload=PAYLOAD),
        ev(EventType.ATTEMPT, n, 2, attempt=attempt(1, 2, 403, "HTTP 403")),
        ev(EventType.RETRYING, n, 2, reason="HTTP 503", next_attempt_at=t(9)),
        ev(EventType.FAILED, n, 3, reason="HTTP 403: the endpoint refused the message"),
        ev(EventType.RETRY_REQUESTED, n, 100, generation=1),
        ev(EventType.PROCESSED, n, 1, generation=1, summary=parsed_summary(n), payload=PAYLOAD),
        ev(EventType.ATTEMPT, n, 101, generation=1, attempt=attempt(1, 101, 200)),
        ev(EventType.DELIVERED, n, 101, generation=1),
    ]


# every backend inbound.activity knows; a server backend starts a process, so its tests are end to end
@pytest.fixture(params=[pytest.param(b, marks=pytest.mark.e2e) if b == "postgresql" else b for b in BACKENDS])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def open_backend(backend: str, where: str) -> ActivityStore:
    """The store a service configured with *backend* opens: *where* is its data directory, or the DSN."""
    if backend == "postgresql":
        return open_store(Settings(Path("inbound.toml"), activity=ActivitySettings(backend, where)))
    return open_store(Settings(Path(where) / "inbound.toml", storage=StorageSettings(Path(where))))


@pytest.fixture
def new_place(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Callable[[], str]:
    """Makes an empty place for a store: a new directory, or a new database on the session's server."""
    if backend == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        return server.new_database

    def new_directory() -> str:
        path = Path(tempfile.mkdtemp(dir=tmp_path))
        return str(path)

    return new_directory


@pytest.fixture
def place(new_place: Callable[[], str]) -> str:
    """Where this test's store lives."""
    return new_place()


@pytest.fixture
def opener(backend: str, place: str) -> Iterator[Opener]:
    """Opens stores of one backend; each call is another connection, as another process would have."""
    opened: list[ActivityStore] = []

    def open_one(where: str = place) -> ActivityStore:
        opened.append(open_backend(backend, where))
        return opened[-1]

    yield open_one
    for store in opened:
        store.close()


@pytest.fixture
def store(opener: Opener) -> ActivityStore:
    return opener()


def state(store: ActivityStore) -> tuple[list[ActivityRecord | None], dict[Status, int]]:
    """Everything the store shows, payloads included."""
    return [store.get(r.delivery_id) for r in store.list(limit=1_000_000)], store.count_by_status()


def one(store: ActivityStore, n: int = 1, stream: str = "support") -> ActivityRecord:
    record = store.get(f"{qid(n)}-{stream}")
    assert record is not None
    return record


def anonymous(record: ActivityRecord) -> ActivityRecord:
    return replace(record, delivery_id="", queue_id="")


def apply_in_random_batches(store: ActivityStore, events: list[Event], rng: random.Random) -> None:
    events = events[:]
    rng.shuffle(events)
    while events:
        size = rng.randint(1, len(events))
        store.apply(events[:size])
        events = events[size:]


def test_happy_path_with_a_retry(store: ActivityStore) -> None:
    events = delivered_after_one_retry()
    seen = []
    for event in events:
        store.apply([event])
        seen.append((one(store).status.value, one(store).reason, one(store).next_attempt_at))
    statuses = [status for status, _, _ in seen]
    assert statuses == ["queued", "processed", "processed", "retrying", "retrying", "delivered"]
    assert seen[3] == ("retrying", "HTTP 500", t(62))
    record = one(store)
    assert (record.queue_id, record.stream, record.generation) == (qid(1), "support", 0)
    assert (record.received_at, record.mail_from, record.to) == (t(1), "alice@sender.test", ("help@in.test",))
    assert (record.subject, record.reason, record.next_attempt_at) == ("Invoice 42", None, None)
    assert (record.updated_at, record.payload) == (t(62), PAYLOAD)
    assert [(a.number, a.status_code, a.error, a.at) for a in record.attempts] == [
        (1, 500, "HTTP 500", t(2)),
        (2, 200, None, t(62)),
    ]
    assert [getattr(a, "generation", None) for a in record.attempts] == [0, 0]


def test_replaying_everything_twice_changes_nothing(store: ActivityStore) -> None:
    events = delivered_after_one_retry(1) + failed_then_retried(2) + delivered_after_one_retry(3)[:3]
    store.apply(events)
    once = state(store)
    store.apply(events)
    for event in reversed(events):
        store.apply([event])
    assert state(store) == once
    assert len(once[0]) == 3


@pytest.mark.parametrize("scenario", [delivered_after_one_retry, failed_then_retried])
def test_every_order_gives_the_same_record(store: ActivityStore, scenario: Callable[[int], list[Event]]) -> None:
    expected = scenario(0)
    store.apply(expected)
    reference = anonymous(one(store, 0))
    rng = random.Random(20261122)
    orders = list(itertools.permutations(expected)) if len(expected) <= 6 else []
    orders += [tuple(rng.sample(expected, len(expected))) for _ in range(150)]
    for n, order in enumerate(orders, start=1):  # each order in one transaction
        store.apply([_renumber(e, n) for e in order])
    split = range(len(orders) + 1, len(orders) + 41)
    for n in split:  # each order split over several transactions, some events twice
        apply_in_random_batches(store, [_renumber(e, n) for e in expected + expected[:2]], rng)
    for n in range(1, split.stop):
        assert anonymous(one(store, n)) == reference, f"order #{n}"


def _renumber(event: Event, n: int) -> Event:
    return replace(event, delivery_id=f"{qid(n)}-{event.stream}", queue_id=qid(n))


def test_stale_lower_event_fills_in_but_never_moves_back(store: ActivityStore) -> None:
    queued, processed, first, _, second, delivered = delivered_after_one_retry()
    store.apply([queued, second, delivered])
    record = one(store)
    assert (record.status, record.subject, record.payload) == (Status.DELIVERED, None, None)
    store.apply([processed, first])  # the `messages` record comes after the `events` ones
    record = one(store)
    assert record.status is Status.DELIVERED
    assert (record.subject, record.mail_from, record.payload) == ("Invoice 42", "alice@sender.test", PAYLOAD)
    assert [a.number for a in record.attempts] == [1, 2]


def test_blocked(store: ActivityStore) -> None:
    queued = ev(EventType.QUEUED, 1, 1, summary=envelope_summary())
    blocked = ev(EventType.BLOCKED, 1, 2, summary=parsed_summary(), reason="sender spam@x.test is in block_senders")
    store.apply([blocked, queued])
    record = one(store)
    assert (record.status, record.reason, record.subject) == (Status.BLOCKED, blocked.reason, "Invoice 42")
    assert record.payload is None
    assert record.attempts == ()


def test_failed_then_retry_requested_then_delivered(store: ActivityStore) -> None:
    events = failed_then_retried()
    store.apply(events[:5])
    record = one(store)
    assert (record.status, record.generation) == (Status.FAILED, 0)
    assert record.reason == "HTTP 403: the endpoint refused the message"
    store.apply([events[5]])
    record = one(store)
    assert (record.status, record.generation, record.reason) == (Status.QUEUED, 1, None)
    store.apply(events[6:])
    record = one(store)
    assert (record.status, record.generation, record.payload) == (Status.DELIVERED, 1, PAYLOAD)
    assert [(getattr(a, "generation", None), a.number, a.status_code) for a in record.attempts] == [
        (0, 1, 403),
        (1, 1, 200),
    ]


def test_old_generation_events_after_a_retry_are_ignored(store: ActivityStore) -> None:
    events = failed_then_retried()
    store.apply(events[5:])  # generation 1 first: retry_requested .. delivered
    store.apply(events[:5])  # then every generation-0 event, failed last
    record = one(store)
    assert (record.status, record.generation, record.reason) == (Status.DELIVERED, 1, None)


def test_attempt_of_a_new_generation_alone_moves_failed_to_queued(store: ActivityStore) -> None:
    events = failed_then_retried()
    store.apply([*events[:5], events[7]])
    assert (one(store).status, one(store).generation) == (Status.QUEUED, 1)


@pytest.mark.parametrize(
    ("winner", "loser"),
    [(EventType.DELIVERED, EventType.FAILED), (EventType.FAILED, EventType.BLOCKED)],
)
def test_same_rank_conflict_is_decided_by_type_not_order(
    store: ActivityStore, winner: EventType, loser: EventType
) -> None:
    for n, pair in enumerate([(winner, loser), (loser, winner)], start=1):
        # the loser is later in time too: time only breaks ties between events of the same type
        store.apply([ev(kind, n, 5 if kind is winner else 9, reason="why") for kind in pair])
        assert one(store, n).status == winner.value


def test_conflicting_details_settle_on_the_highest_event(store: ActivityStore) -> None:
    """A message processed twice (config changed in between) says different things; order must not matter."""
    first = Summary(t(1), "alice@sender.test", ("help@in.test",), "A")
    again = Summary(t(1), "alice@sender.test", ("help@in.test",), "B")
    events = [
        ev(EventType.QUEUED, 0, 1, summary=envelope_summary()),
        ev(EventType.PROCESSED, 0, 1, summary=first, payload=b'{"subject":"A"}'),
        ev(EventType.PROCESSED, 0, 1, summary=again, payload=b'{"subject":"B"}'),  # same key but the content
        ev(EventType.BLOCKED, 0, 2, summary=replace(again, subject=None), reason="blocked"),
    ]
    records = set()
    for n, order in enumerate(itertools.permutations(events), start=1):
        store.apply([_renumber(e, n) for e in order])
        record = one(store, n)
        records.add((record.status, record.subject, record.payload, record.mail_from))
    assert records == {(Status.BLOCKED, "B", b'{"subject":"B"}', "alice@sender.test")}


VERDICTS = {
    "auth": {
        "spf": {"result": "pass", "domain": "sender.test"},
        "dkim": [{"result": "pass", "domain": "sender.test", "selector": "s1"}],
        "dmarc": {"result": "pass", "policy": "reject", "domain": "sender.test"},
        "arc": {"result": "none"},
    },
    "spam": {"score": 6.5, "threshold": 5.0, "is_spam": True, "rules": ["URIBL_BLACK"]},
    "flags": ["spam"],
}


def test_verdicts_come_with_the_processed_summary_in_any_order(store: ActivityStore) -> None:
    screened = replace(parsed_summary(), verdicts=VERDICTS)
    events = [ev(EventType.QUEUED, 0, 1, summary=envelope_summary()), ev(EventType.PROCESSED, 0, 2, summary=screened)]
    for n, order in enumerate(itertools.permutations(events), start=1):
        store.apply([_renumber(e, n) for e in order])
        record = one(store, n)
        assert record.verdicts == VERDICTS
        assert record.to_json()["verdicts"] == VERDICTS
    assert record.verdict_lines() == [
        ("SPF", "pass (sender.test)"),
        ("DKIM", "pass (d=sender.test s=s1)"),
        ("DMARC", "pass (sender.test, policy reject)"),
        ("ARC", "none"),
        ("spam", "6.5 of 5.0 (spam): URIBL_BLACK"),
        ("flags", "spam"),
    ]
    store.apply([ev(EventType.QUEUED, 9, 1, summary=envelope_summary(9))])
    unscreened = one(store, 9)
    assert unscreened.verdicts is None
    assert unscreened.verdict_lines() == []


def test_repeated_attempt_keeps_one_row_the_later(store: ActivityStore) -> None:
    early = ev(EventType.ATTEMPT, 1, 2, attempt=attempt(1, 2, None, "timeout after 10s"))
    late = ev(EventType.ATTEMPT, 1, 7, attempt=attempt(1, 7, 200))
    store.apply([late, early, late])
    store.apply([early])
    record = one(store)
    assert [(a.number, a.status_code) for a in record.attempts] == [(1, 200)]
    assert record.status is Status.QUEUED  # an attempt implies at least queued, even before its queued event


def test_a_payload_made_is_known_without_the_payload(store: ActivityStore) -> None:
    """From the processed summary (events are kept for ever), not the payload (bus.retention drops it)."""
    store.apply([replace(e, payload=None, payload_type=None) for e in delivered_after_one_retry(1)])  # past retention
    store.apply([ev(EventType.QUEUED, 2, 1, summary=envelope_summary(2))])
    store.apply([ev(EventType.FAILED, 3, 1, summary=parsed_summary(3), reason="cannot parse the message")])
    store.apply(delivered_after_one_retry(4))
    made = [(r.payload_made, r.payload_type) for r in map(store.get, [f"{qid(n)}-support" for n in range(1, 5)]) if r]
    assert made == [(True, None), (False, None), (False, None), (True, JSON)]
    assert [(r.queue_id, r.payload_made) for r in store.list()] == [(qid(n), n in (1, 4)) for n in (4, 3, 2, 1)]


def test_undecodable_subject_is_stored(store: ActivityStore) -> None:
    odd = Summary(t(1), "a@sender.test", ("help@in.test",), "caf\udce9")  # a surrogate-escaped byte
    body = b'{"subject":"caf\xe9"}'  # not UTF-8: the store keeps the bytes it was given
    store.apply([ev(EventType.PROCESSED, 1, 1, summary=odd, payload=body)])
    record = one(store)
    assert record.subject is not None
    assert record.subject.startswith("caf")
    assert record.payload == body


def test_list_filters_and_orders_newest_first(store: ActivityStore) -> None:
    store.apply(delivered_after_one_retry(1))  # received t(1)
    store.apply(failed_then_retried(3)[:5])  # received t(3), failed
    store.apply([ev(EventType.QUEUED, 2, 2, stream="sales", summary=envelope_summary(2))])
    store.apply([ev(EventType.QUEUED, 4, 2, summary=envelope_summary(2))])  # same time as #2: id decides
    store.apply([ev(EventType.ATTEMPT, 5, 9, attempt=attempt(1, 9, 500))])  # no summary yet: last
    assert [r.queue_id for r in store.list()] == [qid(3), qid(4), qid(2), qid(1), qid(5)]
    assert [r.queue_id for r in store.list(limit=2)] == [qid(3), qid(4)]
    assert store.list(limit=0) == []
    assert [r.queue_id for r in store.list(status=Status.QUEUED)] == [qid(4), qid(2), qid(5)]
    assert [r.queue_id for r in store.list(stream="sales")] == [qid(2)]
    assert [r.queue_id for r in store.list(status=Status.QUEUED, stream="support")] == [qid(4), qid(5)]
    assert store.list(stream="nobody") == []
    listed = store.list(status=Status.DELIVERED)
    assert listed[0].payload is None  # list() leaves payloads out; get() has them
    assert len(listed[0].attempts) == 2
    assert replace(listed[0], payload=PAYLOAD) == store.get(listed[0].delivery_id)


def test_count_by_status(store: ActivityStore) -> None:
    assert store.count_by_status() == dict.fromkeys(Status, 0)
    store.apply(delivered_after_one_retry(1) + delivered_after_one_retry(2) + failed_then_retried(3)[:5])
    store.apply([ev(EventType.QUEUED, 4, 4, summary=envelope_summary(4))])
    assert store.count_by_status() == {**dict.fromkeys(Status, 0), Status.DELIVERED: 2, Status.FAILED: 1,
                                       Status.QUEUED: 1}  # fmt: skip


def test_reset_empties_everything_and_nothing_is_nothing(store: ActivityStore) -> None:
    events = delivered_after_one_retry()
    store.apply([])
    assert store.get(events[0].delivery_id) is None
    store.apply(events)
    store.reset()
    assert store.get(events[0].delivery_id) is None
    assert store.list() == []
    assert sum(store.count_by_status().values()) == 0
    store.apply(events)
    assert len(one(store).attempts) == 2


def summarised(n: int, subject: str, sender: str, to: tuple[str, ...], received_at: str) -> Event:
    return ev(EventType.PROCESSED, n, 1, summary=Summary(received_at, sender, to, subject), payload=PAYLOAD)


def test_search_words_addresses_and_time(store: ActivityStore) -> None:
    store.apply([
        summarised(1, "Invoice 42 overdue", "alice@sender.test", ("help@in.test",), t(1)),
        summarised(2, "Re: invoice", "Bob@Other.test", ("help@in.test", "sales@in.test"), t(2)),
        summarised(3, "Lunch?", "carol@sender.test", ("sales@in.test",), t(3)),
        ev(EventType.QUEUED, 4, 4),  # nothing to search in yet
    ])  # fmt: skip

    def found(**criteria: Any) -> list[str]:
        return [r.queue_id for r in store.list(**criteria)]

    assert found(text="invoice") == [qid(2), qid(1)]  # case-insensitive, whole words
    assert found(text="INVOICE 42") == [qid(1)]  # every word must match
    assert found(text="alice@sender.test") == [qid(1)]  # a whole address
    assert found(text="sender") == [qid(3), qid(1)]  # a part of one
    assert found(text="sales@in.test") == [qid(3), qid(2)]  # recipients too
    assert found(text="lunch", stream="support") == [qid(3)]
    assert found(text="nowhere") == []
    for odd in ['"', "a OR b", "NEAR(x", "subject:x", "*", "x' --", "\\", "\x00", "a\udcff"]:  # never syntax
        assert found(text=odd) == [], odd
    assert found(sender="a\x00@x") == found(recipient="\udcff") == []
    assert found(text="  ") == found()  # an empty query is no query
    assert found(sender="BOB@other.test") == [qid(2)]
    assert found(recipient="Sales@In.Test") == [qid(3), qid(2)]
    assert found(recipient="in.test") == []  # an address, not a part of one
    assert found(since=t(2)) == [qid(3), qid(2)]
    assert found(until=t(2)) == [qid(1)]
    assert found(since=t(2), until=t(3)) == [qid(2)]
    assert found(queue_id=qid(4)) == [qid(4)]
    store.apply(
        [ev(EventType.DELIVERED, 1, 9, summary=Summary(t(1), "alice@sender.test", ("help@in.test",), "Receipt"))]
    )
    assert found(text="receipt") == [qid(1)]  # the index follows the winning subject
    assert found(text="overdue") == []


#: Subjects, and what a user types to find them: both backends find the same records by the same words.
SEARCHED = {
    1: "Invoice INV-2024-0042",
    2: "Scan attached: scan_0042.pdf",
    3: "Contract /shared/contract-v2.docx",
    4: "Report 2024-01-15, Ticket PROJ-123 updated",
    5: "Résumé of Zoë",
    6: "Price -5 degrees at 10:30",
    7: "ÉLODIE est là",
    8: "Приглашение на встречу",
    9: "Straße gesperrt",
    10: "x_y under_score 3.14 version v1.2.3",
    11: "दिल की बात",
    12: "ドアの修理",
    13: "Invoice INV-0042-2024 (not ours)",
    14: "Meeting 2024-15-01, room 12-12",
    15: "Hello",
    16: "Hello",
    17: "दाल का ऑर्डर",
    18: "ドル建て請求",
    19: "ที่อยู่ใหม่",
}
#: Who sent and received a :data:`SEARCHED` message, where not s@sender.test to help@in.test.
ADDRESSED = {15: ("alice@other.test", ("sales@example.com",)), 16: ("alice@example.com", ("help@in.test",))}
FINDS = [
    ("INV-2024-0042", [1]), ("0042", [13, 2, 1]), ("scan_0042.pdf", [2]), ("pdf", [2]), ("contract-v2.docx", [3]),
    ("2024-01-15", [4]), ("01", [14, 4]), ("PROJ-123", [4]), ("123", [4]), ("10:30", [6]), ("5", [6]),
    ("Resume", [5]), ("résumé", [5]), ("ZOË", [5]), ("zoe", [5]), ("élodie", [7]), ("Elodie", [7]),
    ("приглашение", [8]), ("ВСТРЕЧУ", [8]), ("straße", [9]), ("STRASSE", [9]), ("score", [10]),
    ("under_score", [10]), ("14", [10]), ("v1.2.3", [10]), ("1.2", []), ("-", []), ("invo*", []),
    # A script's own marks are part of its letters, not accents: a vowel sign, the kana voicing mark.
    ("दिल", [11]), ("दल", []), ("ドアの修理", [12]), ("トアの修理", []),
    # ... and of its word, on SQLite too: its tokenizer split "दाल" at "ा" (and "दिल" found it), "ドル" at "ド".
    ("दाल", [17]), ("ऑर्डर", [17]), ("ト", []), ("ドル建て請求", [18]), ("ท", []), ("ที่อยู่ใหม่", [19]),
    ("x" * 2047, []),  # longer than PostgreSQL takes in a query: it answered 503
    # A piece of the query is a phrase: its words side by side, in order, in one message; pieces are ANDed.
    ("alice@example.com", [16]), ("alice@other.test", [15]), ("sales@example.com", [15]), ("alice", [16, 15]),
    ("INV-0042-2024", [13]), ("2024-15-01", [14]), ("12-12", [14]), ("0042 2024", [13, 1]),
    ("- INV-2024-0042 -", [1]),
]  # fmt: skip


def searched() -> list[Event]:
    """The :data:`SEARCHED` messages."""
    default = ("s@sender.test", ("help@in.test",))
    return [summarised(n, subject, *ADDRESSED.get(n, default), t(n)) for n, subject in SEARCHED.items()]


def found_words(store: ActivityStore) -> list[tuple[str, list[int]]]:
    return [(query, [int(r.queue_id[-2:]) for r in store.list(text=query)]) for query, _ in FINDS]


def test_search_finds_the_same_words_on_every_backend(store: ActivityStore) -> None:
    """Words as SQLite's unicode61 reads them (runs of letters and digits, no case, no diacritics), on
    PostgreSQL too: its parser kept "INV-2024-0042" whole, and "0042" found nothing there. Each piece of
    the query side by side: its words anywhere in a message found "INV-0042-2024" for "INV-2024-0042"."""
    store.apply(searched())
    assert found_words(store) == FINDS


def accented(n: int) -> Event:
    """A message from and to addresses with capitals beyond ASCII."""
    return summarised(n, "Réunion", "Élodie@Exemple.fr", ("Ärger@in.test", "ΟΔΟΣ@in.test"), t(n))


def found_by_address(store: ActivityStore) -> list[list[str]]:
    """What the sender and recipient filters find for :func:`accented`'s addresses in other cases."""
    searches = [{"sender": "élodie@exemple.FR"}, {"sender": "ÉLODIE@EXEMPLE.FR"}, {"recipient": "ärger@IN.test"},
                {"recipient": "οδος@in.test"}]  # fmt: skip
    return [[r.queue_id for r in store.list(**search)] for search in searches]


def test_addresses_compare_case_insensitively_beyond_ascii(store: ActivityStore) -> None:
    store.apply([accented(1), summarised(2, "Straße", "Straße@in.test", ("Ärger@in.test",), t(2))])
    assert found_by_address(store) == [[qid(1)], [qid(1)], [qid(2), qid(1)], [qid(1)]]
    assert [r.queue_id for r in store.list(sender="Élodie@Exemple.fr")] == [qid(1)]  # as stored
    assert [r.queue_id for r in store.list(sender="STRASSE@IN.TEST")] == [qid(2)]  # Unicode's caseless match
    assert store.list(sender="elodie@exemple.fr") == store.list(recipient="arger@in.test") == []  # É is not E


def megabyte_of_recipients(store: ActivityStore, recipients: int = 100) -> tuple[str, ...]:
    """Message 1 to 100 recipients of 8,000-byte local parts (smtp.max_command_line = 8192), over 1 MB
    of searchable text in words all different (200: their words more than a PostgreSQL tsvector holds)
    and an ordinary message 2 in the same batch, applied to *store*; message 1's recipients."""
    rng = random.Random(1)
    words = ("".join(rng.choices(string.ascii_lowercase, k=6)) for _ in itertools.count())
    to = tuple(".".join(itertools.islice(words, 1142)) + "@in.test" for _ in range(recipients))
    store.apply([
        summarised(1, "Invoice 42 overdue", "alice@sender.test", to, t(1)),
        summarised(2, "Lunch?", "carol@sender.test", ("sales@in.test",), t(2)),
    ])  # fmt: skip
    return to


def test_a_message_with_a_megabyte_of_recipients_is_recorded_and_found(store: ActivityStore) -> None:
    to = megabyte_of_recipients(store)
    assert one(store).to == to
    assert [r.queue_id for r in store.list(text="overdue")] == [qid(1)]  # the subject is indexed first
    assert [r.queue_id for r in store.list(text=to[0].split(".")[0])] == [qid(1)]  # and the first recipients
    assert [r.queue_id for r in store.list(recipient=to[-1])] == [qid(1)]  # the filter reads every recipient
    assert [r.queue_id for r in store.list(text="lunch")] == [qid(2)]


def test_cursor_pages_through_everything_once(store: ActivityStore) -> None:
    store.apply([summarised(n, f"m{n}", "a@sender.test", ("help@in.test",), t(n % 3)) for n in range(1, 8)])
    store.apply([ev(EventType.QUEUED, n, 1) for n in (8, 9)])  # no received_at: they come last
    everything = [r.delivery_id for r in store.list()]
    pages: list[list[str]] = []
    after = None
    while True:
        page = store.list(limit=3, after=after)
        if not page:
            break
        pages.append([r.delivery_id for r in page])
        after = page[-1].position
    assert [d for page in pages for d in page] == everything
    assert [len(page) for page in pages] == [3, 3, 3]
    assert everything[-2:] == [f"{qid(9)}-support", f"{qid(8)}-support"]
    assert store.list(status=Status.QUEUED, after=store.list()[-2].position) == store.list()[-1:]


def test_count_by_day(store: ActivityStore) -> None:
    day = "2026-11-21T23:59:59.999Z"
    store.apply([
        summarised(1, "a", "a@sender.test", ("help@in.test",), day),
        summarised(2, "b", "a@sender.test", ("help@in.test",), t(1)),
        summarised(3, "c", "a@sender.test", ("help@in.test",), t(2)),
        ev(EventType.DELIVERED, 3, 3),
        ev(EventType.QUEUED, 4, 1, stream="sales", summary=envelope_summary(2)),
        ev(EventType.QUEUED, 5, 1),  # not summarised: no day
    ])  # fmt: skip
    assert store.count_by_day(since="2026-11-21T00:00:00.000Z") == {
        ("2026-11-21", Status.PROCESSED): 1,
        ("2026-11-22", Status.PROCESSED): 1,
        ("2026-11-22", Status.DELIVERED): 1,
        ("2026-11-22", Status.QUEUED): 1,
    }
    assert store.count_by_day(since="2026-11-22T00:00:00.000Z", stream="support") == {
        ("2026-11-22", Status.PROCESSED): 1,
        ("2026-11-22", Status.DELIVERED): 1,
    }


def write_everything_again(backend: str, where: str, events: list[Event], seed: int, start: Any) -> None:
    """Runs in a child process: one more writer of the same store, from the moment both are ready."""
    store = open_backend(backend, where)
    start.wait(60)
    rng = random.Random(seed)
    for _ in range(5):
        apply_in_random_batches(store, events, rng)
    store.close()


def test_two_processes_writing_at_once_end_consistent(
    backend: str, opener: Opener, place: str, new_place: Callable[[], str]
) -> None:
    """Two processes merge the same deliveries at once, in different orders and batches."""
    events = [e for n in range(1, 16) for e in delivered_after_one_retry(n) + failed_then_retried(n + 100)]
    spawn = multiprocessing.get_context("spawn")
    start = spawn.Barrier(2)
    writers = [spawn.Process(target=write_everything_again, args=(backend, place, events, s, start)) for s in (1, 2)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(120)
    assert [w.exitcode for w in writers] == [0, 0]
    reference = opener(new_place())
    reference.apply(events)  # both applied this same set: the result must equal one clean application
    assert state(opener()) == state(reference)
    assert len(state(reference)[0]) == 30


NOW, LATER = "2026-11-23T09:00:00.000Z", "2026-11-23T09:05:00.000Z"


def claim(store: ActivityStore, seen: dict[str, int], now: str = NOW) -> Claimed:
    return store.claim_generations(seen, now=now, hold_until=LATER)


def test_a_generation_is_claimed_for_one_action_only(store: ActivityStore, opener: Opener) -> None:
    """Operator actions claim the generation they start: the store lags the bus they write to."""
    did = f"{qid(1)}-support"
    store.apply([ev(EventType.FAILED, 1, 3, reason="HTTP 403")])
    assert claim(store, {did: 0}) == Claimed({did: 1}, {})
    refused = claim(opener(), {did: 0}).refused  # another process, before generation 1 is recorded
    pending = "an action already asked for its generation 1, not in the activity log yet; try again once it is"
    assert refused == {did: pending}
    changed = "it changed while the action was being taken; look at it again"
    assert claim(store, {"nobody": 0}).refused == {"nobody": changed}

    store.apply([ev(EventType.RETRY_REQUESTED, 1, 100, generation=1)])
    assert list(claim(store, {did: 0}).refused) == [did]  # what the action checked at generation 0 is stale
    assert claim(store, {did: 1}).generations == {did: 2}
    store.release_claims({did: 2})  # that action could not write to the bus: maybe it did, so 2 stays used
    assert claim(store, {did: 1}).generations == {did: 3}
    assert claim(store, {did: 1}, now=LATER).generations == {did: 4}  # held no longer: that action died

    store.reset()  # a rebuild: the bus may hold generations up to 4 that it has not re-applied yet
    store.apply([ev(EventType.FAILED, 1, 3, reason="HTTP 403"), ev(EventType.RETRY_REQUESTED, 1, 100, generation=1)])
    assert claim(store, {did: 1}, now=LATER).generations == {did: 5}


def claim_at_once(racers: list[ActivityStore], seen: dict[str, int]) -> list[Claimed]:
    """Each of *racers* (a connection each, as processes have) claims *seen* at the same moment."""
    start = threading.Barrier(len(racers))
    results: list[Claimed] = []

    def race(racer: ActivityStore) -> None:
        start.wait(30)
        results.append(claim(racer, seen))

    threads = [threading.Thread(target=race, args=(racer,)) for racer in racers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_actions_racing_for_one_delivery_get_one_generation(store: ActivityStore, opener: Opener) -> None:
    did = f"{qid(1)}-support"
    store.apply([ev(EventType.FAILED, 1, 3, reason="HTTP 403")])
    racers = [opener() for _ in range(4)]
    for generation in range(5):
        results = claim_at_once(racers, {did: generation})
        assert sorted(r.generations.get(did, 0) for r in results) == [0, 0, 0, generation + 1]
        store.apply([ev(EventType.RETRY_REQUESTED, 1, 100 + generation, generation=generation + 1)])


def test_the_config_names_exactly_the_backends_there_are(tmp_path: Path) -> None:
    assert BACKENDS == ACTIVITY_BACKENDS
    config = tmp_path / "inbound.toml"
    config.write_text('[activity]\nbackend = "mongodb"\n')
    with pytest.raises(ConfigError, match=r"activity\.backend: must be one of \('sqlite', 'postgresql'\), not 'mongo"):
        load_settings(config)
    config.write_text('[activity]\nbackend = "postgresql"\n')
    with pytest.raises(ConfigError, match=r"activity\.dsn: is required"):
        load_settings(config)
    config.write_text('[activity]\nbackend = "postgresql"\ndsn = "host=db nonsense"\n')
    with pytest.raises(ConfigError, match=r"activity\.dsn: is not a libpq connection string"):
        load_settings(config)


def test_unwritable_path_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "activity.db").mkdir()
    with pytest.raises(StoreError, match=r"activity\.db"):
        open_backend("sqlite", str(tmp_path))
    with pytest.raises(StoreError, match="missing"):
        SQLiteActivityStore(tmp_path / "missing" / "activity.db")


def test_closed_store_raises_store_error(store: ActivityStore) -> None:
    store.close()
    store.close()
    with pytest.raises(StoreError):
        store.get("x")


# --- SQLite specifics -------------------------------------------------------


def test_sqlite_file_is_wal_versioned_and_atomic(tmp_path: Path) -> None:
    store = SQLiteActivityStore(tmp_path / "activity.db")
    raw = sqlite3.connect(tmp_path / "activity.db")
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        raw.execute(  # the second delivery of a batch cannot be written
            f"CREATE TRIGGER poison BEFORE INSERT ON deliveries WHEN NEW.delivery_id = '{qid(2)}-support'"
            " BEGIN SELECT RAISE(ABORT, 'poisoned'); END"
        )
        raw.commit()
        with pytest.raises(StoreError, match="poisoned"):
            store.apply(delivered_after_one_retry(1) + delivered_after_one_retry(2))
        assert store.list() == []  # all or nothing
        raw.execute("PRAGMA user_version = 99")
        raw.commit()
    finally:
        raw.close()
        store.close()
    with pytest.raises(StoreError, match="schema version 99"):
        SQLiteActivityStore(tmp_path / "activity.db")


def test_sqlite_version_2_file_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "activity.db"
    store = SQLiteActivityStore(path)
    store.apply([*delivered_after_one_retry(1), *failed_then_retried(2), accented(3)])
    before = state(store)
    store.close()
    raw = sqlite3.connect(path)
    try:  # back to version 2's shape: no id column, no full-text index, no folded addresses
        raw.executescript(
            f"""CREATE TABLE old AS SELECT {STATE_COLUMNS.removesuffix(", verdicts")}, payload FROM deliveries;
            DROP TABLE deliveries; DROP TABLE deliveries_text; DROP TABLE claims; ALTER TABLE old RENAME TO deliveries;
            CREATE INDEX deliveries_newest ON deliveries (received_at, delivery_id); PRAGMA user_version = 2;"""
        )
    finally:
        raw.close()
    upgraded = SQLiteActivityStore(path)
    try:
        assert state(upgraded) == before
        assert [r.queue_id for r in upgraded.list(text="invoice")] == [qid(2), qid(1)]
        assert found_by_address(upgraded) == [[qid(3)]] * 4
    finally:
        upgraded.close()
    check = sqlite3.connect(path)
    try:
        assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        check.close()


@pytest.mark.parametrize("version", [3, 4, 5])
def test_sqlite_version_3_to_5_files_gain_their_columns_and_tables(
    tmp_path: Path, version: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_sql, "UPGRADE_PAGE", 1)  # the addresses are folded a page at a time
    path = tmp_path / "activity.db"
    store = SQLiteActivityStore(path)
    store.apply([*delivered_after_one_retry(1), accented(3)])
    before = state(store)
    store.close()
    raw = sqlite3.connect(path)
    try:
        if version == 3:
            raw.execute("ALTER TABLE deliveries DROP COLUMN verdicts")
        if version <= 4:
            raw.execute("ALTER TABLE deliveries DROP COLUMN mail_from_folded")
            raw.execute("ALTER TABLE deliveries DROP COLUMN rcpt_to_folded")
        raw.executescript(f"DROP TABLE claims; PRAGMA user_version = {version};")
    finally:
        raw.close()
    upgraded = SQLiteActivityStore(path)
    try:
        assert state(upgraded) == before
        assert found_by_address(upgraded) == [[qid(3)]] * 4
        upgraded.apply([ev(EventType.PROCESSED, 2, 1, summary=replace(parsed_summary(2), verdicts=VERDICTS))])
        assert one(upgraded, 2).verdicts == VERDICTS
        assert claim(upgraded, {f"{qid(1)}-support": 0}).generations == {f"{qid(1)}-support": 1}
    finally:
        upgraded.close()


def upgrade_said(
    caplog: pytest.LogCaptureFixture, where: str, version: int, to: int, deliveries: int = len(SEARCHED)
) -> None:
    """The upgrade was logged before its work (a million deliveries took 35 s, others waiting) and after."""
    said = [r.getMessage() for r in caplog.records if r.name == "inbound.activity"]
    assert said[0] == (
        f"activity store {where}: upgrading from schema version {version} to {to} ({deliveries} deliveries);"
        " other processes opening it wait"
    )
    assert said[1].startswith(f"activity store {where}: upgraded from schema version {version} to {to} in ")


#: What the full-text index of an older SQLite file held: version 6 the text itself, version 7 the words
#: of today (marks kept), both read by unicode61 with its defaults (which split a word at its marks).
OLD_SQLITE_TEXT = {6: "SELECT id, subject FROM deliveries", 7: "SELECT rowid, text FROM deliveries_text"}


@pytest.mark.parametrize("version", sorted(OLD_SQLITE_TEXT))
def test_sqlite_version_6_and_7_files_index_their_words_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, version: int
) -> None:
    monkeypatch.setattr(_sql, "UPGRADE_PAGE", 1)  # a page at a time
    path = tmp_path / "activity.db"
    store = SQLiteActivityStore(path)
    store.apply(searched())
    store.close()
    raw = sqlite3.connect(path)
    try:
        raw.executescript(
            f"""CREATE TABLE old_text AS {OLD_SQLITE_TEXT[version]}; DROP TABLE deliveries_text;
            CREATE VIRTUAL TABLE deliveries_text USING fts5(text, tokenize = 'unicode61');
            INSERT INTO deliveries_text (rowid, text) SELECT * FROM old_text; DROP TABLE old_text;
            PRAGMA user_version = {version};"""
        )
    finally:
        raw.close()
    with caplog.at_level(logging.INFO, logger="inbound.activity"):
        upgraded = SQLiteActivityStore(path)
    try:
        assert found_words(upgraded) == FINDS
    finally:
        upgraded.close()
    upgrade_said(caplog, str(path), version, SCHEMA_VERSION)


# --- PostgreSQL specifics ---------------------------------------------------


def test_postgresql_version_1_database_is_upgraded(postgres_server: PostgresServer) -> None:
    dsn = postgres_server.new_database()
    store = PostgresActivityStore(dsn)
    store.apply([accented(3)])
    store.close()
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute("ALTER TABLE deliveries DROP COLUMN verdicts, DROP COLUMN mail_from_folded, DROP rcpt_to_folded")
        admin.execute("DROP FUNCTION inbound_search_vector")
        admin.execute("DROP TABLE claims")
        admin.execute("UPDATE inbound_activity_schema SET version = 1")
    store = PostgresActivityStore(dsn)
    try:
        assert found_by_address(store) == [[qid(3)]] * 4
        store.apply([ev(EventType.PROCESSED, 1, 1, summary=replace(parsed_summary(), verdicts=VERDICTS))])
        assert one(store).verdicts == VERDICTS
        assert [r.queue_id for r in store.list(text="invoice")] == [qid(1)]
        assert claim(store, {f"{qid(1)}-support": 0}).generations == {f"{qid(1)}-support": 1}
    finally:
        store.close()


def test_postgresql_addresses_compare_alike_whatever_the_database_locale(postgres_server: PostgresServer) -> None:
    name = f"c{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_server.dsn("postgres"), autocommit=True) as admin:  # lower() folds ASCII only here
        admin.execute(f"CREATE DATABASE {name} TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'")
    store = PostgresActivityStore(postgres_server.dsn(name))
    try:
        store.apply(searched())
        assert found_words(store) == FINDS  # to_tsvector() folded only ASCII here: "élodie" missed "ÉLODIE"
        store.apply([accented(20)])
        assert found_by_address(store) == [[qid(20)]] * 4
    finally:
        store.close()


#: How an older PostgreSQL database indexed: version 5 the subject by to_tsvector(), version 6 (before
#: positions) each delivery's words as a set, by array_to_tsvector().
OLD_POSTGRESQL_SEARCH = {
    5: (
        "CREATE FUNCTION inbound_search_vector(t text) RETURNS tsvector LANGUAGE sql"
        " AS $$ SELECT to_tsvector('simple', t) $$",
        "inbound_search_vector(subject)",
    ),
    6: (
        "CREATE FUNCTION inbound_search_vector(words text[]) RETURNS tsvector LANGUAGE sql IMMUTABLE STRICT"
        " AS $$ SELECT array_to_tsvector(words) $$",
        "inbound_search_vector(tsvector_to_array(search))",
    ),
}


@pytest.mark.parametrize("version", sorted(OLD_POSTGRESQL_SEARCH))
def test_postgresql_version_5_and_6_databases_index_their_words_again(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, version: int
) -> None:
    """And index the deliveries recorded after with today's inbound_search_vector(): the old one stayed."""
    monkeypatch.setattr(_sql, "UPGRADE_PAGE", 1)  # a page at a time
    dsn = postgres_server.new_database()
    store = PostgresActivityStore(dsn)
    recorded_after = searched()[-3:]
    store.apply(searched()[:-3])
    store.close()
    function, search = OLD_POSTGRESQL_SEARCH[version]
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute("DROP FUNCTION inbound_search_vector")
        admin.execute(function)
        admin.execute(f"UPDATE deliveries SET search = {search}")
        admin.execute("UPDATE inbound_activity_schema SET version = %s", (version,))
    with caplog.at_level(logging.INFO, logger="inbound.activity"):
        store = PostgresActivityStore(dsn)
    try:
        store.apply(recorded_after)
        assert found_words(store) == FINDS
    finally:
        store.close()
    upgrade_said(caplog, store.where, version, POSTGRESQL_SCHEMA_VERSION, len(SEARCHED) - len(recorded_after))


def test_postgresql_records_unsearchable_what_it_cannot_index(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_sql, "SEARCH_TEXT_BYTES", 1 << 30)  # as if the bound let through more than a tsvector holds
    store = PostgresActivityStore(postgres_server.new_database())
    try:
        to = megabyte_of_recipients(store, recipients=200)
        assert one(store).to == to
        assert store.list(text="overdue") == []
        assert [r.queue_id for r in store.list(text="lunch")] == [qid(2)]  # the rest of the batch is indexed
        store.apply([summarised(1, "Invoice 42 overdue", "alice@sender.test", ("help@in.test",), t(1))])
        assert [r.queue_id for r in store.list(text="overdue")] == [qid(1)]
    finally:
        store.close()


def test_postgresql_errors_name_the_server_never_the_password() -> None:
    dsn = "host=127.0.0.1 port=1 user=inbound password=hunter2 dbname=activity connect_timeout=5"
    with pytest.raises(StoreError, match=re.escape("host=127.0.0.1 port=1 dbname=activity user=inbound")) as raised:
        PostgresActivityStore(dsn)
    assert "hunter2" not in str(raised.value)
    with pytest.raises(StoreError, match="invalid dsn"):
        PostgresActivityStore("host=127.0.0.1 nonsense")


def test_postgresql_store_survives_a_dropped_connection(postgres_server: PostgresServer) -> None:
    dsn = postgres_server.new_database()
    store = PostgresActivityStore(dsn)
    try:
        store.apply(delivered_after_one_retry(1))
        with psycopg.connect(dsn, autocommit=True) as admin:  # as a server restart or failover would
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        with pytest.raises(StoreError):  # the call that finds it gone fails: the record stage retries
            store.apply(delivered_after_one_retry(2))
        store.apply(delivered_after_one_retry(2))
        assert [r.queue_id for r in store.list()] == [qid(2), qid(1)]
    finally:
        store.close()


# --- the events schema ------------------------------------------------------


def events_validator() -> Draft202012Validator:
    registry: Registry[Any] = Registry()
    for path in SCHEMAS.glob("*.schema.json"):
        schema = json.loads(path.read_text())
        registry = registry.with_resource(schema["$id"], Resource.from_contents(schema))
    schema = json.loads((SCHEMAS / "activity-event.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER)


def event_records(events: list[Event]) -> list[Record]:
    without_bodies = [replace(e, payload=None, payload_type=None) for e in events]  # bodies travel on `messages`
    return [Record("events", 0, n, *event_record(e), (), 0) for n, e in enumerate(without_bodies, 1)]


def test_stream_alerts_validate_and_are_not_kept_as_activity(store: ActivityStore) -> None:
    alert = Event(EventType.ENDPOINT_FAILING, "", "", "support", t(5), reason="endpoint down since ...")
    events_validator().validate(to_json(alert))
    key, value = event_record(alert)
    assert key == b"stream/support"
    Recorder(store).handle([Record("events", 0, 0, key, value, (), 0), *event_records(delivered_after_one_retry())])
    assert [r.delivery_id for r in store.list(limit=10)] == [f"{qid(1)}-support"]


def test_events_validate_against_the_schema() -> None:
    validator = events_validator()
    events = delivered_after_one_retry() + failed_then_retried()
    events.append(ev(EventType.BLOCKED, 1, 2, summary=parsed_summary(), reason="blocked"))
    for event in events:
        validator.validate(to_json(replace(event, payload=None, payload_type=None)))
    processed = Summary(t(1), "alice@sender.test", ("help@in.test",), "Invoice 42", 2048, 1)
    validator.validate(to_json(ev(EventType.PROCESSED, summary=processed)))
    validator.validate(to_json(ev(EventType.PROCESSED, summary=replace(processed, verdicts=VERDICTS))))
    bad = [
        {**to_json(ev(EventType.QUEUED, summary=envelope_summary())), "extra": 1},
        {**to_json(ev(EventType.PROCESSED)), "payload": {"subject": "x"}},  # bodies travel on `messages`
        to_json(ev(EventType.ATTEMPT)),  # an attempt event without its attempt
        to_json(ev(EventType.RETRYING, reason="HTTP 500")),  # without next_attempt_at
        to_json(ev(EventType.RETRY_REQUESTED)),  # a retry cannot be generation 0
        {**to_json(ev(EventType.DELIVERED)), "type": "bounced"},
        {**to_json(ev(EventType.DELIVERED)), "queue_id": "lower-case"},
    ]
    for instance in bad:
        with pytest.raises(ValidationError):
            validator.validate(instance)

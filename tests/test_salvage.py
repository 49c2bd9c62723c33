"""Reading rows out of damaged SQLite files, page by page (inbound.ops.salvage), on real SQLite files."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path

from inbound.activity import SQLiteActivityStore
from inbound.activity.rebuild import rebuild
from inbound.bus import TOPICS
from inbound.bus.embedded import EmbeddedBus
from inbound.config import StreamSettings
from inbound.datadir import DataDir
from inbound.delivery.deliver import deliveries_from
from inbound.delivery.outbox import Delivery, Outbox
from inbound.edge.spool import Spool
from inbound.envelope import Envelope, Recipient
from inbound.events import Event, EventType, Summary
from inbound.ops.rawmessage import find_received
from inbound.ops.recover import Recovery
from inbound.ops.salvage import salvage_rows
from inbound.processing.process import Processor
from inbound.records import (
    EVENTS,
    JSON,
    MESSAGES,
    RECEIVED,
    MessageRecord,
    decode_event,
    decode_message,
    event_record,
    message_record,
    received_record,
)
from inbound.routing import RoutingTable

from .harness import SECRET, RecordingProducer


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
    rows = salvage_rows(path, columns=(5,))
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
    rows = salvage_rows(path, columns=(5,))
    assert 0 < len(rows) < 60
    for rowid, values in rows.items():  # whatever comes back is intact
        assert values[1] == f"row {rowid}"
        assert values[2] == bytes([rowid % 256]) * (9000 if rowid % 3 == 0 else 50)


def test_waiting_deliveries_are_salvaged_from_an_outbox_with_rows_of_both_ages(tmp_path: Path) -> None:
    """Rows written before the outbox had ``content_type`` keep 12 columns on disk, newer ones 13 or 14;
    payloads are in the row (before ``payloads``) or in ``payloads``."""
    data = DataDir(tmp_path / "data")
    data.quarantine.mkdir(parents=True)
    damaged = data.quarantine / "outbox.db.20261123T000000"
    old = sqlite3.connect(damaged)
    old.execute(
        "CREATE TABLE deliveries (delivery_id TEXT PRIMARY KEY, stream TEXT NOT NULL, queue_id TEXT NOT NULL,"
        " generation INTEGER NOT NULL, payload BLOB, attempts INTEGER NOT NULL DEFAULT 0, steps INTEGER NOT NULL"
        " DEFAULT 0, due_at REAL NOT NULL, added_at REAL NOT NULL, done INTEGER NOT NULL DEFAULT 0,"
        " lease_owner TEXT, lease_until REAL NOT NULL DEFAULT 0)"
    )
    old.execute("INSERT INTO deliveries VALUES ('Q1-support', 'support', 'Q1', 0, X'7B7D', 1, 1, 0, 0, 0, NULL, 0)")
    old.commit()
    old.close()
    outbox = Outbox(damaged)  # adds the column, as a newer inbound does on start
    form = Delivery("Q2-support", "support", "Q2", 0, b"a=1", 0, 0, 0.0, "application/x-www-form-urlencoded")
    outbox.add([form])
    outbox.close()
    before_payloads = sqlite3.connect(damaged)  # as an outbox of before ``payloads`` wrote a delivery
    before_payloads.execute(
        "INSERT INTO deliveries (delivery_id, stream, queue_id, generation, payload, due_at, added_at)"
        " VALUES ('Q3-support', 'support', 'Q3', 0, X'5B5D', 0, 0)"
    )
    before_payloads.commit()
    before_payloads.close()
    bus = EmbeddedBus(data.bus)
    bus.ensure_topics(TOPICS)
    store = SQLiteActivityStore(data.activity)
    Recovery(data.quarantine, Spool(data), bus, store).run()
    saved = {m.delivery_id: (m.content_type, m.body) for m in map(decode_message, bus.read_all("messages"))}
    assert saved == {
        "Q1-support": ("application/json", b"{}"),
        "Q2-support": ("application/x-www-form-urlencoded", b"a=1"),
        "Q3-support": ("application/json", b"[]"),
    }
    store.close()
    bus.close()


SUPPORT = StreamSettings("support", ("*@in.test",), "https://a.test/", SECRET)


def quarantine_bus(data: DataDir, messages: Mapping[str, Sequence[EventType]]) -> Path:
    """An old bus holding each queue id's ``received`` and ``messages`` records and *messages*' events for it,
    the activity store rebuilt from it, and the bus then moved to quarantine as damaged; its new path."""
    data.root.mkdir(parents=True)
    old = EmbeddedBus(data.bus)
    old.ensure_topics(TOPICS)
    producer = old.producer()
    for queue_id, events in messages.items():
        recipients = (Recipient("x@in.test", "support", None),)
        envelope = Envelope(
            queue_id, "a@sender.test", recipients, "127.0.0.1:1", "h", False, "2026-11-22T10:00:00.000Z"
        )
        key, value, headers = received_record(envelope, b"Subject: s\r\n\r\nbody\r\n")
        producer.send(RECEIVED, value, key=key, headers=headers)
        key, value, headers = message_record(MessageRecord(f"{queue_id}-support", "support", 0, JSON, b"{}"))
        producer.send(MESSAGES, value, key=key, headers=headers)
        summary = Summary("2026-11-22T10:00:00.000Z", "a@sender.test", ("x@in.test",))
        for kind in events:
            event = Event(kind, f"{queue_id}-support", queue_id, "support", "2026-11-22T10:00:01.000Z", summary=summary)
            key, value = event_record(event)
            producer.send(EVENTS, value, key=key)
    producer.flush()
    producer.close()
    store = SQLiteActivityStore(data.activity)
    rebuild(old, store)
    store.close()
    old.close()
    checkpoint = sqlite3.connect(data.bus)
    checkpoint.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    checkpoint.close()
    data.quarantine.mkdir()
    damaged = data.quarantine / "bus.db.20261201T000000"
    data.bus.rename(damaged)
    for suffix in ("-wal", "-shm"):
        Path(f"{data.bus}{suffix}").unlink(missing_ok=True)
    return damaged


def recover(data: DataDir) -> tuple[EmbeddedBus, list[str]]:
    """``inbound recover`` on a fresh bus; the bus and what the report says was skipped."""
    bus = EmbeddedBus(data.bus)
    bus.ensure_topics(TOPICS)
    store = SQLiteActivityStore(data.activity)
    report = Recovery(data.quarantine, Spool(data), bus, store).run()
    store.close()
    assert not report.lost, report.lost
    return bus, report.skipped


def test_a_recovered_bus_keeps_a_final_message_to_be_read_but_does_not_start_it_again(tmp_path: Path) -> None:
    """Its records would be parsed and POSTed again once the outbox has forgotten the delivery (it keeps
    done rows for days; the embedded bus keeps records for ever); left out, its raw message, a bypass of it
    and its payload in a rebuilt activity store would be gone."""
    data = DataDir(tmp_path / "data")
    final, waiting = "01JD0000000000000000000001", "01JD0000000000000000000002"
    quarantine_bus(data, {final: [EventType.QUEUED, EventType.DELIVERED], waiting: [EventType.QUEUED]})
    bus, skipped = recover(data)
    assert [r.key.decode() for r in bus.read_all(RECEIVED)] == [final, waiting]
    assert find_received(bus, final) is not None  # its raw message, and what a bypass sends
    messages = list(bus.read_all(MESSAGES))
    assert [d.delivery_id for d in deliveries_from(messages)] == [f"{waiting}-support"]
    producer = RecordingProducer()
    processor = Processor(RoutingTable.from_streams([SUPPORT]), producer, [SUPPORT])
    processor.handle(list(bus.read_all(RECEIVED)))
    assert [decode_event(value).queue_id for topic, value in producer.sent if topic == EVENTS] == [waiting]
    # The events all go back: the activity store is a view of the bus, and must stay rebuildable from it.
    assert len([decode_event(r.value) for r in bus.read_all(EVENTS)]) == 3
    assert any("2 of them of messages already final" in line for line in skipped), skipped
    bus.close()


def test_a_received_record_whose_key_was_damaged_is_published_with_its_own_key_and_the_rest_with_it(
    tmp_path: Path,
) -> None:
    data = DataDir(tmp_path / "data")
    queue_ids = [f"01JD000000000000000000000{n}" for n in (1, 2, 3)]
    damaged = quarantine_bus(data, dict.fromkeys(queue_ids, (EventType.QUEUED,)))
    raw = bytearray(damaged.read_bytes())
    at = raw.find(queue_ids[1].encode() + b"inbound-received")  # the second message's key, then its value
    assert at > 0
    raw[at : at + 4] = b"\xff\xfe\xff\xfe"  # a damaged sector: the same length, other bytes
    damaged.write_bytes(bytes(raw))
    bus, _ = recover(data)
    assert [r.key.decode() for r in bus.read_all(RECEIVED)] == queue_ids  # keyed again by the envelope's queue id
    bus.close()


def test_an_outbox_row_damaged_past_its_checks_is_named_and_the_rest_recovered(tmp_path: Path) -> None:
    data = DataDir(tmp_path / "data")
    data.quarantine.mkdir(parents=True)
    damaged = data.quarantine / "outbox.db.20261123T000000"
    outbox = Outbox(damaged)
    outbox.add([Delivery(f"Q{n}-support", "support", f"Q{n}", 0, b"{}", 0, 0, 0.0) for n in (1, 2)])
    outbox.close()
    flipped = sqlite3.connect(damaged)  # one payload read back as TEXT: a flipped bit in its serial type
    flipped.execute("UPDATE payloads SET payload = CAST(payload AS TEXT) WHERE delivery_id = 'Q1-support'")
    flipped.commit()
    flipped.close()
    bus = EmbeddedBus(data.bus)
    bus.ensure_topics(TOPICS)
    store = SQLiteActivityStore(data.activity)
    report = Recovery(data.quarantine, Spool(data), bus, store).run()
    assert [decode_message(r).delivery_id for r in bus.read_all(MESSAGES)] == ["Q2-support"]
    assert any("unreadable (expected a BLOB column, found str)" in line for line in report.lost), report.lost
    store.close()
    bus.close()

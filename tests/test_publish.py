"""The publisher (inbound.edge.publish), on a real spool and a real embedded bus: when its own work fails."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from inbound.bus.embedded import EmbeddedBus
from inbound.datadir import DataDir
from inbound.edge.publish import Publisher
from inbound.edge.spool import Spool, decode_entries
from inbound.envelope import Envelope, Recipient
from inbound.events import EventType
from inbound.ids import new_queue_id
from inbound.records import EVENTS, RECEIVED, decode_event, decode_received

from .edge_harness import spool_envelope
from .harness import wait_for


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(DataDir(tmp_path))


@pytest.fixture
def bus(tmp_path: Path) -> EmbeddedBus:
    return EmbeddedBus(tmp_path / "bus.db")


def spooled(spool: Spool) -> str:
    """Spool one message; its queue id."""
    envelope = spool_envelope()
    spool.put(envelope, b"Subject: s\r\n\r\nbody\r\n")
    return envelope.queue_id


def publish_everything(spool: Spool, bus: EmbeddedBus, record_limit: int | None = None) -> None:
    """Run the publisher on its own thread, as the edge does, until the spool is empty."""
    publisher = Publisher(spool, bus, record_limit)
    publisher.start()
    try:
        wait_for(lambda: not spool.pending(), 10, "every spool file published and removed")
    finally:
        publisher.stop()


def test_an_unexpected_error_is_logged_and_publishing_goes_on(
    spool: Spool, bus: EmbeddedBus, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    queue_id = spooled(spool)
    removing = spool.remove
    failures = [PermissionError(errno.EACCES, "injected")]  # not the bus: a bug, or the spool's filesystem

    def remove(path: Path) -> None:
        if failures:
            raise failures.pop()
        removing(path)

    monkeypatch.setattr(spool, "remove", remove)
    publish_everything(spool, bus)
    assert "stage=publish unexpected error" in caplog.text
    # Published again after the failed removal, as after a crash: the stages behind are idempotent.
    assert [decode_received(record.value)[0].queue_id for record in bus.read_all(RECEIVED)] == [queue_id] * 2


def test_a_spool_whose_leftovers_cannot_be_cleaned_is_published_all_the_same(
    spool: Spool, bus: EmbeddedBus, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    queue_id = spooled(spool)

    def clean_tmp(older_than: float = 3600.0) -> int:
        raise PermissionError(errno.EACCES, "injected", str(spool.tmp))

    monkeypatch.setattr(spool, "clean_tmp", clean_tmp)
    publish_everything(spool, bus)
    assert f"stage=publish cannot clean {spool.tmp}" in caplog.text
    assert [decode_received(record.value)[0].queue_id for record in bus.read_all(RECEIVED)] == [queue_id]


def test_an_entry_larger_than_the_bus_takes_is_failed_and_set_aside_and_the_next_published(
    spool: Spool, bus: EmbeddedBus, tmp_path: Path
) -> None:
    def envelope() -> Envelope:
        return Envelope(
            new_queue_id(), "a@sender.test", (Recipient("x@in.test", "support", None),), "127.0.0.1:1", "h", False, "t"
        )

    large, small = envelope(), envelope()
    spool.put(large, b"Subject: s\r\n\r\n" + b"x" * 4000 + b"\r\n")
    spool.put(small, b"Subject: s\r\n\r\nbody\r\n")
    publish_everything(spool, bus, record_limit=3000)  # as a Kafka topic's, whose broker would refuse it every time
    assert [decode_received(record.value)[0].queue_id for record in bus.read_all(RECEIVED)] == [small.queue_id]
    events = [decode_event(record.value) for record in bus.read_all(EVENTS)]
    assert sorted((e.queue_id, e.type.value) for e in events) == sorted(
        [(large.queue_id, "queued"), (large.queue_id, "failed"), (small.queue_id, "queued")]
    )
    (failed,) = [e for e in events if e.type is EventType.FAILED]
    assert "larger than the bus takes (3,000)" in (failed.reason or "")
    kept = tmp_path / "quarantine" / f"too-large-{large.queue_id}"
    assert [entry.envelope for entry in decode_entries(kept, kept.read_bytes())] == [large]

"""The publisher (inbound.edge.publish), on a real spool and a real embedded bus: when its own work fails."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from inbound.bus.embedded import EmbeddedBus
from inbound.datadir import DataDir
from inbound.edge.publish import Publisher
from inbound.edge.spool import Spool
from inbound.envelope import Envelope
from inbound.ids import new_queue_id
from inbound.records import RECEIVED, decode_received

from .harness import wait_for


def test_an_unexpected_error_is_logged_and_publishing_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(DataDir(tmp_path))
    bus = EmbeddedBus(tmp_path / "bus.db")
    envelope = Envelope(new_queue_id(), "a@sender.test", (), "127.0.0.1:1", "h", False, "t")
    spool.put(envelope, b"Subject: s\r\n\r\nbody\r\n")
    removing = spool.remove
    failures = [PermissionError(errno.EACCES, "injected")]  # not the bus: a bug, or the spool's filesystem

    def remove(path: Path) -> None:
        if failures:
            raise failures.pop()
        removing(path)

    monkeypatch.setattr(spool, "remove", remove)
    publisher = Publisher(spool, bus)
    publisher.start()
    try:
        wait_for(lambda: not spool.pending(), 10, "the spool file published and removed")
    finally:
        publisher.stop()
    assert "stage=publish unexpected error" in caplog.text
    # Published again after the failed removal, as after a crash: the stages behind are idempotent.
    queue_ids = [decode_received(record.value)[0].queue_id for record in bus.read_all(RECEIVED)]
    assert queue_ids == [envelope.queue_id] * 2

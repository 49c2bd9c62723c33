"""The embedded bus reads a backlog of large records a few at a time, never a whole batch by count.

Every stage polls up to 100 records (the record stage 500): a backlog of large messages read by
count alone held 100 of them at once, 2.5 GB for 25 MB messages. The cap is made small here
so that a few hundred KB show it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from inbound.bus import Record, embedded
from inbound.bus.embedded import EmbeddedBus

CAP = 1_000_000
LARGE = 300_000


@pytest.fixture
def bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> EmbeddedBus:
    monkeypatch.setattr(embedded, "BATCH_BYTES", CAP)
    bus = EmbeddedBus(tmp_path / "bus.db")
    bus.ensure_topics(["received", "events"])
    producer = bus.producer()
    for n in range(30):  # the two topics interleaved, as the record stage reads them
        producer.send("received", bytes([n]) * LARGE, key=b"k")
        producer.send("events", f"event-{n}".encode(), key=b"k")
    producer.flush()
    producer.close()
    return bus


def test_a_poll_holds_at_most_the_cap_and_one_record_and_the_backlog_is_read_whole_and_once(bus: EmbeddedBus) -> None:
    consumer = bus.consumer("g", ["received", "events"])
    polls: list[list[Record]] = []
    deadline = time.monotonic() + 30
    while sum(map(len, polls)) < 60:
        # Nothing is written meanwhile: a poll cut short by size must not be taken for the end.
        assert time.monotonic() < deadline, f"stalled after {sum(map(len, polls))} of 60 records"
        polls.append(consumer.poll(timeout=0.5, max_records=100))
    consumer.close()
    held = [sum(len(r.value) for r in poll) for poll in polls if poll]
    assert max(held) < CAP + LARGE
    assert len(held) >= 60 * LARGE // 2 // (CAP + LARGE)  # several polls, not one of 60 records
    records = [r for poll in polls for r in poll]
    assert [r.offset for r in records] == sorted(r.offset for r in records)  # in order, each once
    assert [r.value[0] for r in records if r.topic == "received"] == list(range(30))
    assert [r.value for r in records if r.topic == "events"] == [f"event-{n}".encode() for n in range(30)]


def test_a_full_read_of_a_topic_is_cut_the_same_way_and_misses_nothing(
    bus: EmbeddedBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    cut = embedded._first
    reads: list[list[tuple[int, str, bytes, bytes, str, int]]] = []

    def watched(rows: Iterable[tuple[int, str, bytes, bytes, str, int]], most: int) -> list[Any]:
        reads.append(cut(rows, most))
        return reads[-1]

    monkeypatch.setattr(embedded, "_first", watched)
    assert [r.value[0] for r in bus.read_all("received")] == list(range(30))
    assert max(sum(len(row[3]) for row in read) for read in reads) < CAP + LARGE
    assert len(reads) > 3

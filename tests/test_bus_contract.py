"""The bus contract (inbound/bus/_base.py), run against every backend through ``bus_factory``.

No sleeps for synchronisation: every wait polls until what it expects arrives, or a
deadline passes and the test fails saying what was missing.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable

import pytest

from inbound.bus import Bus, Consumer, Producer, Record

DEADLINE = 60.0  # seconds any single expectation may take (a Kafka group join is ~1-3 s)
TOPIC = "received"

MakeBus = Callable[[], Bus]


def consume(consumer: Consumer, count: int, *, timeout: float = DEADLINE, max_records: int = 100) -> list[Record]:
    """Poll until at least *count* records came back; fail at the deadline."""
    got: list[Record] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        assert time.monotonic() < deadline, f"got {len(got)} of {count} records in {timeout:.0f}s: {values(got)}"
        got += consumer.poll(timeout=0.5, max_records=max_records)
    return got


def consume_in_new_group(bus: Bus, count: int, *, max_records: int = 100) -> list[Record]:
    """:func:`consume` with a consumer of group ``g`` opened for it and closed after."""
    consumer = bus.consumer("g", [TOPIC])
    try:
        return consume(consumer, count, max_records=max_records)
    finally:
        consumer.close()


def consume_until(consumer: Consumer, wanted: set[bytes], *, timeout: float = DEADLINE) -> list[Record]:
    """Poll until every value in *wanted* was seen (others may come too); fail at the deadline."""
    got: list[Record] = []
    deadline = time.monotonic() + timeout
    while not wanted <= set(values(got)):
        missing = sorted(wanted - set(values(got)))
        assert time.monotonic() < deadline, f"still missing {missing[:10]} after {timeout:.0f}s"
        got += consumer.poll(timeout=0.5)
    return got


def values(records: list[Record]) -> list[bytes]:
    return [r.value for r in records]


def produce(bus: Bus, items: list[tuple[bytes, bytes]], topic: str = TOPIC) -> None:
    """Send (key, value) pairs and flush."""
    producer = bus.producer()
    try:
        for key, value in items:
            producer.send(topic, value, key=key)
        producer.flush()
    finally:
        producer.close()


def numbered(prefix: str, count: int, keys: int = 1) -> list[tuple[bytes, bytes]]:
    return [(f"key-{i % keys}".encode(), f"{prefix}-{i}".encode()) for i in range(count)]


@pytest.fixture
def bus(bus_factory: MakeBus) -> Bus:
    bus = bus_factory()
    bus.ensure_topics([TOPIC, "events"])
    return bus


def test_produce_flush_then_consume(bus: Bus) -> None:
    produce(bus, numbered("v", 5, keys=5))
    got = consume_in_new_group(bus, 5)
    assert sorted(values(got)) == [f"v-{i}".encode() for i in range(5)]
    assert {r.topic for r in got} == {TOPIC}  # the logical name, whatever the backend calls it
    assert all(r.key.startswith(b"key-") and r.timestamp_ms > 0 for r in got)


def test_records_with_the_same_key_keep_their_order(bus: Bus) -> None:
    items = numbered("v", 60, keys=6)
    produce(bus, items)
    got = consume_in_new_group(bus, 60, max_records=7)
    for key in {k for k, _ in items}:
        assert [r.value for r in got if r.key == key] == [v for k, v in items if k == key]


def test_a_consumer_of_two_topics_gets_each_record_once_in_its_topic_s_order(bus: Bus) -> None:
    for batch in range(4):  # the topics interleaved, as the record stage reads messages and events
        produce(bus, numbered(f"m{batch}", 9), topic=TOPIC)
        produce(bus, numbered(f"e{batch}", 5), topic="events")
    consumer = bus.consumer("g", [TOPIC, "events"])
    try:
        got = consume(consumer, 56, max_records=7)
        got += consumer.poll(timeout=1.0)  # anything else would come now
    finally:
        consumer.close()
    for topic, prefix, count in ((TOPIC, "m", 9), ("events", "e", 5)):
        expected = [f"{prefix}{b}-{i}".encode() for b in range(4) for i in range(count)]
        assert [r.value for r in got if r.topic == topic] == expected


def test_producers_of_one_bus_send_from_two_threads_and_one_closing_leaves_the_other_working(bus: Bus) -> None:
    # The stages of a process each hold a producer of the same bus (on Kafka, one client underneath).
    first, second = bus.producer(), bus.producer()

    def send(producer: Producer, prefix: str) -> None:
        for batch in range(5):
            for key, value in numbered(f"{prefix}{batch}", 20, keys=4):
                producer.send(TOPIC, value, key=key)
            producer.flush()

    threads = [threading.Thread(target=send, args=(p, name)) for p, name in ((first, "a"), (second, "b"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE)
    first.close()
    try:
        second.send(TOPIC, b"after", key=b"k")
        second.flush()
    finally:
        second.close()
    got = consume_in_new_group(bus, 201)
    expected = {f"{p}{b}-{i}".encode() for p in "ab" for b in range(5) for i in range(20)} | {b"after"}
    assert sorted(values(got)) == sorted(expected)


def test_committed_records_are_not_delivered_again_to_the_group(bus: Bus) -> None:
    produce(bus, numbered("old", 5, keys=5))
    first = bus.consumer("g", [TOPIC])
    try:
        consume(first, 5)
        first.commit()
    finally:
        first.close()
    produce(bus, numbered("new", 3, keys=3))
    second = bus.consumer("g", [TOPIC])
    try:
        got = consume(second, 3)
        got += second.poll(timeout=1.0)  # anything else would come now
    finally:
        second.close()
    assert sorted(values(got)) == [b"new-0", b"new-1", b"new-2"]


def test_uncommitted_records_come_back_after_rewind_and_after_a_restart(bus: Bus) -> None:
    produce(bus, numbered("done", 4, keys=4))
    consumer = bus.consumer("g", [TOPIC])
    try:
        consume(consumer, 4)
        consumer.commit()
        produce(bus, numbered("open", 3, keys=3))
        assert sorted(values(consume(consumer, 3))) == [b"open-0", b"open-1", b"open-2"]
        consumer.rewind()
        again = consume(consumer, 3)
        again += consumer.poll(timeout=0.5)
        assert sorted(values(again)) == [b"open-0", b"open-1", b"open-2"]
    finally:
        consumer.close()  # without commit
    restarted = bus.consumer("g", [TOPIC])
    try:
        after = consume(restarted, 3)
        after += restarted.poll(timeout=0.5)
    finally:
        restarted.close()
    assert sorted(values(after)) == [b"open-0", b"open-1", b"open-2"]


def test_a_new_group_starts_at_the_earliest_record(bus: Bus) -> None:
    produce(bus, numbered("v", 6, keys=3))
    first = bus.consumer("g1", [TOPIC])
    try:
        consume(first, 6)
        first.commit()
    finally:
        first.close()
    other = bus.consumer("g2", [TOPIC])  # created after everything was sent and committed by g1
    try:
        got = consume(other, 6)
    finally:
        other.close()
    assert sorted(values(got)) == sorted(v for _, v in numbered("v", 6, keys=3))


def test_read_all_returns_every_record_in_order_per_key(bus: Bus) -> None:
    items = numbered("v", 40, keys=4)
    produce(bus, items)
    produce(bus, [(b"other", b"elsewhere")], topic="events")
    records = list(bus.read_all(TOPIC))
    assert len(records) == 40
    assert {r.topic for r in records} == {TOPIC}
    assert [r.value for r in records if r.key == b"key-1"] == [v for k, v in items if k == b"key-1"]
    assert [r.value for r in bus.read_all("events")] == [b"elsewhere"]


def test_read_all_stops_at_the_end_it_saw_when_it_started(bus: Bus) -> None:
    produce(bus, numbered("before", 5))
    reader = bus.read_all(TOPIC)
    first = next(reader)
    produce(bus, numbered("after", 5))
    rest = list(reader)
    assert [first.value, *values(rest)] == [f"before-{i}".encode() for i in range(5)]


def test_a_follower_reads_everything_once_then_only_what_is_new(bus: Bus) -> None:
    produce(bus, numbered("old", 6, keys=3))
    follower = bus.follow(TOPIC)
    try:
        reader = follower.read_new()
        first = next(reader)  # the read has begun: its end is fixed
        produce(bus, numbered("during", 2))
        assert sorted(values([first, *reader])) == sorted(v for _, v in numbered("old", 6, keys=3))
        assert sorted(values(list(follower.read_new()))) == [b"during-0", b"during-1"]
        assert list(follower.read_new()) == []
        produce(bus, numbered("new", 4, keys=2))
        assert sorted(values(list(follower.read_new()))) == sorted(v for _, v in numbered("new", 4, keys=2))
        assert list(follower.read_new()) == []
    finally:
        follower.close()


def test_lag_counts_what_the_group_has_not_committed(bus: Bus) -> None:
    assert bus.lag("g", TOPIC) == 0
    produce(bus, numbered("v", 10, keys=5))
    assert bus.lag("g", TOPIC) == 10  # a group that never committed has everything ahead of it
    consumer = bus.consumer("g", [TOPIC])
    try:
        consume(consumer, 10)
        assert bus.lag("g", TOPIC) == 10  # polled is not done
        consumer.commit()
        assert bus.lag("g", TOPIC) == 0
        produce(bus, numbered("more", 3, keys=3))
        assert bus.lag("g", TOPIC) == 3
        assert bus.lag("another-group", TOPIC) == 13
    finally:
        consumer.close()


def test_headers_round_trip(bus: Bus) -> None:
    headers = (("delivery-id", b"d-1"), ("binary", bytes(range(256))), ("delivery-id", b"second"), ("empty", b""))
    producer = bus.producer()
    try:
        producer.send(TOPIC, b"with", key=b"k", headers=headers)
        producer.send(TOPIC, b"without", key=b"k")
        producer.flush()
    finally:
        producer.close()
    got = consume_in_new_group(bus, 2)
    by_value = {r.value: r for r in got}
    assert by_value[b"with"].headers == headers
    assert by_value[b"with"].header("delivery-id") == b"d-1"
    assert by_value[b"with"].header("missing") is None
    assert by_value[b"without"].headers == ()


@pytest.mark.timeout(300)  # the slowest test here: ~20 MB each way (+ lz4 on Kafka)
def test_a_20_mb_record_round_trips(bus: Bus) -> None:
    # Larger than a Kafka consumer's fetch (bus/kafka.py): read whole, between smaller records.
    value = os.urandom(20 * 1024 * 1024)
    produce(bus, [(b"big", b"small before it"), (b"big", value), (b"big", b"small after it")])
    consumer = bus.consumer("g", [TOPIC])
    try:
        got = consume(consumer, 3)
        consumer.commit()
    finally:
        consumer.close()
    assert [len(r.value) for r in got] == [15, len(value), 14]
    assert hashlib.sha256(got[1].value).digest() == hashlib.sha256(value).digest()
    assert [len(r.value) for r in bus.read_all(TOPIC)] == [15, len(value), 14]


def test_ensure_topics_is_idempotent(bus_factory: MakeBus) -> None:
    bus = bus_factory()
    bus.ensure_topics([TOPIC, "events"])
    bus.ensure_topics([TOPIC, "events"])
    produce(bus, [(b"k", b"kept")])
    again = bus_factory()  # another process starting up: its topics already exist
    again.ensure_topics([TOPIC, "events", "control"])
    assert values(list(again.read_all(TOPIC))) == [b"kept"]


def test_two_members_of_a_group_together_see_every_record(bus: Bus) -> None:
    items = numbered("v", 60, keys=12)
    wanted = {v for _, v in items}
    produce(bus, items[:30])
    members = [bus.consumer("g", [TOPIC]), bus.consumer("g", [TOPIC])]
    seen: list[list[bytes]] = [[], []]
    done = threading.Event()
    errors: list[Exception] = []

    def member(index: int) -> None:
        try:
            while not done.is_set():
                records = members[index].poll(timeout=0.2, max_records=5)
                seen[index].extend(values(records))
                if records:
                    members[index].commit()
        except Exception as exc:  # noqa: BLE001 -- reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=member, args=(i,)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    try:
        produce(bus, items[30:])  # while both members are running
        deadline = time.monotonic() + DEADLINE
        while not wanted <= set(seen[0]) | set(seen[1]) and not errors:
            assert time.monotonic() < deadline, f"missing {sorted(wanted - set(seen[0]) - set(seen[1]))[:10]}"
            done.wait(0.1)
    finally:
        done.set()
        for thread in threads:
            thread.join(DEADLINE)
        for consumer in members:
            consumer.close()
    assert not errors, errors
    assert wanted <= set(seen[0]) | set(seen[1])

"""Operator actions (retry, replay) on a real embedded bus and a real SQLite activity store."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from inbound.activity import ActivityStore, SQLiteActivityStore
from inbound.activity.record import Recorder
from inbound.bus import Bus
from inbound.bus.embedded import EmbeddedBus, EmbeddedProducer
from inbound.errors import BusError
from inbound.events import Event, EventType, Status, Summary
from inbound.ops import actions
from inbound.ops.actions import ActionRefused, replay, replay_window, retry
from inbound.records import JSON, decode_event, decode_message

STREAMS = {"support", "sales"}  # configured


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[Bus]:
    bus = EmbeddedBus(tmp_path / "bus.db")
    bus.ensure_topics(["messages", "events"])
    yield bus
    bus.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ActivityStore]:
    store = SQLiteActivityStore(tmp_path / "activity.db")
    yield store
    store.close()


def qid(n: int) -> str:
    return f"01JD{n:022d}"


def at(minute: int) -> str:
    return f"2026-11-23T09:{minute:02d}:00.000Z"


def finished(store: ActivityStore, n: int, status: EventType, minute: int, *, stream: str = "support") -> str:
    """A message received at 09:<minute> that ended with *status*; its delivery id."""
    did = f"{qid(n)}-{stream}"
    summary = Summary(at(minute), "alice@sender.test", ("help@in.test",), f"message {n}", 100, 0)
    body = f'{{"n":{n}}}'.encode()
    store.apply(
        [
            Event(EventType.PROCESSED, did, qid(n), stream, at(minute), summary=summary),
            Event(EventType.PROCESSED, did, qid(n), stream, at(minute), payload=body, payload_type=JSON),
            Event(status, did, qid(n), stream, at(minute), reason="HTTP 403" if status is EventType.FAILED else None),
        ]
    )
    return did


def test_retry_sends_the_stored_payload_as_the_next_generation(bus: Bus, store: ActivityStore) -> None:
    did = finished(store, 1, EventType.FAILED, 0)
    assert retry(bus, store, did, streams=STREAMS, requested_by="ops@example.test") == 1
    (message,) = [decode_message(r) for r in bus.read_all("messages")]
    assert (message.delivery_id, message.generation, message.content_type, message.body) == (did, 1, JSON, b'{"n":1}')
    (event,) = [decode_event(r.value) for r in bus.read_all("events")]
    assert (event.type, event.generation, event.reason) == (
        EventType.RETRY_REQUESTED,
        1,
        "retry requested by ops@example.test",
    )


def test_retry_refuses_what_it_cannot_do(bus: Bus, store: ActivityStore) -> None:
    delivered = finished(store, 1, EventType.DELIVERED, 0)
    with pytest.raises(ActionRefused, match="is delivered; only failed messages can be retried"):
        retry(bus, store, delivered, streams=STREAMS)
    with pytest.raises(ActionRefused, match="no message with id 'nope'"):
        retry(bus, store, "nope", streams=STREAMS)
    # A stream a reload removed: its retried delivery would wait, Queued, for a deliverer that never comes.
    removed = finished(store, 2, EventType.FAILED, 0, stream="sales")
    with pytest.raises(ActionRefused, match="stream 'sales' is no longer configured; add it back to retry it"):
        retry(bus, store, removed, streams={"support"})
    assert list(bus.read_all("messages")) == []


def test_replay_sends_a_window_again_and_the_activity_log_shows_it(
    bus: Bus, store: ActivityStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(actions, "REPLAY_BATCH", 1)
    before = finished(store, 1, EventType.DELIVERED, 0)
    first = finished(store, 2, EventType.DELIVERED, 10)
    failed = finished(store, 3, EventType.FAILED, 20)
    unparsed = f"{qid(6)}-support"  # failed before it was parsed: no payload, nothing to send again
    queued = Summary(at(25), "alice@sender.test", ("help@in.test",))
    store.apply([
        Event(EventType.QUEUED, unparsed, qid(6), "support", at(25), summary=queued),
        Event(EventType.FAILED, unparsed, qid(6), "support", at(25), reason="cannot parse message"),
    ])  # fmt: skip
    finished(store, 4, EventType.DELIVERED, 30, stream="sales")  # another stream
    after = finished(store, 5, EventType.DELIVERED, 40)
    window = replay_window(store, "support", at(5), at(40))
    assert [r.delivery_id for r in window] == [first, failed]
    assert [r.delivery_id for r in replay_window(store, "support", at(5), at(40), "delivered")] == [first]
    assert [r.delivery_id for r in replay_window(store, "support", at(0))] == [before, first, failed, after]

    sent: list[int] = []
    assert replay(bus, store, window, sent=sent.append) == actions.Replayed({first: 1, failed: 1})
    assert sent == [1, 1]  # a payload at a time here (REPLAY_BATCH), each flushed before the next is read
    messages = [decode_message(r) for r in bus.read_all("messages")]
    assert [(m.delivery_id, m.generation, m.body) for m in messages] == [
        (first, 1, b'{"n":2}'),
        (failed, 1, b'{"n":3}'),
    ]
    recorder = Recorder(store)
    recorder.handle(list(bus.read_all("events")))
    shown = [shown_as(store, did) for did in (first, failed)]
    assert shown == [(Status.QUEUED, 1, "replay requested by cli")] * 2
    recorder.handle(list(bus.read_all("messages")))
    assert [shown_as(store, did)[:2] for did in (first, failed)] == [(Status.PROCESSED, 1)] * 2


def shown_as(store: ActivityStore, delivery_id: str) -> tuple[Status, int, str | None]:
    record = store.get(delivery_id)
    assert record is not None
    return record.status, record.generation, record.reason


def test_a_second_action_before_the_first_is_recorded_is_refused_not_dropped(bus: Bus, store: ActivityStore) -> None:
    """Both once took generation 1 from the lagging store: the deliverer kept one, both were accepted."""
    did = finished(store, 1, EventType.FAILED, 0)
    debug = "https://debug.example.test/hook"
    assert replay(bus, store, replay_window(store, "support", at(0)), to=debug).generations == {did: 1}
    with pytest.raises(ActionRefused, match=f"{did}: an action already asked for its generation 1, not in the"):
        retry(bus, store, did, streams=STREAMS, requested_by="web")
    done = replay(bus, store, replay_window(store, "support", at(0)))
    assert (done.generations, list(done.not_sent)) == ({}, [did])
    assert [(m.generation, m.url) for m in map(decode_message, bus.read_all("messages"))] == [(1, debug)]

    Recorder(store).handle([*bus.read_all("events"), *bus.read_all("messages")])
    store.apply([Event(EventType.FAILED, did, qid(1), "support", at(1), generation=1, reason="HTTP 500")])
    assert retry(bus, store, did, streams=STREAMS) == 2  # recorded: the next action takes the next generation


def test_an_action_waiting_for_the_record_stage_is_held_through_a_long_outage_of_it(
    bus: Bus, store: ActivityStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Held 5 minutes, a replay 301 s after a retry took generation 2, and the deliverer kept it alone."""
    did = finished(store, 1, EventType.FAILED, 0)
    assert retry(bus, store, did, streams=STREAMS) == 1
    hours_later = time.time() + 6 * 3600  # the record stage down meanwhile: the store still shows generation 0
    monkeypatch.setattr(time, "time", lambda: hours_later)
    done = replay(bus, store, replay_window(store, "support", at(0)), to="https://debug.example.test/hook")
    assert (done.generations, list(done.not_sent)) == ({}, [did])


class DownProducer(EmbeddedProducer):
    def flush(self) -> None:
        raise BusError("the bus is down")


def test_an_action_the_bus_refused_holds_nothing_and_uses_its_generation(
    bus: Bus, store: ActivityStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(bus, EmbeddedBus)
    did = finished(store, 1, EventType.FAILED, 0)
    with monkeypatch.context() as patched:
        patched.setattr(bus, "producer", lambda: DownProducer(bus))
        with pytest.raises(BusError):
            retry(bus, store, did, streams=STREAMS)
    # Had the bus taken generation 1 after all, this one must not be 1 again.
    assert retry(bus, store, did, streams=STREAMS) == 2


def test_a_payload_past_retention_is_told_from_none_ever_made(bus: Bus, store: ActivityStore) -> None:
    """After a rebuild that no longer found its messages record, a parsed message is still one."""
    parsed = f"{qid(1)}-support"
    summary = Summary(at(0), "alice@sender.test", ("help@in.test",), "Invoice", 100, 0)
    store.apply([
        Event(EventType.PROCESSED, parsed, qid(1), "support", at(0), summary=summary),
        Event(EventType.FAILED, parsed, qid(1), "support", at(1), reason="HTTP 403"),
    ])  # fmt: skip
    unparsed = f"{qid(2)}-support"
    store.apply([Event(EventType.FAILED, unparsed, qid(2), "support", at(2), summary=summary, reason="cannot parse")])
    with pytest.raises(ActionRefused, match=r"its payload is not in the activity store \(.*past bus\.retention"):
        retry(bus, store, parsed, streams=STREAMS)
    with pytest.raises(ActionRefused, match="failed before it was parsed"):
        retry(bus, store, unparsed, streams=STREAMS)
    window = replay_window(store, "support", at(0))
    assert [r.delivery_id for r in window] == [parsed]
    done = replay(bus, store, window)
    assert (done.generations, list(done.not_sent)) == ({}, [parsed])
    assert list(bus.read_all("messages")) == []

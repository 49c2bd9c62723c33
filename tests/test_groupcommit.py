"""Group commit (inbound.delivery.groupcommit): pure logic, so a fake producer that records calls is enough."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from inbound.bus import Headers
from inbound.delivery.groupcommit import GroupCommit, GroupCommitter
from inbound.errors import BusError


class FakeProducer:
    """Flushes take a while, as an fsync does, and may fail; notices being used by two threads at once."""

    def __init__(self, fail: bool = False) -> None:
        self.sent: list[bytes] = []
        self.flushes = 0
        self.fail = fail
        self.busy = threading.Lock()
        self.overlaps = 0

    def _use(self) -> bool:
        if self.busy.acquire(blocking=False):
            return True
        self.overlaps += 1
        return False

    def send(self, topic: str, value: bytes, *, key: bytes, headers: Headers = ()) -> None:
        held = self._use()
        self.sent.append(value)
        if held:
            self.busy.release()

    def flush(self) -> None:
        held = self._use()
        self.flushes += 1
        time.sleep(0.005)  # the fsync this stands for (a fake's cost, not synchronisation)
        if held:
            self.busy.release()
        if self.fail:
            raise BusError("broker gone")

    def close(self) -> None:
        pass


def test_many_threads_share_few_flushes_and_every_record_goes_once() -> None:
    producer = FakeProducer()
    committer = GroupCommitter[str](producer, lambda settled: None)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda n: committer.publish([("events", b"k", str(n).encode())]), range(300)))
    assert sorted(producer.sent) == sorted(str(n).encode() for n in range(300))
    assert producer.flushes < 300  # grouped
    assert producer.overlaps == 0  # one thread at a time inside the producer


def test_a_failed_flush_fails_every_publisher_of_its_group() -> None:
    producer = FakeProducer(fail=True)
    committer = GroupCommitter[str](producer, lambda settled: None)
    failures = []

    def publish(n: int) -> None:
        try:
            committer.publish([("events", b"k", b"x")])
        except BusError:
            failures.append(n)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(publish, range(40)))
    assert len(failures) == 40  # nobody was told "durable"
    with pytest.raises(BusError, match="broker gone"):
        committer.publish([("events", b"k", b"y")])


def test_any_error_of_a_write_reaches_its_group_and_the_next_group_writes_again() -> None:
    writes: list[list[int]] = []

    def write(batch: list[int]) -> None:
        writes.append(batch)
        if len(writes) == 1:
            raise ValueError("disk said no")

    committer = GroupCommit(write)
    with pytest.raises(ValueError, match="disk said no"):
        committer.commit([1])
    committer.commit([2, 3])  # not stuck behind the failed write
    assert writes == [[1], [2, 3]]


def test_what_an_outcome_settles_is_settled_once_after_its_flush_and_never_after_a_failed_one() -> None:
    producer = FakeProducer()
    settled: list[tuple[int, list[str]]] = []  # (flushes before, what)
    committer = GroupCommitter[str](producer, lambda items: settled.append((producer.flushes, items)))
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: committer.publish([("events", b"k", b"x")], settles=f"d{n}"), range(40)))
    assert sorted(item for _, items in settled for item in items) == sorted(f"d{n}" for n in range(40))
    assert all(flushes >= 1 for flushes, _ in settled)
    assert len(settled) == producer.flushes  # one settle a group, and only for groups that settle something
    committer.publish([("events", b"k", b"alert")])  # settles nothing: no settle call
    assert len(settled) == producer.flushes - 1

    producer.fail = True
    with pytest.raises(BusError):
        committer.publish([("events", b"k", b"y")], settles="lost")
    assert all("lost" not in items for _, items in settled)


def test_a_failed_settle_fails_its_group() -> None:
    def settle(items: list[str]) -> None:
        raise BusError("outbox gone")

    committer = GroupCommitter[str](FakeProducer(), settle)
    with pytest.raises(BusError, match="outbox gone"):
        committer.publish([("events", b"k", b"x")], settles="d")
    committer.publish([("events", b"k", b"alert")])  # a group that settles nothing still goes through


def test_a_leader_told_more_are_coming_waits_for_them_and_writes_them_with_its_own() -> None:
    writes: list[list[int]] = []
    asked = threading.Event()

    def more_coming() -> bool:
        asked.set()
        return True

    # Long enough that this thread comes in time on a busy machine; the test waits it out once.
    committer = GroupCommit(writes.append, linger=2.0, more_coming=more_coming)
    leader = threading.Thread(target=committer.commit, args=([1],))
    leader.start()
    assert asked.wait(10)
    committer.commit([2])  # while the leader lingers: it joins the leader's group
    leader.join(10)
    assert writes == [[1, 2]]


def test_a_leader_told_nothing_more_is_coming_writes_at_once() -> None:
    writes: list[list[int]] = []
    committer = GroupCommit(writes.append, linger=60, more_coming=lambda: False)
    leader = threading.Thread(target=committer.commit, args=([1],))
    leader.start()
    leader.join(10)
    assert not leader.is_alive()  # the minute's linger was not waited
    assert writes == [[1]]

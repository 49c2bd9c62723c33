"""The stage loop's batching: a stage that lingers takes what came meanwhile into the same batch."""

from __future__ import annotations

from typing import Any

import pytest

from inbound.bus import Record
from inbound.worker import ConsumerWorker

from .harness import wait_for


def record(offset: int) -> Record:
    return Record("events", 0, offset, b"k", b"v", (), 0)


class ScriptedConsumer:
    """Answers each poll with the next of *answers* (then nothing), and keeps what it was asked."""

    def __init__(self, answers: list[list[Record]]) -> None:
        self.answers = answers
        self.polls: list[int] = []  # max_records of each poll
        self.commits = 0
        self.closes = 0

    def poll(self, timeout: float, max_records: int = 100) -> list[Record]:
        self.polls.append(max_records)
        return self.answers.pop(0) if self.answers else []

    def commit(self) -> None:
        self.commits += 1

    def rewind(self) -> None:
        pass

    def close(self) -> None:
        self.closes += 1


class ScriptedBus:
    def __init__(self, consumer: ScriptedConsumer) -> None:
        self._consumer = consumer

    def consumer(self, group: str, topics: Any) -> ScriptedConsumer:
        return self._consumer


def run(answers: list[list[Record]], *, max_records: int, linger: float) -> tuple[list[list[int]], ScriptedConsumer]:
    consumer = ScriptedConsumer(answers)
    batches: list[list[int]] = []

    def handle(records: list[Record]) -> None:
        batches.append([r.offset for r in records])

    worker = ConsumerWorker(
        "test",
        ScriptedBus(consumer),
        group="g",
        topics=["events"],
        handle=handle,
        max_records=max_records,
        linger=linger,
    )
    worker.start()
    wait_for(lambda: consumer.commits, 10, "the first batch committed")
    worker.stop()
    return batches, consumer


def test_a_batch_that_is_not_full_waits_and_takes_what_came_meanwhile() -> None:
    batches, consumer = run([[record(1), record(2)], [record(3)]], max_records=10, linger=0.05)
    assert batches[0] == [1, 2, 3]
    assert consumer.polls[:2] == [10, 8]  # the second poll fills the batch up to its size, no further


def test_a_full_batch_goes_at_once() -> None:
    batches, _ = run([[record(1), record(2)], [record(3)]], max_records=2, linger=60)
    assert batches[0] == [1, 2]  # a linger of a minute was not waited: the test would time out


def test_without_linger_each_poll_is_a_batch() -> None:
    batches, _ = run([[record(1), record(2)], [record(3)]], max_records=10, linger=0)
    assert batches[0] == [1, 2]


def test_an_unexpected_error_is_logged_and_the_batch_comes_again_to_a_new_consumer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    consumer = ScriptedConsumer([[record(1)], [record(1)]])  # the second: what a new consumer reads again
    handled: list[list[int]] = []

    def handle(records: list[Record]) -> None:
        handled.append([r.offset for r in records])
        if len(handled) == 1:
            raise RuntimeError("injected")

    worker = ConsumerWorker("test", ScriptedBus(consumer), group="g", topics=["events"], handle=handle)
    worker.start()
    try:
        wait_for(lambda: consumer.commits, 10, "the batch committed after the failure")
    finally:
        worker.stop()
    assert handled == [[1], [1]]
    assert consumer.closes == 2  # let go after the failure, its batch uncommitted; and at the stop
    assert "stage=test unexpected error; the batch will be retried" in caplog.text

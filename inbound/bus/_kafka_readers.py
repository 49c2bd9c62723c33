"""The Kafka bus's readers: a member of a consumer group, and a follower outside any group."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import BusError
from ._base import BATCH, Headers, Record
from ._kafka_client import FAILURES, TopicPartition, close_consumer

if TYPE_CHECKING:
    from .kafka import KafkaBus


class KafkaBusConsumer:
    """A member of a consumer group subscribed to some logical topics."""

    def __init__(self, bus: KafkaBus, group: str, topics: Sequence[str]) -> None:
        self.bus = bus
        self.group = group
        self.topics = [bus.physical(t) for t in topics]
        self._consumer = bus._new_consumer(group)
        try:
            self._consumer.subscribe(self.topics)
        except FAILURES as exc:
            close_consumer(self._consumer)
            raise BusError(f"kafka subscribe {self.topics}: {exc}") from exc

    def poll(self, timeout: float, max_records: int = BATCH) -> list[Record]:
        try:
            batches = self._consumer.poll(timeout_ms=max(0, int(timeout * 1000)), max_records=max_records)
        except FAILURES as exc:
            raise BusError(f"kafka poll ({self.group}): {exc}") from exc
        return [_record(self.bus, m) for messages in batches.values() for m in messages]

    def commit(self) -> None:
        try:
            self._consumer.commit(timeout_ms=int(self.bus.request_timeout * 1000))
        except FAILURES as exc:
            raise BusError(f"kafka commit ({self.group}): {exc}") from exc

    def rewind(self) -> None:
        timeout_ms = int(self.bus.request_timeout * 1000)
        try:
            for tp in sorted(self._consumer.assignment()):
                offset = self._consumer.committed(tp, timeout_ms=timeout_ms)
                if offset is None:
                    self._consumer.seek_to_beginning(tp)
                else:
                    self._consumer.seek(tp, offset)
        except FAILURES as exc:
            raise BusError(f"kafka rewind ({self.group}): {exc}") from exc

    def close(self) -> None:
        close_consumer(self._consumer, timeout_ms=5000)


class KafkaFollower:
    """A consumer outside any group, assigned every partition of one topic, that keeps its place.

    Reading the control topic once a second with a new consumer cost each process a connection,
    a metadata request and about 10 ms of CPU every second, idle or not.
    """

    def __init__(self, bus: KafkaBus, topic: str) -> None:
        self.bus = bus
        self.name = bus.physical(topic)
        self._consumer = bus._new_consumer(None)
        try:
            partitions = sorted(self._consumer.partitions_for_topic(self.name) or ())
            self.partitions = [TopicPartition(self.name, p) for p in partitions]
            if self.partitions:
                self._consumer.assign(self.partitions)
                self._consumer.seek_to_beginning(*self.partitions)
                self._consumer.pause(*self.partitions)  # no fetching between reads
        except FAILURES as exc:
            close_consumer(self._consumer)
            raise BusError(f"kafka read {self.name}: {exc}") from exc

    def read_new(self) -> Iterator[Record]:
        consumer, name = self._consumer, self.name
        if not self.partitions:
            return
        try:
            ends: dict[Any, int] = dict(consumer.end_offsets(self.partitions))
            active = {tp for tp in self.partitions if consumer.position(tp) < ends[tp]}
        except FAILURES as exc:
            raise BusError(f"kafka read {name}: {exc}") from exc
        consumer.resume(*active)
        stalled_after = time.monotonic() + self.bus.request_timeout
        try:
            while active:
                try:
                    batches = consumer.poll(timeout_ms=500, max_records=500)
                except FAILURES as exc:
                    raise BusError(f"kafka read {name}: {exc}") from exc
                for tp, messages in batches.items():
                    for message in messages:
                        if message.offset >= ends[tp]:
                            consumer.seek(tp, message.offset)  # the next read starts with it
                            break
                        yield _record(self.bus, message)
                try:
                    done = {tp for tp in active if consumer.position(tp) >= ends[tp]}
                except FAILURES as exc:
                    raise BusError(f"kafka read {name}: {exc}") from exc
                if done:
                    consumer.pause(*done)
                    active -= done
                if batches:
                    stalled_after = time.monotonic() + self.bus.request_timeout
                elif time.monotonic() > stalled_after:
                    raise BusError(f"kafka read {name}: no progress for {self.bus.request_timeout:.0f}s")
        finally:
            consumer.pause(*active)

    def close(self) -> None:
        close_consumer(self._consumer)


def _record(bus: KafkaBus, message: Any) -> Record:
    headers: Headers = tuple((str(k), bytes(v) if v is not None else b"") for k, v in message.headers or ())
    return Record(
        topic=bus.logical(message.topic),
        partition=int(message.partition),
        offset=int(message.offset),
        key=bytes(message.key) if message.key is not None else b"",
        value=bytes(message.value) if message.value is not None else b"",
        headers=headers,
        timestamp_ms=int(message.timestamp),
    )

"""The Kafka bus: Apache Kafka through kafka-python, for several machines.

Logical topics (``received``, ``messages``, ...) live in physical topics named
``topic_prefix + name``; records read back carry the logical name again.

* Producer: idempotent, ``acks=all``, lz4 (gzip at kafka-python's level 9 cost
  the pipeline and the broker about a tenth more CPU a message, for no gain on a
  local network), a short linger so a batch of sends goes out as one request.
  ``flush()`` waits at most ``flush_timeout`` seconds and raises BusError
  unless every record sent since the last flush was acknowledged.
* Consumer: a classic consumer group, no auto-commit, a new group starts at the
  earliest record. ``commit()`` commits the positions reached by ``poll()``,
  synchronously; ``rewind()`` seeks back to the committed offsets.
* Size: topics are created with ``max.message.bytes = max_message_bytes`` and the
  clients' request and fetch limits are raised to match, so a 20 MB message
  (about 35 MB once base64'd inside JSON) goes through.

Topics are created on first use (with those settings) if ``ensure_topics`` was
not called; brokers should run with ``auto.create.topics.enable=false`` so no
topic is ever created without them. Every call blocks, and every kafka-python
error comes out as :class:`~inbound.errors.BusError`.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from ..errors import BusError
from ._base import Headers, Record

with warnings.catch_warnings():
    # kafka-python 3.0 reads its protocol schemas with importlib.resources.read_text/open_text at
    # import time, which Python 3.11 flags as deprecated (an error under filterwarnings=error).
    warnings.filterwarnings("ignore", message="(read|open)_text is deprecated", category=DeprecationWarning)
    # kafka-python ships no type information (no py.typed): everything it returns is Any, and
    # stays inside this module. "unused-ignore" because pyproject also silences it for mypy.
    from kafka import (  # type: ignore[import-untyped, unused-ignore]
        KafkaAdminClient,
        KafkaConsumer,
        KafkaProducer,
        TopicPartition,
    )
    from kafka.admin import OffsetSpec  # type: ignore[import-untyped, unused-ignore]
    from kafka.errors import KafkaError, KafkaTimeoutError  # type: ignore[import-untyped, unused-ignore]

__all__ = ["KafkaBus", "KafkaBusConsumer", "KafkaBusProducer"]

T = TypeVar("T")

MiB = 1024 * 1024
_TOPIC_ALREADY_EXISTS = 36
_CONNECT_TIMEOUT = 2.0
_RETRY_PAUSE = 0.1

#: What kafka-python raises for broker and network trouble.
_FAILURES: tuple[type[BaseException], ...] = (KafkaError, OSError)


class KafkaBus:
    def __init__(
        self,
        bootstrap_servers: str | list[str],
        *,
        topic_prefix: str = "inbound.",
        partitions: int = 3,
        replication_factor: int = 1,
        max_message_bytes: int = 64 * MiB,
        client_id: str = "inbound",
        flush_timeout: float = 30.0,
        request_timeout: float = 30.0,
        session_timeout: float = 10.0,
        topic_configs: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.bootstrap_servers = [bootstrap_servers] if isinstance(bootstrap_servers, str) else list(bootstrap_servers)
        if not self.bootstrap_servers:
            raise ValueError("KafkaBus needs at least one bootstrap server")
        self.topic_prefix = topic_prefix
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.max_message_bytes = max_message_bytes
        self.client_id = client_id
        self.flush_timeout = flush_timeout
        self.request_timeout = request_timeout
        self.session_timeout = session_timeout
        self.topic_configs = topic_configs or {}  # logical topic -> extra topic configs (retention...)
        self._admin: Any = None
        self._admin_lock = threading.Lock()
        self._known: set[str] = set()  # physical topics known to exist
        # One kafka-python producer serves every KafkaBusProducer of this bus that is open:
        # the stages of a process then share one sender thread and one request per batch.
        self._shared_producer: Any = None
        self._producer_users = 0
        self._producer_lock = threading.Lock()

    # -- names ----------------------------------------------------------------

    def physical(self, topic: str) -> str:
        return self.topic_prefix + topic

    def logical(self, topic: str) -> str:
        return topic[len(self.topic_prefix) :] if topic.startswith(self.topic_prefix) else topic

    # -- client settings --------------------------------------------------------

    def _common_config(self) -> dict[str, Any]:
        request_ms = int(self.request_timeout * 1000)
        return {
            "bootstrap_servers": self.bootstrap_servers,
            "request_timeout_ms": request_ms,
            "bootstrap_timeout_ms": request_ms,
            "reconnect_backoff_max_ms": 2000,  # notice a restarted broker within seconds
        }

    def _producer_config(self) -> dict[str, Any]:
        return {
            **self._common_config(),
            "client_id": f"{self.client_id}-producer",
            "acks": "all",
            "enable_idempotence": True,
            "compression_type": "lz4",
            "linger_ms": 5,
            "batch_size": 256 * 1024,
            "max_request_size": self.max_message_bytes,
            "max_block_ms": int(self.flush_timeout * 1000),
            "delivery_timeout_ms": int((self.flush_timeout + self.request_timeout) * 1000),
            "allow_auto_create_topics": False,
        }

    def _consumer_config(self, group: str | None) -> dict[str, Any]:
        fetch_max = max(self.max_message_bytes + MiB, 50 * MiB)
        return {
            **self._common_config(),
            "client_id": f"{self.client_id}-{group or 'reader'}",
            "group_id": group,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "fetch_max_bytes": fetch_max,
            "max_partition_fetch_bytes": self.max_message_bytes + MiB,
            "receive_message_max_bytes": fetch_max + self.max_message_bytes + 2 * MiB,
            "session_timeout_ms": int(self.session_timeout * 1000),
            "heartbeat_interval_ms": max(100, int(self.session_timeout * 1000) // 3),
            "allow_auto_create_topics": False,
        }

    def _check_reachable(self) -> None:
        """BusError unless some bootstrap server accepts a TCP connection.

        kafka-python 3.0.12's consumer and admin client start an I/O thread before
        bootstrapping and leak it when bootstrapping fails; this keeps a down broker
        from costing a thread per retry.
        """
        errors = []
        for server in self.bootstrap_servers:
            host, _, port = server.rpartition(":")
            try:
                with socket.create_connection((host.strip("[]") or server, int(port or 9092)), _CONNECT_TIMEOUT):
                    return
            except (OSError, ValueError) as exc:
                errors.append(f"{server}: {exc}")
        raise BusError(f"no Kafka broker reachable ({'; '.join(errors)})")

    # -- admin ------------------------------------------------------------------

    def _admin_call(self, what: str, call: Callable[[Any], T]) -> T:
        """Run *call(admin)* under the admin lock, retrying retriable errors until the request timeout."""
        deadline = time.monotonic() + self.request_timeout
        with self._admin_lock:
            while True:
                try:
                    if self._admin is None:
                        self._check_reachable()
                        self._admin = KafkaAdminClient(**self._common_config(), client_id=f"{self.client_id}-admin")
                    return call(self._admin)
                except _FAILURES as exc:
                    if getattr(exc, "retriable", False) and time.monotonic() < deadline:
                        time.sleep(_RETRY_PAUSE)
                        continue
                    self._drop_admin()
                    raise BusError(f"kafka {what}: {exc}") from exc

    def _drop_admin(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            with contextlib.suppress(*_FAILURES):
                admin.close()

    def ensure_topics(self, topics: Sequence[str]) -> None:
        names = [self.physical(t) for t in topics]
        missing = [n for n in dict.fromkeys(names) if n not in self._known]
        if not missing:
            return

        def spec(name: str) -> dict[str, Any]:
            configs = {
                "max.message.bytes": str(self.max_message_bytes),
                **self.topic_configs.get(self.logical(name), {}),
            }
            return {
                "num_partitions": self.partitions,
                "replication_factor": self.replication_factor,
                "configs": configs,
            }

        def create(admin: Any) -> None:
            result = admin.create_topics({name: spec(name) for name in missing}, raise_errors=False)
            failed = [
                f"{t['name']}: {t.get('error_message') or t['error_code']}"
                for t in result["topics"]
                if t["error_code"] not in (0, _TOPIC_ALREADY_EXISTS)
            ]
            if failed:
                raise BusError(f"kafka: could not create topics: {', '.join(failed)}")
            admin.wait_for_topics(missing, timeout_ms=int(self.request_timeout * 1000))

        self._admin_call("create topics", create)
        self._known.update(missing)

    def producer(self) -> KafkaBusProducer:
        return KafkaBusProducer(self)

    def _use_producer(self) -> Any:
        with self._producer_lock:
            if self._shared_producer is None:
                try:
                    self._shared_producer = KafkaProducer(**self._producer_config())
                except _FAILURES as exc:
                    raise BusError(f"kafka producer: {exc}") from exc
            self._producer_users += 1
            return self._shared_producer

    def _release_producer(self, producer: Any) -> None:
        """The last user to let go closes the kafka-python producer (a later user starts a new one)."""
        with self._producer_lock:
            if producer is not self._shared_producer:
                return  # closed with the bus already
            self._producer_users -= 1
            if self._producer_users > 0:
                return
            producer, self._shared_producer = self._shared_producer, None
        _close_producer(producer, self.flush_timeout)

    def consumer(self, group: str, topics: Sequence[str]) -> KafkaBusConsumer:
        self.ensure_topics(topics)
        return KafkaBusConsumer(self, group, topics)

    def _new_consumer(self, group: str | None) -> Any:
        self._check_reachable()
        try:
            return KafkaConsumer(**self._consumer_config(group))
        except _FAILURES as exc:
            raise BusError(f"kafka consumer: {exc}") from exc

    def read_all(self, topic: str) -> Iterator[Record]:
        """Every record of *topic* up to the end offsets taken when reading starts."""
        follower = KafkaFollower(self, topic)
        try:
            yield from follower.read_new()
        finally:
            follower.close()

    def follow(self, topic: str) -> KafkaFollower:
        return KafkaFollower(self, topic)

    def lag(self, group: str, topic: str) -> int:
        name = self.physical(topic)

        def count(admin: Any) -> int:
            described = admin.describe_topics([name])
            if not described or described[0].get("error_code", 0) != 0:
                return 0  # no such topic: nothing waits
            tps = [TopicPartition(name, p["partition_index"]) for p in described[0]["partitions"]]
            if not tps:
                return 0
            latest = admin.list_partition_offsets(dict.fromkeys(tps, OffsetSpec.LATEST))
            earliest = admin.list_partition_offsets(dict.fromkeys(tps, OffsetSpec.EARLIEST))
            committed = admin.list_group_offsets({group: tps}).get(group, {})
            total = 0
            for tp in tps:
                done = committed[tp].offset if tp in committed and committed[tp].offset >= 0 else -1
                start = max(done, earliest[tp].offset)
                total += max(0, int(latest[tp].offset) - int(start))
            return total

        return self._admin_call(f"lag of {group} on {name}", count)

    def close(self) -> None:
        with self._admin_lock:
            self._drop_admin()
        with self._producer_lock:
            producer, self._shared_producer, self._producer_users = self._shared_producer, None, 0
        if producer is not None:
            _close_producer(producer, self.flush_timeout)


class KafkaBusProducer:
    """One caller's sends and flushes, on the bus's shared kafka-python producer (taken on first
    use and kept across failures): :meth:`flush` confirms this caller's records, not another's."""

    def __init__(self, bus: KafkaBus) -> None:
        self.bus = bus
        self._producer: Any = None
        self._pending: list[Any] = []  # futures of records sent since the last flush
        self._lock = threading.Lock()

    def _client(self) -> Any:
        if self._producer is None:
            self._producer = self.bus._use_producer()
        return self._producer

    def send(self, topic: str, value: bytes, *, key: bytes, headers: Headers = ()) -> None:
        self.bus.ensure_topics([topic])
        name = self.bus.physical(topic)
        with self._lock:
            try:
                future = self._client().send(name, value=value, key=key, headers=[(k, bytes(v)) for k, v in headers])
            except _FAILURES as exc:
                raise BusError(f"kafka send to {name}: {exc}") from exc
            self._pending.append(future)

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
            if not pending:
                return
            problem: BaseException | None = None
            try:
                self._client().flush(timeout=self.bus.flush_timeout)
            except _FAILURES as exc:
                problem = exc
            unconfirmed = [f for f in pending if not f.is_done or f.failed()]
            if not unconfirmed and problem is None:
                return
            # The caller sends these again; the producer keeps retrying the old ones in the
            # background until delivery_timeout, so some may arrive twice (at-least-once).
            reason = next((f.exception for f in unconfirmed if f.is_done and f.exception is not None), problem)
            if reason is None:
                reason = KafkaTimeoutError(f"not acknowledged within {self.bus.flush_timeout:.0f}s")
            raise BusError(f"kafka: {len(unconfirmed)} of {len(pending)} records not durable: {reason}")

    def close(self) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
            self._pending = []
        if producer is not None:
            self.bus._release_producer(producer)


class KafkaBusConsumer:
    """A member of a consumer group subscribed to some logical topics."""

    def __init__(self, bus: KafkaBus, group: str, topics: Sequence[str]) -> None:
        self.bus = bus
        self.group = group
        self.topics = [bus.physical(t) for t in topics]
        self._consumer = bus._new_consumer(group)
        try:
            self._consumer.subscribe(self.topics)
        except _FAILURES as exc:
            _close_quietly(self._consumer)
            raise BusError(f"kafka subscribe {self.topics}: {exc}") from exc

    def poll(self, timeout: float, max_records: int = 100) -> list[Record]:
        try:
            batches = self._consumer.poll(timeout_ms=max(0, int(timeout * 1000)), max_records=max_records)
        except _FAILURES as exc:
            raise BusError(f"kafka poll ({self.group}): {exc}") from exc
        return [_record(self.bus, m) for messages in batches.values() for m in messages]

    def commit(self) -> None:
        try:
            self._consumer.commit(timeout_ms=int(self.bus.request_timeout * 1000))
        except _FAILURES as exc:
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
        except _FAILURES as exc:
            raise BusError(f"kafka rewind ({self.group}): {exc}") from exc

    def close(self) -> None:
        _close_quietly(self._consumer, timeout_ms=5000)


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
        except _FAILURES as exc:
            _close_quietly(self._consumer)
            raise BusError(f"kafka read {self.name}: {exc}") from exc

    def read_new(self) -> Iterator[Record]:
        consumer, name = self._consumer, self.name
        if not self.partitions:
            return
        try:
            ends: dict[Any, int] = dict(consumer.end_offsets(self.partitions))
            active = {tp for tp in self.partitions if consumer.position(tp) < ends[tp]}
        except _FAILURES as exc:
            raise BusError(f"kafka read {name}: {exc}") from exc
        consumer.resume(*active)
        stalled_after = time.monotonic() + self.bus.request_timeout
        try:
            while active:
                try:
                    batches = consumer.poll(timeout_ms=500, max_records=500)
                except _FAILURES as exc:
                    raise BusError(f"kafka read {name}: {exc}") from exc
                for tp, messages in batches.items():
                    for message in messages:
                        if message.offset >= ends[tp]:
                            consumer.seek(tp, message.offset)  # the next read starts with it
                            break
                        yield _record(self.bus, message)
                try:
                    done = {tp for tp in active if consumer.position(tp) >= ends[tp]}
                except _FAILURES as exc:
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
        _close_quietly(self._consumer)


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


def _close_quietly(consumer: Any, timeout_ms: int = 5000) -> None:
    with contextlib.suppress(*_FAILURES):
        consumer.close(autocommit=False, timeout_ms=timeout_ms)


def _close_producer(producer: Any, timeout: float) -> None:
    try:
        producer.close(timeout=timeout)
    except _FAILURES:
        # kafka-python's close() raises when its final flush times out, leaving the
        # sender thread running: stop it the way close() would have.
        sender = getattr(producer, "_sender", None)
        if sender is not None:
            sender.force_close()

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
* Neither keeps kafka-python's own metrics: inbound exports its own, nothing
  reads those, and their sensors were 4 % of the pipeline's CPU on Kafka.
* Size: topics are created with ``max.message.bytes = max_message_bytes`` and the
  producer's request and the consumers' response limits are raised to match, so
  a 20 MB message (about 35 MB once base64'd inside JSON) goes through. A fetch
  asks for at most ``FETCH_BYTES`` (``PARTITION_FETCH_BYTES`` a partition): the
  broker still returns a larger first batch whole (KIP-74), so big messages pass
  one at a time, while a backlog is read 1 MiB at a time instead of up to
  50 MiB a fetch held in each consumer's memory (20,000 messages at once: the
  service's PSS 145-146 MiB at 4 MiB a fetch, 141-143 at 1 MiB, as fast).

Topics are created on first use (with those settings) if ``ensure_topics`` was
not called; brokers should run with ``auto.create.topics.enable=false`` so no
topic is ever created without them. Every call blocks, and every kafka-python
error comes out as :class:`~inbound.errors.BusError`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from ..errors import BusError
from ._base import Headers, Record
from ._kafka_client import (
    FAILURES,
    ConfigResource,
    KafkaAdminClient,
    KafkaConsumer,
    KafkaProducer,
    KafkaTimeoutError,
    OffsetSpec,
    TopicPartition,
    close_producer,
)
from ._kafka_readers import KafkaBusConsumer, KafkaFollower

__all__ = ["KafkaBus", "KafkaBusConsumer", "KafkaBusProducer"]

T = TypeVar("T")

log = logging.getLogger(__name__)

MiB = 1024 * 1024
FETCH_BYTES = MiB
PARTITION_FETCH_BYTES = MiB // 2
_TOPIC_ALREADY_EXISTS = 36
# The topics whose records carry whole messages, and so need the topic's record limit.
_WHOLE_MESSAGES = frozenset({"received", "messages"})
_CONNECT_TIMEOUT = 2.0
_RETRY_PAUSE = 0.1


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
        longest_batch: float = 300.0,
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
        self.longest_batch = longest_batch
        self.topic_configs = topic_configs or {}  # logical topic -> extra topic configs (retention...)
        self._admin: Any = None
        self._admin_lock = threading.Lock()
        self._known: set[str] = set()  # physical topics known to exist
        # One kafka-python producer serves every KafkaBusProducer of this bus that is open:
        # the stages of a process then share one sender thread and one request per batch.
        self._shared_producer: Any = None
        self._producer_users = 0
        self._producer_lock = threading.Lock()
        self._closed = False

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
            "metrics_enabled": False,
        }

    def _consumer_config(self, group: str | None) -> dict[str, Any]:
        return {
            **self._common_config(),
            "client_id": f"{self.client_id}-{group or 'reader'}",
            "group_id": group,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "fetch_max_bytes": FETCH_BYTES,
            "max_partition_fetch_bytes": PARTITION_FETCH_BYTES,
            "receive_message_max_bytes": FETCH_BYTES + self.max_message_bytes + 2 * MiB,
            "session_timeout_ms": int(self.session_timeout * 1000),
            "heartbeat_interval_ms": max(100, int(self.session_timeout * 1000) // 3),
            # Past this between two polls the group takes the consumer's partitions, and its commit
            # fails: a batch that always takes longer would be handled again and again, for ever.
            "max_poll_interval_ms": int(self.longest_batch * 1000),
            "allow_auto_create_topics": False,
            "metrics_enabled": False,
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
                except FAILURES as exc:
                    if getattr(exc, "retriable", False) and time.monotonic() < deadline:
                        time.sleep(_RETRY_PAUSE)
                        continue
                    self._drop_admin()
                    raise BusError(f"kafka {what}: {exc}") from exc

    def _drop_admin(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            with contextlib.suppress(*FAILURES):
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
            existing = [t["name"] for t in result["topics"] if t["error_code"] == _TOPIC_ALREADY_EXISTS]
            self._check_record_limit(admin, [n for n in existing if self.logical(n) in _WHOLE_MESSAGES])

        self._admin_call("create topics", create)
        self._known.update(missing)

    def _check_record_limit(self, admin: Any, names: list[str]) -> None:
        """BusError if a topic made before (by an operator, or for a smaller ``smtp.max_message_size``)
        takes smaller records than inbound may send it: the broker would refuse such a record each
        time it is sent, and the stage sending it would wait on it for ever."""
        if not names:
            return
        wanted = [ConfigResource("TOPIC", name, {"max.message.bytes": None}) for name in names]
        found = admin.describe_configs(wanted, config_filter="all").get("topic", {})
        small = []
        for name in names:
            limit = found.get(name, {}).get("max.message.bytes", {}).get("value")
            if limit is None:
                # Not told (kafka-python reports a refusal, such as a missing DescribeConfigs ACL, as
                # no configs): the usual producer and consumer grants do not include it.
                log.warning("kafka: cannot read max.message.bytes of %s: its record limit is not checked", name)
            elif int(limit) < self.max_message_bytes:
                small.append(f"{name} ({limit})")
        if small:
            raise BusError(
                f"kafka: topics {', '.join(small)} take records of at most that many bytes (max.message.bytes);"
                f" inbound may send {self.max_message_bytes} for smtp.max_message_size: raise theirs, or lower it"
            )

    def producer(self) -> KafkaBusProducer:
        return KafkaBusProducer(self)

    def _join_producer(self) -> None:
        with self._producer_lock:
            self._producer_users += 1

    def _current_producer(self) -> Any:
        """The kafka-python producer the open KafkaBusProducers share, started if there is none."""
        with self._producer_lock:
            if self._closed:
                raise BusError("kafka: the bus is closed")
            if self._shared_producer is None:
                try:
                    self._shared_producer = KafkaProducer(**self._producer_config())
                except FAILURES as exc:
                    raise BusError(f"kafka producer: {exc}") from exc
            return self._shared_producer

    def _leave_producer(self) -> None:
        """The last user to let go closes the kafka-python producer (a later user starts a new one)."""
        with self._producer_lock:
            self._producer_users = max(0, self._producer_users - 1)
            if self._producer_users > 0 or self._shared_producer is None:
                return
            producer, self._shared_producer = self._shared_producer, None
        close_producer(producer, self.flush_timeout)

    def _renew_if_fatal(self, producer: Any) -> None:
        """Drop *producer* if kafka-python has put it in a fatal state; the next send starts a new one.

        An idempotent producer outside a transaction takes any error the broker will not retry (a
        record over the topic's ``max.message.bytes``, a refused ACL, a bad timestamp) as fatal to
        itself, and refuses every batch after it, of every stage sharing it, until it is replaced.
        """
        manager = getattr(producer, "_transaction_manager", None)
        if manager is None or not manager.has_fatal_error():
            return
        with self._producer_lock:
            if producer is not self._shared_producer:
                return  # another user has renewed it already
            self._shared_producer = None
        log.warning("kafka producer refused everything after an error it cannot retry: a new one takes over")
        close_producer(producer, 0)

    def consumer(self, group: str, topics: Sequence[str]) -> KafkaBusConsumer:
        self.ensure_topics(topics)
        return KafkaBusConsumer(self, group, topics)

    def _new_consumer(self, group: str | None) -> Any:
        self._check_reachable()
        try:
            return KafkaConsumer(**self._consumer_config(group))
        except FAILURES as exc:
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
            self._closed = True
        if producer is not None:
            close_producer(producer, self.flush_timeout)


class KafkaBusProducer:
    """One caller's sends and flushes, on the bus's shared kafka-python producer (taken on first
    use, kept across failures, replaced if it fails for good): :meth:`flush` confirms this caller's
    records, not another's."""

    def __init__(self, bus: KafkaBus) -> None:
        self.bus = bus
        self._joined = False
        self._pending: list[Any] = []  # futures of records sent since the last flush
        self._lock = threading.Lock()

    def _client(self) -> Any:
        if not self._joined:
            self.bus._join_producer()
            self._joined = True
        return self.bus._current_producer()

    def send(self, topic: str, value: bytes, *, key: bytes, headers: Headers = ()) -> None:
        self.bus.ensure_topics([topic])
        name = self.bus.physical(topic)
        with self._lock:
            client = self._client()
            try:
                future = client.send(name, value=value, key=key, headers=[(k, bytes(v)) for k, v in headers])
            except FAILURES as exc:
                self.bus._renew_if_fatal(client)
                raise BusError(f"kafka send to {name}: {exc}") from exc
            self._pending.append(future)

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
            if not pending:
                return
            problem: BaseException | None = None
            client = self._client()
            try:
                client.flush(timeout=self.bus.flush_timeout)
            except FAILURES as exc:
                problem = exc
            unconfirmed = [f for f in pending if not f.is_done or f.failed()]
            if not unconfirmed and problem is None:
                return
            self.bus._renew_if_fatal(client)
            # The caller sends these again; the producer keeps retrying the old ones in the
            # background until delivery_timeout, so some may arrive twice (at-least-once).
            reason = next((f.exception for f in unconfirmed if f.is_done and f.exception is not None), problem)
            if reason is None:
                reason = KafkaTimeoutError(f"not acknowledged within {self.bus.flush_timeout:.0f}s")
            raise BusError(f"kafka: {len(unconfirmed)} of {len(pending)} records not durable: {reason}")

    def close(self) -> None:
        with self._lock:
            joined, self._joined = self._joined, False
            self._pending = []
        if joined:
            self.bus._leave_producer()

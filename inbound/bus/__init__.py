"""The bus: where accepted mail, parsed messages and activity events travel.

``open_bus(settings)`` picks the backend named by ``bus.backend``; every stage
uses only the small protocols in :mod:`inbound.bus._base`.
"""

from __future__ import annotations

from ..config import Settings
from ._base import BATCH, Bus, Consumer, Follower, Headers, Producer, Record

__all__ = [
    "BATCH",
    "TOPICS",
    "Bus",
    "Consumer",
    "Follower",
    "Headers",
    "Producer",
    "Record",
    "longest_batch",
    "open_bus",
    "record_limit",
    "record_size",
]

#: Logical topics, in flow order. See README "Topics" for keys and formats.
TOPICS = ("received", "messages", "events", "control")


def open_bus(settings: Settings) -> Bus:
    if settings.bus.backend == "kafka":
        from .kafka import KafkaBus  # imported lazily: kafka-python is not needed on one machine

        return KafkaBus(
            list(settings.bus.bootstrap_servers),
            topic_prefix=settings.bus.topic_prefix,
            partitions=settings.bus.partitions,
            replication_factor=settings.bus.replication_factor,
            max_message_bytes=_kafka_record_limit(settings.smtp.max_message_size),
            longest_batch=longest_batch(settings),
            topic_configs=topic_configs(settings.bus.retention),
        )
    from .embedded import EmbeddedBus

    return EmbeddedBus(settings.data.bus)


def topic_configs(retention: float) -> dict[str, dict[str, str]]:
    """Per-topic Kafka settings: what each topic keeps, and for how long (README: Topics).

    ``events`` are kept forever: small, and the activity store is rebuilt from them. ``control``
    is compacted: the last record of each key is the state. ``received`` and ``messages`` carry
    whole messages and are kept for ``bus.retention``.
    """
    kept = {"retention.ms": str(int(retention * 1000))}
    return {
        "received": kept,
        "messages": kept,
        "events": {"retention.ms": "-1"},
        "control": {"cleanup.policy": "compact"},
    }


def longest_batch(settings: Settings) -> float:
    """Seconds a stage may take over one batch: the process stage's, every message of a full batch
    waiting out each limit it may meet (parsing, then the sender checks' DNS and spamd), and a
    minute more; never less than kafka-python's default of five minutes.

    A stage past it between two polls is taken for dead by its Kafka group. Hostile messages that
    each run until ``parse_timeout`` can make a batch that long; so can a spamd that accepts and
    never answers.
    """
    per_message = settings.processing.parse_timeout
    per_message += settings.auth.timeout if settings.auth.enabled else 0
    per_message += settings.spam.timeout if settings.spam.spamd is not None else 0
    return max(300.0, BATCH * per_message + 60.0)


def record_limit(settings: Settings) -> int | None:
    """The most bytes one record may take on the configured bus; None where there is no limit (embedded)."""
    return _kafka_record_limit(settings.smtp.max_message_size) if settings.bus.backend == "kafka" else None


def _kafka_record_limit(max_message_size: int) -> int:
    # A received record carries the message and its envelope; a parsed payload carries
    # attachments base64'd (4/3) alongside the bodies. A payload can still be larger (text
    # JSON-escaped, kept raw as well): the process stage fails such a message rather than
    # retrying a record the broker will never take (Processor.route).
    return max_message_size * 2 + 1024 * 1024


#: What a Kafka record batch adds around one record's key, value and headers, with room to spare.
RECORD_FRAMING = 1024


def record_size(key: bytes, value: bytes, headers: Headers) -> int:
    """The bytes a record takes against a bus's record limit."""
    return len(key) + len(value) + sum(len(name) + len(data) for name, data in headers) + RECORD_FRAMING

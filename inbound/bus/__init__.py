"""The bus: where accepted mail, parsed messages and activity events travel.

``open_bus(settings)`` picks the backend named by ``bus.backend``; every stage
uses only the small protocols in :mod:`inbound.bus._base`.
"""

from __future__ import annotations

from ..config import Settings
from ._base import Bus, Consumer, Follower, Headers, Producer, Record

__all__ = ["TOPICS", "Bus", "Consumer", "Follower", "Headers", "Producer", "Record", "open_bus"]

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
            max_message_bytes=_max_record_bytes(settings.smtp.max_message_size),
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


def _max_record_bytes(max_message_size: int) -> int:
    # A record carries the message base64-encoded inside JSON (4/3) plus the envelope;
    # the parsed payload carries attachments the same way, alongside the bodies.
    return max_message_size * 2 + 1024 * 1024

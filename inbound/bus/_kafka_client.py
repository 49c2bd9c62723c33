"""kafka-python, imported in one place: its classes, what it raises, and how its clients are closed.

Its import is wrapped so that a deprecation warning it raises at import time is not an error
under the suite's warning filters; the bus modules import kafka-python from here only.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

with warnings.catch_warnings():
    # kafka-python 3.0 reads its protocol schemas with importlib.resources.read_text/open_text at
    # import time, which Python 3.11 flags as deprecated (an error under filterwarnings=error).
    warnings.filterwarnings("ignore", message="(read|open)_text is deprecated", category=DeprecationWarning)
    # kafka-python ships no type information (no py.typed): everything it returns is Any, and
    # stays inside the bus's Kafka modules. "unused-ignore": pyproject also silences it for mypy.
    from kafka import (  # type: ignore[import-untyped, unused-ignore]
        KafkaAdminClient,
        KafkaConsumer,
        KafkaProducer,
        TopicPartition,
    )
    from kafka.admin import ConfigResource, OffsetSpec  # type: ignore[import-untyped, unused-ignore]
    from kafka.errors import KafkaError, KafkaTimeoutError  # type: ignore[import-untyped, unused-ignore]

__all__ = [
    "FAILURES",
    "ConfigResource",
    "KafkaAdminClient",
    "KafkaConsumer",
    "KafkaError",
    "KafkaProducer",
    "KafkaTimeoutError",
    "OffsetSpec",
    "TopicPartition",
    "close_consumer",
    "close_producer",
]

#: What kafka-python raises for broker and network trouble.
FAILURES: tuple[type[BaseException], ...] = (KafkaError, OSError)


def close_consumer(consumer: Any, timeout_ms: int = 5000) -> None:
    with contextlib.suppress(*FAILURES):
        consumer.close(autocommit=False, timeout_ms=timeout_ms)


def close_producer(producer: Any, timeout: float) -> None:
    try:
        producer.close(timeout=timeout)
    except FAILURES:
        # kafka-python's close() raises when its final flush times out, leaving the
        # sender thread running: stop it the way close() would have.
        sender = getattr(producer, "_sender", None)
        if sender is not None:
            sender.force_close()

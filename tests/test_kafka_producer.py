"""The kafka-python clients a KafkaBus makes: its producers share one (one sender thread and one
connection a process, as Kafka advises, instead of one per stage), and none keeps metrics."""

from __future__ import annotations

import os
import threading
import uuid
from types import SimpleNamespace
from typing import Any

import pytest

from inbound.bus.kafka import KafkaBus
from inbound.errors import BusError

from .kafka_broker import KafkaBroker

pytestmark = pytest.mark.kafka


def sender_threads() -> int:
    return sum(1 for t in threading.enumerate() if "producer-network-thread" in t.name and t.is_alive())


def test_producers_share_one_client_until_the_last_one_closes(kafka_broker: KafkaBroker) -> None:
    kafka_broker.start()
    bus = KafkaBus(kafka_broker.bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:12]}.")
    before = sender_threads()
    try:
        first, second = bus.producer(), bus.producer()
        for producer in (first, second):
            producer.send("received", b"v", key=b"k")
            producer.flush()
        assert first._client() is second._client()
        assert sender_threads() == before + 1
        first.close()
        second.send("received", b"still", key=b"k")
        second.flush()  # the client outlives a producer that closed
        second.close()
        assert sender_threads() == before  # the last one closed it
        third = bus.producer()
        third.send("received", b"again", key=b"k")
        third.flush()  # a new client for a new user
    finally:
        bus.close()
    assert sender_threads() == before  # closing the bus closed it
    third.close()  # after the bus: nothing left to close, and no error


def test_clients_keep_no_metrics_of_their_own(kafka_broker: KafkaBroker) -> None:
    """inbound exports its own metrics; kafka-python's sensors were 4 % of the pipeline's CPU."""
    kafka_broker.start()
    bus = KafkaBus(kafka_broker.bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:12]}.")
    producer = bus.producer()
    consumer = bus.consumer("metrics-test", ["received"])
    try:
        producer.send("received", b"v", key=b"k")
        producer.flush()  # and it still sends and confirms without them
        assert producer._client().metrics() is None
        assert consumer._consumer.metrics() is None
    finally:
        consumer.close()
        producer.close()
        bus.close()


def test_a_record_the_broker_refuses_does_not_stop_the_process_producing(kafka_broker: KafkaBroker) -> None:
    """kafka-python's idempotent producer takes any error the broker will not retry (here a record over the
    topic's max.message.bytes, as when an operator made the topic smaller) as fatal to itself: every batch
    of every stage sharing it is refused from then on. The bus starts a new one instead."""
    kafka_broker.start()
    prefix = f"t{uuid.uuid4().hex[:12]}."
    bus = KafkaBus(
        kafka_broker.bootstrap, topic_prefix=prefix, topic_configs={"received": {"max.message.bytes": "4096"}}
    )
    publisher, stage = bus.producer(), bus.producer()
    try:
        publisher.send("received", os.urandom(20_000), key=b"too big for the topic")  # lz4 cannot shrink it
        with pytest.raises(BusError, match="MessageSizeTooLargeError"):
            publisher.flush()
        stage.send("events", b"small", key=b"k")
        stage.flush()  # the other stage goes on
        publisher.send("received", b"fits", key=b"q")
        publisher.flush()  # and so does the one whose record was refused
        assert [r.value for r in bus.read_all("received")] == [b"fits"]
    finally:
        publisher.close()
        stage.close()
        bus.close()


def test_a_topic_made_before_with_a_smaller_record_limit_is_named_at_start(kafka_broker: KafkaBroker) -> None:
    """Records it refuses would hold their stage for ever: say so before any is sent."""
    kafka_broker.start()
    prefix = f"t{uuid.uuid4().hex[:12]}."
    earlier = KafkaBus(
        kafka_broker.bootstrap, topic_prefix=prefix, topic_configs={"received": {"max.message.bytes": "4096"}}
    )
    try:
        earlier.ensure_topics(["received", "events"])
    finally:
        earlier.close()
    bus = KafkaBus(kafka_broker.bootstrap, topic_prefix=prefix)
    try:
        with pytest.raises(BusError, match=rf"topics {prefix}received \(4096\) take records of at most"):
            bus.ensure_topics(["received", "events"])
    finally:
        bus.close()


class RefusingAdmin:
    """An admin client whose broker refuses DescribeConfigs (no ACL for it), answered as kafka-python answers."""

    def describe_configs(self, resources: list[Any], config_filter: str = "modified") -> dict[str, Any]:
        # Imported once inbound.bus.kafka has (it imports kafka-python past a warning: see _kafka_client).
        from kafka.admin._configs import ConfigAdminMixin  # type: ignore[import-untyped]

        refused = [
            SimpleNamespace(resource_type=2, resource_name=r.name, error_code=29, error_message="denied", configs=[])
            for r in resources
        ]
        answer: dict[str, Any] = ConfigAdminMixin._describe_configs_process_responses(
            [SimpleNamespace(results=refused)], config_filter
        )
        return answer


def test_a_topic_whose_record_limit_may_not_be_read_is_not_checked_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The usual producer and consumer grants do not include DescribeConfigs: the stages start as before."""
    bus = KafkaBus("127.0.0.1:9", topic_prefix="t.")  # nothing connects: the admin client is the fake
    try:
        bus._check_record_limit(RefusingAdmin(), ["t.received"])
    finally:
        bus.close()
    assert "cannot read max.message.bytes of t.received" in caplog.text

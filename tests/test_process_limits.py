"""The process stage against the bus's limits: a payload the bus cannot carry fails its message, and a
Kafka group waits out the longest batch the stage can take.

On Kafka a record over ``max.message.bytes`` is refused every time it is sent; retried, it would
hold the stage on that message for ever, with a 250 answered for it. A payload can outgrow the
message it came from (text JSON-escaped, kept raw as well), so the limit is checked per payload.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from inbound.bus import longest_batch, record_limit
from inbound.bus.kafka import KafkaBus
from inbound.config import BusSettings, Settings, StreamSettings
from inbound.events import EventType
from inbound.processing.process import Processor
from inbound.records import EVENTS, MESSAGES, decode_event
from inbound.routing import RoutingTable

from .harness import SECRET, RecordingProducer
from .test_reload import received

SUPPORT = StreamSettings("support", ("*@in.test",), "https://a.test/", SECRET)


def test_a_payload_over_the_record_limit_fails_its_message_and_the_next_goes_on() -> None:
    producer = RecordingProducer()
    processor = Processor(RoutingTable.from_streams([SUPPORT]), producer, [SUPPORT], record_limit=8_000)
    control_characters = "\x01" * 2_000  # 2 KB of message, about 12 KB once JSON-escaped in the payload
    processor.handle(
        [received("help@in.test", "support", body=control_characters), received("help@in.test", "support")]
    )
    events = [decode_event(value) for topic, value in producer.sent if topic == EVENTS]
    assert [e.type for e in events] == [EventType.FAILED, EventType.PROCESSED]
    assert events[0].reason is not None
    assert events[0].reason.endswith("bytes) is larger than the bus takes (8,000)")
    assert len([topic for topic, _ in producer.sent if topic == MESSAGES]) == 1  # the small one's


def test_only_kafka_has_a_record_limit_and_it_follows_the_message_size() -> None:
    settings = Settings(Path("inbound.toml"))
    assert record_limit(settings) is None
    on_kafka = dataclasses.replace(settings, bus=BusSettings(backend="kafka"))
    assert record_limit(on_kafka) == 2 * settings.smtp.max_message_size + 1024 * 1024


def test_a_kafka_group_waits_out_a_batch_of_messages_that_each_wait_out_every_limit() -> None:
    """Past max.poll.interval a Kafka group takes the consumer's partitions and its commit fails: a batch
    that always took longer (hostile messages each parsed until parse_timeout; a spamd that never
    answers) would be handled again and again, for ever."""
    settings = Settings(Path("inbound.toml"))
    assert longest_batch(settings) == 100 * settings.processing.parse_timeout + 60  # 3,060 s by default
    checked = dataclasses.replace(
        settings,
        auth=dataclasses.replace(settings.auth, enabled=True),
        spam=dataclasses.replace(settings.spam, spamd=("127.0.0.1", 783)),
    )
    per_message = checked.processing.parse_timeout + checked.auth.timeout + checked.spam.timeout
    assert longest_batch(checked) == 100 * per_message + 60
    bus = KafkaBus("127.0.0.1:9", longest_batch=longest_batch(checked))  # nothing connects until used
    assert bus._consumer_config("process")["max_poll_interval_ms"] == int(longest_batch(checked) * 1000)

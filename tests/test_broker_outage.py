"""Kafka down while mail keeps arriving: the SMTP edge answers 250, the spool grows; Kafka back: catch-up."""

from __future__ import annotations

from typing import Any

import pytest

from inbound.datadir import DataDir
from inbound.edge.spool import Spool

from .fixtures import Pipeline
from .harness import activity, send, simple_message, wait_for

pytestmark = pytest.mark.kafka


@pytest.fixture
def kafka_pipeline(tmp_path: Any, bus_toml_kafka: str) -> Any:
    pipeline = Pipeline(tmp_path, bus_toml_kafka)
    yield pipeline
    pipeline.close()


def test_broker_outage_ends_in_a_catch_up(kafka_pipeline: Pipeline, kafka_broker: Any) -> None:
    config = kafka_pipeline.configure()
    kafka_pipeline.start()
    before = [send(config, "a@sender.test", ["x@in.test"], simple_message(subject=f"before{i}")) for i in range(3)]
    wait_for(lambda: len(kafka_pipeline.receiver.hits) >= 3, 60, "deliveries before the outage")

    spool = Spool(DataDir(config.parent / "data"))
    kafka_broker.stop()
    try:
        during = [send(config, "a@sender.test", ["x@in.test"], simple_message(subject=f"during{i}")) for i in range(10)]
        assert len(list(spool.entries())) == 10  # accepted, held in the spool
    finally:
        kafka_broker.restart()
    wait_for(lambda: not spool.pending(), 120, "the spool to drain into Kafka")
    wanted = {f"{q}-support" for q in before + during}
    wait_for(
        lambda: {r["delivery_id"] for r in activity(config) if r["status"] == "delivered"} >= wanted,
        120,
        "the consumers to catch up",
    )
    assert sorted(r["delivery_id"] for r in activity(config)) == sorted(wanted)
    assert set(kafka_pipeline.receiver.by_queue_id()) == set(before + during)


def test_an_edge_started_while_the_broker_is_down_accepts_and_its_mail_is_delivered_once_it_is_back(
    kafka_pipeline: Pipeline, kafka_broker: Any
) -> None:
    # As the supervisor restarts an edge that crashed during an outage: it must not need the bus to serve.
    config = kafka_pipeline.configure()
    kafka_broker.stop()
    try:
        kafka_pipeline.start(roles="smtp,publish")  # fails if the edge exits instead of serving
        queue_id = send(config, "a@sender.test", ["x@in.test"], simple_message(subject="while down"))
    finally:
        kafka_broker.start()
    kafka_pipeline.start(roles="process,deliver,record")
    wait_for(lambda: queue_id in kafka_pipeline.receiver.by_queue_id(), 120, "the delivery once Kafka is back")
    assert list(kafka_pipeline.receiver.by_queue_id()) == [queue_id]

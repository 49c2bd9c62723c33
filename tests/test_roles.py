"""Every stage in its own process against one real Kafka broker: SIGKILL one of each mid-stream.

Two SMTP edges (sharing one spool, as two processes on one host do), two processors, two
deliverers (sharing one outbox) and one recorder. Mail goes to both edges while one process of
each role is killed; every message that got a 250 must be delivered and recorded exactly once.
"""

from __future__ import annotations

import smtplib
import threading
from pathlib import Path

import pytest

from .harness import (
    InboundProcess,
    WebhookReceiver,
    activity,
    free_port,
    run_cli,
    send,
    simple_message,
    stream_toml,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.kafka


def test_roles_in_separate_processes_survive_sigkill(tmp_path: Path, bus_toml_kafka: str) -> None:
    receiver = WebhookReceiver().start()
    streams = stream_toml("support", ["*@in.test"], receiver.url("/hook"))

    def config(name: str, data_dir: str) -> Path:
        directory = tmp_path / name
        directory.mkdir()
        return write_config(
            directory, streams=streams, bus=bus_toml_kafka, data_dir=str(tmp_path / data_dir), smtp_port=free_port()
        )

    edges = [config("edge1", "edge"), config("edge2", "edge")]
    worker = config("worker", "worker")
    run_cli("init", config=edges[0])
    run_cli("init", config=worker)
    processes = [InboundProcess(c, roles="smtp,publish").start() for c in edges]
    processes += [
        InboundProcess(worker, roles=role, log=tmp_path / f"{role}{i}.log").start()
        for role in ("process", "deliver")
        for i in (1, 2)
    ]
    processes.append(InboundProcess(worker, roles="record", log=tmp_path / "record.log").start())
    edge1, _edge2, process1, _, deliver1, _, _ = processes

    accepted: list[str] = []
    in_doubt: list[str] = []
    stop = threading.Event()

    def keep_sending(edge: Path) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                subject = f"{edge.parent.name}-{n}"
                accepted.append(send(edge, "a@sender.test", ["x@in.test"], simple_message(subject=subject)))
            except (OSError, smtplib.SMTPException):
                # No 250 (an edge being killed). The sender keeps the message; the edge may still
                # have spooled it before dying, so it may show up anyway: "in doubt", not lost.
                in_doubt.append(subject)

    senders = [threading.Thread(target=keep_sending, args=(edge,)) for edge in edges]
    try:
        for sender in senders:
            sender.start()
        wait_for(lambda: len(receiver.hits) >= 10, 120, "deliveries to flow")
        for victim in (edge1, process1, deliver1):
            victim.kill()
        count = len(accepted)
        wait_for(lambda: len(accepted) >= count + 20, 120, "the surviving edge to keep accepting")
        stop.set()
        for sender in senders:
            sender.join(60)
        wanted = {f"{q}-support" for q in accepted}
        wait_for(
            lambda: {r["delivery_id"] for r in activity(worker) if r["status"] == "delivered"} >= wanted,
            180,
            f"all {len(wanted)} accepted messages delivered",
        )
        records = [r["delivery_id"] for r in activity(worker)]
        assert len(records) == len(set(records))  # never two records for one message
        assert set(records) >= wanted
        assert len(set(records) - wanted) <= len(in_doubt)  # extras only from transactions cut short
        assert set(receiver.by_queue_id()) >= set(accepted)
    finally:
        stop.set()
        for process in processes:
            process.stop()
        receiver.stop()

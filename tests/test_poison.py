"""Poison messages end as their own Failed record; the service and the messages behind them go on.

Real ``inbound serve`` processes; the parser's faults come from tests/faults/sitecustomize.py,
loaded through PYTHONPATH into every process of the service (production code has no hook).
"""

from __future__ import annotations

import os
import re
import time

import psutil

from inbound.datadir import DataDir
from tests.fixtures import Pipeline
from tests.harness import ROOT, activity, attachment_message, send, simple_message, wait_for

FAULTS = {"PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "faults"), os.environ.get("PYTHONPATH", "")])}
NEXT_WITHIN = 5.0  # on top of the time the message ahead took to end


def delivered(pipeline: Pipeline, queue_id: str, within: float) -> None:
    wait_for(lambda: queue_id in pipeline.receiver.by_queue_id(), within, f"{queue_id} to be delivered")


def failed_reason(pipeline: Pipeline, queue_id: str) -> str:
    def reason() -> str | None:
        rows = [r for r in activity(pipeline.config) if r["queue_id"] == queue_id]
        return rows[0]["reason"] if rows and rows[0]["status"] == "failed" else None

    return str(wait_for(reason, 60, f"{queue_id} to be failed"))


def test_parser_faults_fail_that_message_once_and_the_next_is_delivered_on_time(pipeline: Pipeline) -> None:
    # After each fault the message behind goes to a worker started afresh: its interpreter's start-up
    # counts against parse_timeout, and takes seconds on a busy box.
    pipeline.configure(extra='[processing]\nparse_timeout = "10s"\nparse_memory_limit = "3x + 128MiB"\n')
    service = pipeline.start(env=FAULTS)
    expected = {
        "segfault": "the parse worker was killed by SIGSEGV while parsing this message",
        "exit": "the parse worker exited with status 3 while parsing this message",
        "hang": "parsing took longer than parse_timeout (10s)",
        "memory": "parsing needs more memory than parse_memory_limit (128 MiB)",
    }
    poisoned = {}
    for fault, reason in expected.items():
        poisoned[fault] = send(
            pipeline.config, "a@sender.test", ["help@in.test"], simple_message(extra=f"X-Test-Fault: {fault}\r\n")
        )
        normal = send(pipeline.config, "a@sender.test", ["help@in.test"], simple_message(subject=f"after {fault}"))
        started = time.monotonic()
        assert failed_reason(pipeline, poisoned[fault]) == reason
        delivered(pipeline, normal, NEXT_WITHIN + (time.monotonic() - started))
    assert not pipeline.receiver.by_queue_id().keys() & set(poisoned.values())

    # Restarted, the service does not parse any of them again: each was Failed before its offset was committed.
    assert service.terminate() == 0
    restarted = pipeline.start(env=FAULTS)
    after = send(pipeline.config, "a@sender.test", ["help@in.test"], simple_message(subject="after the restart"))
    delivered(pipeline, after, 30)
    for queue_id in poisoned.values():
        assert f"queue_id={queue_id} stream=support stage=process" not in restarted.log_path.read_text()
        assert [r["status"] for r in activity(pipeline.config) if r["queue_id"] == queue_id] == ["failed"]


def test_hostile_and_big_messages_parse_within_the_limits_and_the_next_is_on_time(pipeline: Pipeline) -> None:
    # The edge refuses a header section over 1 MiB by default (test_edge_input.py); an operator may
    # allow more, and the parse must hold then too.
    pipeline.configure(max_message_size=30 * 1024 * 1024, max_header_size=4 * 1024 * 1024)
    service = pipeline.start()
    # Once a service-killer (quadratic in the stdlib's header registry): ~1.4 MB of header.
    words = [f"=?utf-8?q?w{i}?=" for i in range(100_000)]
    folded = "\r\n ".join(" ".join(words[i : i + 40]) for i in range(0, len(words), 40))
    big = attachment_message(20 * 1024 * 1024, "twenty megabytes")
    for poison in (simple_message(subject=folded), big):
        queue_id = send(pipeline.config, "a@sender.test", ["help@in.test"], poison)
        normal = send(pipeline.config, "a@sender.test", ["help@in.test"], simple_message(subject="behind it"))
        started = time.monotonic()
        delivered(pipeline, queue_id, 120)
        delivered(pipeline, normal, NEXT_WITHIN + (time.monotonic() - started))
    [hit] = pipeline.receiver.by_queue_id()[queue_id]
    assert hit.json["attachments"][0]["size"] == 20 * 1024 * 1024
    peak, limit = map(
        int, re.findall(rf"queue_id={queue_id} .*peak RSS (\d+) MiB \(parse_memory_limit (\d+) MiB\)", service.log())[0]
    )
    assert peak <= limit, (peak, limit)
    print(f"20 MiB attachment: parse worker peak RSS {peak} MiB, limit {limit} MiB")


def test_a_service_killed_while_parsing_parses_that_message_once_more_then_fails_it(pipeline: Pipeline) -> None:
    pipeline.configure(extra='[processing]\nparse_timeout = "10s"\n')
    mark = pipeline.tmp_path / "hanging-pid"
    env = {**FAULTS, "INBOUND_TEST_HANG_MARK": str(mark)}
    service = pipeline.start(env=env)
    poison = send(pipeline.config, "a@sender.test", ["help@in.test"], simple_message(extra="X-Test-Fault: hang\r\n"))
    worker = psutil.Process(int(wait_for(lambda: mark.exists() and mark.read_text(), 30, "the parse to start")))
    # Killed between publishing and removing the spool entry, the edge would publish the poison a
    # second time after the restart (at least once), and that copy is parsed too: not what this tests.
    spool = DataDir(pipeline.config.parent / "data").spool_new
    wait_for(lambda: not any(spool.iterdir()), 30, "the poison's spool entry to be removed")
    service.kill()
    # The worker goes with the service: nothing is left running the poison.
    wait_for(lambda: not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE, 10, "the worker to die")
    mark.unlink()
    pipeline.start(env=env)
    wait_for(mark.exists, 30, "the one parse after the restart")
    assert failed_reason(pipeline, poison) == "parsing took longer than parse_timeout (10s)"
    mark.unlink()
    normal = send(pipeline.config, "a@sender.test", ["help@in.test"], simple_message(subject="behind it"))
    # Its whole trip, from SMTP on, to a worker that may still be starting: seconds on a busy box.
    delivered(pipeline, normal, 15)
    assert not mark.exists(), "the poison was parsed a third time"
    assert [r["status"] for r in activity(pipeline.config) if r["queue_id"] == poison] == ["failed"]

"""Poison messages end as their own Failed record; the service and the messages behind them go on.

Real ``inbound serve`` processes; the parser's faults come from tests/faults/sitecustomize.py,
loaded through PYTHONPATH into every process of the service (production code has no hook).
"""

from __future__ import annotations

import os
import time

from tests.fixtures import Pipeline
from tests.harness import ROOT, activity, send, simple_message, wait_for

FAULTS = {"PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "faults"), os.environ.get("PYTHONPATH", "")])}
NEXT_WITHIN = 5.0


def delivered(pipeline: Pipeline, queue_id: str, within: float) -> None:
    wait_for(lambda: queue_id in pipeline.receiver.by_queue_id(), within, f"{queue_id} to be delivered")


def failed_reason(pipeline: Pipeline, queue_id: str) -> str:
    def reason() -> str | None:
        rows = [r for r in activity(pipeline.config) if r["queue_id"] == queue_id]
        return rows[0]["reason"] if rows and rows[0]["status"] == "failed" else None

    return str(wait_for(reason, 60, f"{queue_id} to be failed"))


def test_parser_faults_fail_that_message_once_and_the_next_is_delivered_on_time(pipeline: Pipeline) -> None:
    pipeline.configure(extra='[processing]\nparse_timeout = "3s"\nparse_memory_limit = "3x + 128MiB"\n')
    service = pipeline.start(env=FAULTS)
    expected = {
        "segfault": "the parse worker was killed by SIGSEGV while parsing this message",
        "exit": "the parse worker exited with status 3 while parsing this message",
        "hang": "parsing took longer than parse_timeout (3s)",
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

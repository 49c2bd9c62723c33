"""Peak memory while the process stage handles one big message: the parse worker and the stage itself.

Drives the real processor with the real parse worker (``IsolatedParser``: a
``python -m inbound.processing.parsechild`` process, under the default
``[processing]`` limits) over one message of ``--attachment`` MiB of random
bytes, base64-encoded as one attachment (25 MB for the default 18 MiB,
issue 10's case), and prints:

* the parse worker's peak RSS while it parsed and built the payload (its
  ``VmHWM``, reset before the job), with its idle RSS;
* the stage's own growth (the ``process`` role's side: the job out, the
  payload back, the ``messages`` record);

against the target of 3 x the message's size + 150 MB, and the enforced
limit (``parse_memory_limit``). Figures only: nothing here passes or fails.

    .venv/bin/python bench/parse_memory.py [--attachment 18]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Generator, Iterable
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inbound.bus import Record
from inbound.config import ProcessingSettings, StreamSettings
from inbound.envelope import Envelope, Recipient
from inbound.ids import new_queue_id
from inbound.processing.isolation import IsolatedParser
from inbound.processing.job import Outcome, ParseJob, peak_rss
from inbound.processing.process import Processor
from inbound.records import RECEIVED, encode_received
from inbound.routing import RoutingTable
from tests.harness import SECRET, RecordingProducer, attachment_message, simple_message

STREAM = StreamSettings("support", ("*@in.test",), "https://hook.example/", SECRET)
MB = 1_000_000


class Measured:
    """The parse worker, keeping each outcome (with its peak RSS) for the report."""

    def __init__(self, inner: IsolatedParser) -> None:
        self.inner = inner
        self.outcomes: list[Outcome] = []

    def run(self, job: ParseJob) -> Outcome:
        self.outcomes.append(self.inner.run(job))
        return self.outcomes[-1]

    def run_all(self, jobs: Iterable[ParseJob]) -> Generator[Outcome, None, None]:
        yield from map(self.run, jobs)  # one at a time: each job's peak is its own

    def close(self) -> None:
        self.inner.close()


def received(raw: bytes) -> Record:
    envelope = Envelope(
        new_queue_id(), "a@sender.test", (Recipient("help@in.test", "support", None),), "192.0.2.1:1", "h", False, ""
    )
    return Record(RECEIVED, 0, 0, b"", encode_received(envelope, raw), (), 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--attachment", type=int, default=18, help="attachment size in MiB (default 18: a 25 MB message)"
    )
    args = parser.parse_args()
    raw = attachment_message(args.attachment * 1024 * 1024, "bench")
    worker = IsolatedParser()
    measured = Measured(worker)
    limits = ProcessingSettings()
    routing = RoutingTable.from_streams([STREAM])
    processor = Processor(routing, RecordingProducer(), [STREAM], parser=measured, limits=limits)
    processor.handle([received(simple_message())])  # a warm worker
    assert worker.worker is not None
    idle = psutil.Process(worker.worker.pid).memory_info().rss  # its footprint between messages
    record = received(raw)
    stage_before = psutil.Process().memory_info().rss
    with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
        clear.write("5")
    processor.handle([record])
    stage_growth = peak_rss() - stage_before
    worker.close()
    outcome = measured.outcomes[1]
    assert outcome.failure is None, outcome.failure
    size = len(raw)
    target = 3 * size + 150 * MB
    print(f"message: {size / MB:.1f} MB ({args.attachment} MiB attachment, base64)")
    print(
        f"parse worker peak RSS: {outcome.peak_rss / MB:.0f} MB (idle {idle / MB:.0f} MB); "
        f"target 3 x size + 150 MB = {target / MB:.0f} MB: {'within' if outcome.peak_rss <= target else 'OVER'}; "
        f"enforced parse_memory_limit {limits.memory_limit(size) / MB:.0f} MB above idle"
    )
    print(f"process stage growth while handling it: {stage_growth / MB:.0f} MB")


if __name__ == "__main__":
    main()

"""Which CPUs each process of ``inbound serve`` runs on, and the parse worker's priority.

The pipeline process is eight threads taking turns at one GIL: every SQLite
call, socket operation and log write lets go of it, and another thread takes
it. Spread by the kernel over every CPU, each such turn wakes a thread on
another CPU (an inter-processor interrupt; in a virtual machine, an exit to
the host) and runs it with cold caches. Kept on one CPU, the same turns are
switches on that CPU. It cannot use more than about one CPU anyway.

So, when ``serve`` may use two CPUs or more and ``processing.pin_pipeline`` is
on (the default), the pipeline runs on the last of them and the edge on the
others, where the pipeline's threads never take its time; the parse worker the
pipeline starts runs on any of them. Measured on two CPUs (``bench/``,
alternating runs): 17 context switches a message in the pipeline instead of
40, its CPU a message 15-20 % less, 10-20 % more delivered and accepted a
second. The parse worker kept with the edge instead was slower on both counts.

The parse worker can also run at a lower CPU priority than the rest:
``processing.parse_worker_nice`` levels below the process that starts it. It
is the one process that runs on the edge's CPUs as well, and while mail
arrives faster than it is parsed the two take turns there; lowered, it lets
the edge, on whose replies senders wait, go first. It is a trade, so it is off
by default (0). Measured on two CPUs at 10: with 20,000 messages at once on the
embedded bus (``bench/throughput.py``, alternating runs) 1,065-1,249 accepted
a second against 810-959, delivered the same; but on Kafka at 200 msg/s, where
the broker shares the CPUs, p99 179-196 ms against 68-108, since the parse
worker then gave way to every other process too. At 3 it cost no latency and
gained nothing. The pipeline keeps its priority in any case: it sets the
end-to-end rate, and lowered as well it gave its CPU to every other process
(end to end 3-7 % less in ``bench/compare.py``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Set

log = logging.getLogger(__name__)

CPUs = frozenset[int]


def placement(allowed: Set[int]) -> dict[str, CPUs]:
    """The CPUs of each child of ``serve`` by name (``edge``, ``pipeline``); none with fewer than two."""
    if len(allowed) < 2:
        return {}
    last = max(allowed)
    return {"pipeline": frozenset({last}), "edge": frozenset(allowed) - {last}}


def allowed() -> CPUs:
    """The CPUs this process may run on."""
    return frozenset(os.sched_getaffinity(0))


def pin(cpus: CPUs) -> CPUs | None:
    """Run this process on *cpus* from now on; the CPUs it could use before, or None if it cannot.

    Call it before starting threads: a thread takes its CPUs from the thread that starts it.
    """
    before = allowed()
    try:
        os.sched_setaffinity(0, cpus)
    except OSError as exc:  # a CPU taken away since serve started (cpuset, hotplug): run anywhere
        log.warning("cannot run on CPUs %s (%s): running on %s", format_cpus(cpus), exc.strerror, format_cpus(before))
        return None
    return before


def lower_priority(by: int) -> None:
    """Run this process *by* nice levels lower than now (0: unchanged).

    Call it before starting threads: on Linux a nice value is a thread's, and a thread takes it
    from the thread that starts it, as does a child process.
    """
    if by:
        os.nice(by)


def format_cpus(cpus: Set[int]) -> str:
    return ",".join(str(cpu) for cpu in sorted(cpus))


def parse_cpus(text: str) -> CPUs:
    """CPU numbers as :func:`format_cpus` writes them; ValueError for anything else."""
    try:
        cpus = frozenset(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"not a comma-separated list of CPU numbers: {text!r}") from None
    if any(cpu < 0 for cpu in cpus):
        raise ValueError(f"CPU numbers start at 0: {text!r}")
    return cpus

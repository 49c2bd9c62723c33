"""Parse worker: the process that reads strangers' bytes for ``process``, so that only it can die of them.

Started by :class:`inbound.processing.isolation.IsolatedParser` as
``python -m inbound.processing.parsechild PARENT_PID NICE [CPUS]`` (NICE: how
many levels below its parent's its CPU priority is; CPUS: where to run, when
not where the parent does: both in ``inbound/cpus.py``). Input: job frames on
stdin (see ``job.py``). Output: one outcome frame per job on the pipe that was
stdout (fd 1 is pointed at stderr first, so nothing a library prints can
corrupt the protocol). Exits 0 at the end of stdin.

Limits, set afresh before each job (the memory limit lifted again before the answer is written):

* ``RLIMIT_AS``: the address space it has now plus the job's
  ``memory_limit``. Going over raises ``MemoryError`` in Python (answered as
  that message's failure) or kills a C extension that does not check malloc
  (the parent sees the signal). Either way the message ends, not the service.
* ``RLIMIT_CPU``: CPU used so far plus the job's timeout and a grace. The
  parent kills the worker on wall time; this is the backstop for a runaway
  parse whose parent is gone.

It ignores SIGINT, SIGTERM and SIGHUP: an operator's Ctrl-C, systemd's stop
or a closed terminal reaches the whole process group, and a worker ended by
one mid-parse would fail a good message; the pipeline ends it by closing its
stdin, once it has drained. It dies with its parent (``PR_SET_PDEATHSIG``), and it retires -- exits 0
right after answering -- once a job has grown it by more than
``RETIRE_GROWTH``: malloc keeps a big message's heap, and the next job should
start small. The parent starts a new worker when it next needs one.
"""

from __future__ import annotations

import os
import resource
import signal
import sys
from dataclasses import replace

from ..cpus import lower_priority, parse_cpus, pin
from ..log import FORMATS, configure
from ..supervisor import die_with_parent
from .job import Outcome, address_space, decode_job, encode_outcome, peak_rss, read_frame, write_frame
from .work import run_job

RETIRE_GROWTH = 64 * 1024 * 1024
CPU_GRACE = 5  # seconds beyond the wall-time limit before the kernel ends a runaway parse itself


def main(argv: list[str]) -> int:
    for operators_signal in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(operators_signal, signal.SIG_IGN)
    die_with_parent()
    if os.getppid() != int(argv[1]):  # the parent died before the line above took effect
        return 1
    lower_priority(int(argv[2]))
    if len(argv) > 3:
        pin(parse_cpus(argv[3]))
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    # Whatever a library logs here reaches the service's log: in its format, one line each.
    log_format = os.environ.get("INBOUND_LOG_FORMAT", "text")
    configure("WARNING", log_format if log_format in FORMATS else "text")
    jobs = sys.stdin.buffer
    footprint = address_space()
    while (frame := read_frame(jobs)) is not None:
        job = decode_job(frame)
        del frame  # the job holds its own copy of the message: one is enough at the parse's peak
        measured = job.measures_peak
        if measured:
            _reset_peak_rss()
        _limit(job.memory_limit, job.timeout)
        exhausted = False
        try:
            outcome = run_job(job)
        except MemoryError:
            exhausted = True  # the heap may be half-built: the next job gets a fresh worker
            outcome = Outcome.failed(
                f"parsing needs more memory than parse_memory_limit ({job.memory_limit >> 20} MiB)"
            )
        del job
        _soft_limit(
            resource.RLIMIT_AS, resource.RLIM_INFINITY
        )  # the limit is the job's, not the answer's or the next read's
        write_frame(answers, *encode_outcome(replace(outcome, peak_rss=peak_rss() if measured else 0)))
        if exhausted or address_space() - footprint > RETIRE_GROWTH:
            return 0
    return 0


def _limit(memory: int, seconds: float) -> None:
    _soft_limit(resource.RLIMIT_AS, address_space() + memory)
    used = resource.getrusage(resource.RUSAGE_SELF)
    _soft_limit(resource.RLIMIT_CPU, int(used.ru_utime + used.ru_stime + seconds) + CPU_GRACE)


def _soft_limit(kind: int, wanted: int) -> None:
    """Set *kind*'s soft limit to *wanted* (``RLIM_INFINITY``: none), but never above its hard limit."""
    _, hard = resource.getrlimit(kind)
    if hard != resource.RLIM_INFINITY and (wanted == resource.RLIM_INFINITY or wanted > hard):
        wanted = hard
    resource.setrlimit(kind, (wanted, hard))


def _reset_peak_rss() -> None:
    """Start ``VmHWM`` again from the current RSS (Linux >= 4.0), so a measured job reports its own peak."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
            clear.write("5")
    except OSError:
        pass  # the peak then covers the worker's life so far: still an upper bound


if __name__ == "__main__":
    sys.exit(main(sys.argv))

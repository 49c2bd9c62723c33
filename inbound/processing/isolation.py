"""Isolation: the ``process`` stage's parsing runs in a worker process with a time and a memory limit.

Stage: called by the processor (``process.py``) once per ``received`` record
with a :class:`~inbound.processing.job.ParseJob`; returns its
:class:`~inbound.processing.job.Outcome`. Why: parsing is where strangers'
bytes meet mail-parser, the stdlib ``email`` package and C code. A message
that makes them run away (memory, time) or crash must end as *that message's*
Failed record; if it took the pipeline process down, the record would come
again after the restart and take it down again, and nothing behind it would
ever be delivered.

Process model: one long-lived worker (``parsechild.py``) per processor,
fed jobs over a pipe in the order of the records. It parses one at a time, and
the next job is sent while it answers the last, so it starts on it while the
processor handles that answer (a job's ``parse_timeout`` counts from when its
answer is awaited: that head start is never more than one answer's handling).
It is started with the processor and started again right after it dies, so
the next message does not wait for the start-up.

Failure behaviour, each an :meth:`Outcome.failed` the processor records as
Failed (durably, on the bus, before the ``received`` offset is committed --
``worker.py``), so a message that killed a worker is not parsed again:

* no answer within ``processing.parse_timeout``: the worker is killed (a stop
  of this process -- SIGSTOP, a frozen cgroup, a stalled VM -- is not counted:
  see ``_Deadline``; and an answer already there is read, however late);
* the worker dies while parsing (a signal: a segfault, the kernel's answer to
  a C extension past the memory limit, ``SIGXCPU``; or an exit status);
* the worker answers ``MemoryError`` (past ``processing.parse_memory_limit``).

A worker that exited 0 before reading the job had retired (see
``parsechild.py``): the job goes to a new one, once. So does the job of a
worker ended by SIGINT, SIGTERM or SIGHUP: signals an operator sends the whole
process group (Ctrl-C, systemd's stop, a closed terminal), which the worker
ignores once it runs and nothing here sends; only one arriving while it starts
can end it. A job sent ahead to a worker that then died or was killed is sent
again to the next.

If the whole pipeline process is killed while a job runs, the worker dies
with it (``PR_SET_PDEATHSIG``) and the record, not yet committed, is parsed
once more after the restart -- by a worker again, so that can repeat at
most as often as the service itself is killed, never because of the message.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Generator, Iterable
from typing import IO, Protocol

from ..cpus import CPUs, format_cpus
from .job import Outcome, ParseJob, decode_outcome, encode_job

log = logging.getLogger(__name__)

_LENGTH_BYTES = 8
_CHUNK = 1 << 20
_ANSWER_MARGIN = 16 << 20
STOP_TIMEOUT = 5.0
# A job is sent ahead only up to this size: a big one gains little (its own parse dominates), and
# its encoded copy would wait in this process beside the one being parsed.
AHEAD_LIMIT = 1 << 20
# The longest single wait for an answer: the most of a stop of this process counted against a job (_Deadline).
_SLICE = 0.25


class Parser(Protocol):
    def run(self, job: ParseJob) -> Outcome: ...

    def run_all(self, jobs: Iterable[ParseJob]) -> Generator[Outcome, None, None]:
        """The outcomes of *jobs*, in their order, each as soon as it is known; close it if
        leaving before the last."""

    def close(self) -> None: ...


class InProcessParser:
    """:func:`~inbound.processing.work.run_job` in this process, without limits: for tests and benches."""

    def run(self, job: ParseJob) -> Outcome:
        from .work import run_job  # the parser and the formats, only in a process that parses

        return run_job(job)

    def run_all(self, jobs: Iterable[ParseJob]) -> Generator[Outcome, None, None]:
        yield from map(self.run, jobs)

    def close(self) -> None:
        pass


class _Died(Exception):
    """The worker ended before answering."""


class _Oversized(Exception):
    """The worker announced an answer larger than any honest one (it is not trusted: it reads hostile bytes)."""


class IsolatedParser:
    """Runs each job in the worker process; see the module docstring for what can go wrong and what then."""

    def __init__(self, cpus: CPUs | None = None, nice: int = 0) -> None:
        """*cpus*: where the worker runs, if not where this process does; *nice*: how far below this
        process's its CPU priority is (both: inbound/cpus.py)."""
        self.worker: subprocess.Popen[bytes] | None = None
        self.cpus = cpus
        self.nice = nice

    def start(self) -> None:
        where = [format_cpus(self.cpus)] if self.cpus else []
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "inbound.processing.parsechild", str(os.getpid()), str(self.nice), *where],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        log.info("stage=process parse worker started, pid %d", self.worker.pid)

    def run(self, job: ParseJob) -> Outcome:
        return next(self.run_all([job]))

    def run_all(self, jobs: Iterable[ParseJob]) -> Generator[Outcome, None, None]:
        """Each job's outcome, in order; the next job is sent while the worker answers this one,
        so it parses the next while the caller handles this answer."""
        upcoming = iter(jobs)
        job = next(upcoming, None)
        feed: _Feed | None = None  # the worker that already has *job*, and what of it is still to write
        try:
            while job is not None:
                following = next(upcoming, None)
                outcome, feed = self._run_one(job, following, feed)
                yield outcome
                job = following
        finally:
            if feed is not None:  # left early: the worker's next answer is a job nobody waits for
                self._replace(feed.worker)

    def _run_one(self, job: ParseJob, following: ParseJob | None, feed: _Feed | None) -> tuple[Outcome, _Feed | None]:
        """*job*'s outcome, and the feed that carries *following* to the worker (None: send it again)."""
        ahead = following is not None and len(following.raw) <= AHEAD_LIMIT
        for attempt in (1, 2):
            if self.worker is None:
                self.start()
            elif self.worker.poll() is not None:  # it ended between jobs (retired after a MemoryError, or killed)
                self._reap(self.worker)
            worker = self.worker
            assert worker is not None
            if feed is None or feed.worker is not worker:
                feed = _Feed(worker)
                feed.send(encode_job(job))
            if ahead:
                assert following is not None
                feed.send(encode_job(following))
            try:
                frame = feed.answer(_Deadline(job.timeout), _largest_answer(job))
            except _Oversized as exc:
                self._kill(worker)
                failure = f"the parse worker announced an answer of {exc} bytes, more than it can hold"
            except TimeoutError:
                self._kill(worker)
                failure = f"parsing took longer than parse_timeout ({job.timeout:g}s)"
            except _Died:
                status = self._reap(worker)
                if (status == 0 or -status in _NOT_THE_MESSAGE) and attempt == 1:
                    feed = None
                    continue  # it had retired before this job reached it, or an operator's signal ended it
                failure = f"the parse worker {_describe(status)} while parsing this message"
            else:
                try:
                    return decode_outcome(frame), feed if ahead else None
                except (ValueError, KeyError, TypeError) as exc:
                    self._kill(worker)
                    failure = f"the parse worker sent an unreadable answer: {exc}"
            return Outcome.failed(failure), None
        raise AssertionError("unreachable: the second attempt always returns")

    def close(self) -> None:
        worker, self.worker = self.worker, None
        if worker is None:
            return
        assert worker.stdin is not None
        try:
            worker.stdin.close()  # the worker's signal to exit
            worker.wait(STOP_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired):
            worker.kill()
            worker.wait()
        _close(worker)

    def _replace(self, worker: subprocess.Popen[bytes]) -> None:
        """Kill *worker* and start another, quietly: nothing went wrong in it, but it holds a job
        whose answer would otherwise be read as the next job's."""
        worker.kill()
        worker.wait()
        _close(worker)
        self.start()

    def _kill(self, worker: subprocess.Popen[bytes]) -> None:
        worker.kill()
        self._reap(worker)

    def _reap(self, worker: subprocess.Popen[bytes]) -> int:
        """Wait for a dead or killed worker and start the next one at once, so the next job does not wait."""
        try:
            status = worker.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:  # closed its pipes but lives on: it is not trusted with another job
            worker.kill()
            status = worker.wait()
        _close(worker)
        if status != 0:
            log.error("stage=process parse worker pid %d %s; starting a new one", worker.pid, _describe(status))
        self.start()
        return status


def _largest_answer(job: ParseJob) -> int:
    """The most bytes an honest answer to *job* can take: per stream, the message (base64 for its
    attachments, and again when the raw message is included) and a margin for the fields."""
    return len(job.renders) * (3 * len(job.raw) + _ANSWER_MARGIN) + _ANSWER_MARGIN


class _Feed:
    """The frames on their way to one worker, and the reading of its answers.

    Big messages make big frames: a request is written from a view and an answer read into one
    buffer of its announced size, so neither is ever copied whole here. What is not written when
    an answer is complete (the next job, sent ahead) is written during the next answer.
    """

    def __init__(self, worker: subprocess.Popen[bytes]) -> None:
        assert worker.stdin is not None
        assert worker.stdout is not None
        self.worker = worker
        self.jobs, self.answers = worker.stdin.fileno(), worker.stdout.fileno()
        os.set_blocking(self.jobs, False)
        self.outgoing: list[memoryview] = []

    def send(self, request: bytes) -> None:
        self.outgoing += [memoryview(len(request).to_bytes(_LENGTH_BYTES, "big")), memoryview(request)]

    def answer(self, deadline: _Deadline, largest: int) -> bytearray:
        """One answer frame, writing meanwhile; never waiting past *deadline* (TimeoutError: only
        when nothing is ready, so an answer already there is read however late), nor allocating
        for an answer announced as larger than *largest* (_Oversized)."""
        length = bytearray(_LENGTH_BYTES)
        incoming, received = memoryview(length), 0
        answer: bytearray | None = None
        with selectors.DefaultSelector() as selector:
            if self.outgoing:
                selector.register(self.jobs, selectors.EVENT_WRITE)
            selector.register(self.answers, selectors.EVENT_READ)
            while True:
                ready = selector.select(deadline.next_wait())
                if not ready and deadline.passed():
                    raise TimeoutError
                for key, _ in ready:
                    if key.fd == self.jobs:
                        self._write()
                        if not self.outgoing:
                            selector.unregister(self.jobs)
                        continue
                    count = os.readv(self.answers, [incoming[received:]])
                    if not count:
                        raise _Died
                    received += count
                    if received < len(incoming):
                        continue
                    if answer is not None:
                        return answer
                    size = int.from_bytes(length, "big")
                    if size > largest:
                        raise _Oversized(size)
                    answer = bytearray(size)
                    incoming, received = memoryview(answer), 0

    def _write(self) -> None:
        try:
            written = os.write(self.jobs, self.outgoing[0][:_CHUNK])
        except BrokenPipeError:
            raise _Died from None
        self.outgoing[0] = self.outgoing[0][written:]
        while self.outgoing and not self.outgoing[0]:
            self.outgoing.pop(0)


class _Deadline:
    """When the worker's time for one job is up: *seconds* of wall time, not counting the time this
    process was stopped (SIGSTOP, a frozen cgroup as ``docker pause`` makes, a stalled VM).

    Such a stop is no fault of the message: the worker may have answered meanwhile, or been
    frozen with this process (a whole cgroup). It shows as a wait that ended later than asked,
    and that excess is added back. Waits are cut into slices of ``_SLICE``: the part of a stop that
    falls within an asked-for wait cannot be told from waiting, so at most a slice of it is counted.
    """

    def __init__(self, seconds: float) -> None:
        self.checked = time.monotonic()
        self.at = self.checked + seconds
        self.asked = 0.0  # the wait asked for since *checked*

    def next_wait(self) -> float:
        """How long the next wait may be: up to the deadline, at most a slice."""
        self.asked = min(max(self._remaining(), 0.0), _SLICE)
        return self.asked

    def passed(self) -> bool:
        return self._remaining() <= 0

    def _remaining(self) -> float:
        now = time.monotonic()
        self.at += max(0.0, now - self.checked - self.asked)  # this process was not running: not the worker's time
        self.checked, self.asked = now, 0.0
        return self.at - now


# Signals that end a worker for the operator's reasons, never the message's (see the module's docstring).
_NOT_THE_MESSAGE = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})


def _describe(status: int) -> str:
    if status < 0:
        try:
            return f"was killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"was killed by signal {-status}"
    return f"exited with status {status}"


def _close(worker: subprocess.Popen[bytes]) -> None:
    pipes: tuple[IO[bytes] | None, ...] = (worker.stdin, worker.stdout)
    for pipe in pipes:
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()

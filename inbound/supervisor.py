"""``inbound serve``'s default process model: a supervisor and its children.

The SMTP edge must answer every client promptly and must never die of a
message; parsing is CPU-bound Python, holds the GIL and is fed by strangers.
So the edge and the pipeline run in separate processes, each what
``inbound serve --roles ...`` runs (:mod:`inbound.serving`)::

    inbound serve                      supervisor: starts, watches, signals
    ├── edge      smtp,publish
    └── pipeline  process,deliver,record

They share nothing in memory, only the data directory and the bus, which
every role already shares safely between processes (spool files named by
queue id and one publisher under a lock; consumer groups with leases; outbox
rows leased per attempt; the activity store written in transactions).

* **CPUs**: with two or more, the pipeline runs on one and the edge on the
  others (``processing.pin_pipeline``; why in :mod:`inbound.cpus`).
* **Start**: the data directory is checked here first, so a refusal (missing,
  unmarked, read-only) is one clear error before anything runs. Each child
  says it has started through a pipe; one that exits before that is a
  start-up failure: the others are stopped and ``serve`` exits with its status.
* **Signals**: TERM and INT drain in order -- the edge first (``421`` to new
  clients, the DATA in hand finished, the spool published), then the
  pipeline (batches committed, attempts under way recorded) -- and ``serve``
  exits 0. HUP is passed to every child once all have started; one that comes
  while the service starts waits till then, blocked (by ``serve``, and in each
  child until its service takes it): its default action would end the process.
* **A child that dies** is started again after a back-off (1 s, doubling up to
  30 s; back to 1 s once a child has run for a minute), logged at ERROR. The
  supervisor never gives up: mail must go on. It runs with the settings the
  service runs with (:mod:`inbound.snapshot`), not the file as it is now.
* **The supervisor dying** (SIGKILL included) takes its children with it
  (``PR_SET_PDEATHSIG``), so a killed service is gone as a whole, as an
  operator -- and the crash tests -- expect.
* **Its memory**: ``serve`` reads the configuration and checks the data
  directory, then replaces itself (same pid) with ``python -m
  inbound.supervisor`` (:func:`become_supervisor`), which imports only this
  module and the log format, and holds the settings read as a memory file it
  hands to its children. Watching children needs neither the command
  line's libraries nor the configuration's (TOML, SSL, IDNA); keeping them for
  the life of the service made the supervisor 21-22 MiB of PSS, where it is 10.
  Its children, ``python -m inbound.serving``, skip the command line too.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

from .cpus import CPUs, format_cpus, parse_cpus
from .log import configure as configure_logging

log = logging.getLogger("inbound.supervisor")  # by name: run by serve, this module is __main__

#: The children ``serve`` runs by default, in start order; stopped in the same order.
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("edge", ("smtp", "publish")),
    ("pipeline", ("process", "deliver", "record")),
)
BACKOFF_START, BACKOFF_MAX = 1.0, 30.0
STABLE_AFTER = 60.0  # a child up this long is healthy again: its next restart waits BACKOFF_START
STOP_TIMEOUT = 120.0  # per child, after TERM; then KILL
_PR_SET_PDEATHSIG = 1
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)


@dataclass
class Child:
    name: str
    roles: tuple[str, ...]
    cpus: CPUs | None = None  # None: wherever the supervisor may run (inbound/cpus.py)
    process: subprocess.Popen[bytes] | None = None
    ready_fd: int | None = None  # read end of the pipe the child writes to once started
    release_fd: int | None = None  # write end of the pipe whose closing lets a drained child exit
    started_at: float = 0.0
    backoff: float = BACKOFF_START
    restart_at: float | None = None  # when a dead child is due to start again
    ever_ready: bool = False
    exits: list[int] = field(default_factory=list)


def die_with_parent() -> None:
    """In a child (before exec, or first thing after it): be killed when its parent dies; default signal mask."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def _before_exec() -> None:
    """In a child before exec: die with the supervisor; hold HUP until its service takes it (``Service.run``)."""
    die_with_parent()
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGHUP])  # its default action would end the child


class Supervisor:
    def __init__(
        self,
        settings_fd: int,
        log_level: str,
        log_format: str,
        groups: Sequence[tuple[str, tuple[str, ...]]] = GROUPS,
        cpus: Mapping[str, CPUs] | None = None,
    ) -> None:
        """*settings_fd*: the memory file of :mod:`inbound.snapshot`, which every child reads its settings from.

        *cpus*: the CPUs of each child by name (:func:`inbound.cpus.placement`); a child not named runs anywhere.
        """
        self.settings_fd = settings_fd
        self.log_level = log_level
        self.log_format = log_format
        self.children = [Child(name, roles, (cpus or {}).get(name)) for name, roles in groups]

    def run(self) -> int:
        """Start the children and watch them until TERM/INT; the exit status for ``serve``."""
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        for child in self.children:
            self._start(child)
            status = self._wait_ready(child)
            if status is not None:
                log.error("%s (%s) failed to start (exit status %d)", child.name, ",".join(child.roles), status)
                self._stop_all()
                return status or 1
        log.info("inbound started: %s", ", ".join(f"{c.name} pid {self._pid(c)}" for c in self.children))
        while True:
            received = signal.sigtimedwait(_SIGNALS, self._next_wakeup())
            if received is not None and received.si_signo in (signal.SIGTERM, signal.SIGINT):
                log.info("shutting down: stopping %s", ", ".join(c.name for c in self.children))
                return self._stop_all()
            if received is not None and received.si_signo == signal.SIGHUP:
                self._signal_all(signal.SIGHUP)
            self._reap_and_restart()

    def _pid(self, child: Child) -> int:
        return child.process.pid if child.process is not None else 0

    def _start(self, child: Child) -> None:
        ready_r, ready_w = os.pipe()
        release_r, release_w = os.pipe()
        # Read by inbound.serving.main: the settings, roles, log level and format, pipes, CPUs.
        args = [sys.executable, "-m", "inbound.serving", str(self.settings_fd), ",".join(child.roles), self.log_level]
        args += [self.log_format, str(ready_w), str(release_r), format_cpus(child.cpus) if child.cpus else ""]
        passed = (self.settings_fd, ready_w, release_r)
        # preexec_fn is safe here: the supervisor runs a single thread.
        child.process = subprocess.Popen(args, pass_fds=passed, preexec_fn=_before_exec)  # noqa: PLW1509
        os.close(ready_w)
        os.close(release_r)
        self._release(child)
        child.ready_fd, child.release_fd = ready_r, release_w
        child.started_at, child.restart_at = time.monotonic(), None

    def _release(self, child: Child) -> None:
        if child.release_fd is not None:
            os.close(child.release_fd)
            child.release_fd = None

    def _wait_ready(self, child: Child) -> int | None:
        """None once *child* says it started; its exit status if it exited first."""
        assert child.process is not None
        assert child.ready_fd is not None
        said = os.read(child.ready_fd, 1)  # returns b"" when the child exits without writing
        os.close(child.ready_fd)
        child.ready_fd = None
        if said:
            child.ever_ready = True
            return None
        return child.process.wait()

    def _next_wakeup(self) -> float:
        due = [c.restart_at for c in self.children if c.restart_at is not None]
        return max(0.0, min(due) - time.monotonic()) if due else 60.0

    def _reap_and_restart(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.process is not None and (status := child.process.poll()) is not None:
                child.exits.append(status)
                child.process = None
                if now - child.started_at > STABLE_AFTER:
                    child.backoff = BACKOFF_START
                child.restart_at = now + child.backoff
                log.error(
                    "%s (%s) exited with status %d; starting it again in %.0fs",
                    child.name,
                    ",".join(child.roles),
                    status,
                    child.backoff,
                )
                child.backoff = min(child.backoff * 2, BACKOFF_MAX)
            if child.process is None and child.restart_at is not None and child.restart_at <= now:
                self._start(child)
                if self._wait_ready(child) is None:
                    log.info("%s started again, pid %d", child.name, self._pid(child))

    def _signal_all(self, signum: int) -> None:
        for child in self.children:
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(signum)

    def _stop_all(self) -> int:
        """Drain every child at once; 0 when every one stopped cleanly.

        Each is released in reverse start order: the edge keeps answering ``421`` to new
        clients until the pipeline behind it has finished what it had in hand.
        """
        self._signal_all(signal.SIGTERM)
        worst = 0
        for child in reversed(self.children):
            self._release(child)
            process = child.process
            if process is None:
                continue
            try:
                status = process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                log.error("%s did not stop within %.0fs: killed", child.name, STOP_TIMEOUT)
                process.kill()
                status = process.wait()
            worst = worst or status
        log.info("inbound stopped")
        return worst


def become_supervisor(settings_fd: int, log_level: str, log_format: str, cpus: Mapping[str, CPUs]) -> NoReturn:
    """Replace this process (its pid kept) with a :class:`Supervisor` of *settings_fd*'s service; never returns.

    *settings_fd*: a memory file of :mod:`inbound.snapshot`, left open across the ``exec``.
    """
    args = [sys.executable, "-m", __name__, str(settings_fd), log_level, log_format]
    args += [f"{name}={format_cpus(placed)}" for name, placed in cpus.items()]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, args)


def main(argv: Sequence[str]) -> int:
    """Run the supervisor with what :func:`become_supervisor` passed; the exit status for ``serve``."""
    settings_fd, log_level, log_format, *placed = argv
    configure_logging(log_level, log_format)
    cpus = {name: parse_cpus(listed) for name, _, listed in (each.partition("=") for each in placed)}
    return Supervisor(int(settings_fd), log_level, log_format, cpus=cpus).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Run stages in this process: ``inbound serve --roles ...``, and each child of ``serve``'s supervisor.

The supervisor starts its children as ``python -m inbound.serving`` rather than through
the command line, so that a process serving for months holds the stages it runs and
not click and the commands' modules (2-3 MiB of each child's PSS, measured). Its arguments,
positional, are written by :class:`inbound.supervisor.Supervisor` and read by
:func:`main`: the descriptor of the settings the service runs with (:mod:`inbound.snapshot`:
a child started again after a crash runs with them, not with the file as edited since),
the roles (comma-separated), the log level and format, the descriptor to say "started"
on, the one whose end of file releases a drained child, and the CPUs to run on ("" for
anywhere).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from . import log as logsetup
from . import snapshot
from .config import Settings
from .cpus import CPUs, parse_cpus, pin
from .errors import ConfigError, InboundError
from .metricsdir import use_data_dir


def serve_roles(
    settings: Settings,
    roles: Sequence[str],
    *,
    cpus: CPUs | None = None,
    ready_fd: int | None = None,
    release_fd: int | None = None,
    on_reloaded: Callable[[Settings], None] | None = None,
) -> None:
    """Run *roles* until SIGTERM or SIGINT; InboundError or OSError when they cannot start.

    *cpus*: where every thread runs, the parse worker excepted; *ready_fd*: written to once
    serving; *release_fd*: once drained, wait for its end of file (the supervisor's say);
    *on_reloaded*: given the settings of each HUP reload applied.
    """
    import asyncio  # here: the command line imports this module, and most commands run no event loop

    from .service import Service  # every stage: only in a process that runs roles

    # Before any thread starts, so that every one runs there; the parse worker may run anywhere.
    worker_cpus = pin(cpus) if cpus is not None else None
    released = (lambda: _until_closed(release_fd)) if release_fd is not None else None
    service = Service(settings, roles, worker_cpus=worker_cpus, on_reloaded=on_reloaded)
    asyncio.run(service.run(on_started=lambda: _say_ready(ready_fd), released=released))


def start_failure(exc: InboundError | OSError) -> str:
    """Why roles could not start, worded alike by ``serve`` and by a child of its supervisor."""
    if isinstance(exc, ConfigError):
        return exc.summary()
    if isinstance(exc, InboundError):
        return str(exc)
    return f"cannot start: {exc}"


def count_into_data_dir(settings: Settings) -> None:
    """Before any stage is imported: metrics count into the data directory, shared by every process.

    First of all: prometheus-client, once imported, counts in memory or in that directory for
    good (:mod:`inbound.metricsdir`).
    """
    try:
        marked = settings.data.marker.exists()
    except PermissionError:
        marked = False  # DataDir.check says why, once the service starts
    if marked:
        use_data_dir(settings.storage.data_dir)


def _say_ready(fd: int | None) -> None:
    if fd is not None:
        os.write(fd, b"1")
        os.close(fd)


async def _until_closed(fd: int) -> None:
    """Return once the supervisor closes its end of *fd* (it has stopped everything else, or died)."""
    import asyncio  # already imported by serve_roles, which runs this

    closed = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(fd, closed.set)
    await closed.wait()
    loop.remove_reader(fd)


def main(argv: Sequence[str]) -> int:
    """A child of the supervisor: its exit status, with the reason on stderr when it could not start."""
    settings_fd, roles, log_level, log_format, ready_fd, release_fd, cpus = argv
    try:
        settings = snapshot.read(int(settings_fd))
        count_into_data_dir(settings)
        logsetup.configure(log_level, log_format)
        serve_roles(
            settings,
            roles.split(","),
            cpus=parse_cpus(cpus) if cpus else None,
            ready_fd=int(ready_fd),
            release_fd=int(release_fd),
            # A sibling started after this reload runs with the streams it applied.
            on_reloaded=lambda reloaded: snapshot.write(int(settings_fd), reloaded),
        )
    except (InboundError, OSError) as exc:
        print(f"Error: {start_failure(exc)}", file=sys.stderr)  # as click prints the command's errors
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Where every serving process counts: ``<data_dir>/metrics``, chosen before prometheus-client is imported.

Apart from :mod:`inbound.metrics` because prometheus-client picks how a counter
holds its value (in memory, or in a file of the multiprocess directory) once,
when it is first imported, from ``PROMETHEUS_MULTIPROC_DIR``: a process that
imported it before :func:`use_data_dir` kept its counts to itself, and
``/metrics``, which reads only the directory, never showed them (``serve
--roles ...,api``, one process).
"""

from __future__ import annotations

import os
from pathlib import Path

MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR"


def use_data_dir(data_dir: Path) -> None:
    """Make this process and those it starts count into ``<data_dir>/metrics`` (call before importing stages).

    The files of processes that have ended are removed: never a live process's, whatever is
    starting beside it. Their counts go with them, which Prometheus reads as a counter reset
    (``rate()`` and ``increase()`` allow for it).
    """
    directory = data_dir / "metrics"
    try:
        directory.mkdir(exist_ok=True)
    except OSError:
        return  # an unwritable data directory: the start-up check that follows refuses it, with the reason
    for path in directory.glob("*_*.db"):
        pid = path.stem.rpartition("_")[2]
        if pid.isdigit() and not _alive(int(pid)):
            path.unlink(missing_ok=True)
    os.environ[MULTIPROCESS] = str(directory)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True

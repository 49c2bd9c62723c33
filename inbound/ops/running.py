"""Which ``inbound serve`` processes run on this data directory, and with which roles: for ``inbound status``.

Each serving process writes ``<data_dir>/run/<pid>.json`` (its pid, roles and
start time) and holds an exclusive ``flock`` on it for as long as it lives.
The kernel drops the lock when the process ends, however it ends (SIGKILL
included), so a reader tells a live process from a stale file by trying the
lock, never by trusting the pid (pids are reused). Stale files are removed by
the next reader or the next process to start. Only this host's processes
show: other hosts have their own data directories.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..clock import now_rfc3339


@dataclass(frozen=True, slots=True)
class Running:
    pid: int
    roles: tuple[str, ...]
    started_at: str
    host: str


def announce(data_dir: Path, roles: Sequence[str]) -> Callable[[], None]:
    """Mark this process as serving *roles* until the returned function is called (or it dies)."""
    directory = data_dir / "run"
    directory.mkdir(exist_ok=True)
    path = directory / f"{os.getpid()}.json"
    # Locked and written under a name readers skip, then renamed: a reader never sees it unlocked.
    tmp = directory / f".{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    info = {"pid": os.getpid(), "roles": list(roles), "started_at": now_rfc3339(), "host": socket.gethostname()}
    os.write(fd, json.dumps(info).encode())
    os.replace(tmp, path)

    def withdraw() -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)

    return withdraw


def running(data_dir: Path) -> list[Running]:
    """The live serving processes on *data_dir*, oldest first; stale marks are removed."""
    found = []
    directory = data_dir / "run"
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue  # withdrawn meanwhile
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:  # held: its process lives
                info = json.loads(path.read_bytes() or b"{}")
                found.append(Running(info["pid"], tuple(info["roles"]), info["started_at"], info["host"]))
                continue
            path.unlink(missing_ok=True)  # nobody holds it: its process is gone
        except (ValueError, KeyError, OSError):
            continue  # being written this instant, or unreadable: not ours to judge
        finally:
            os.close(fd)
    return sorted(found, key=lambda r: (r.started_at, r.pid))

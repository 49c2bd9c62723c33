"""The data directory: where the spool, the embedded bus, the outbox and activity live.

:class:`DataDir` is the one place that knows the layout under
``storage.data_dir``; every other module asks it for a path, so a file is
never spelt out twice.

``inbound init`` creates it with an identity marker; ``inbound serve`` refuses
to start on a directory without one. Mail is personal data: the directory is
``0700`` and every file in it ``0600`` (every ``inbound`` command runs with a
``077`` umask, see :func:`private_files`), and ``serve`` refuses a directory
that group or others may read unless ``storage.allow_shared_permissions``. That catches the classic outage of a
service that starts before its volume is mounted and quietly fills an empty
directory on the root filesystem -- while the real spool waits, unseen, on the
unmounted volume.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from .clock import now_rfc3339
from .errors import DataDirError

MARKER = ".inbound-data"
PRIVATE = 0o700


def fsync_dir(path: Path) -> None:
    """Make the entries of *path* (a file created, renamed or removed in it) durable.

    Here rather than with the spool, its main user, so that the supervisor, which checks the data
    directory, does not import the edge and asyncio with it (1-2 MiB it would hold for nothing).
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(path: Path, data: bytes) -> None:
    """Write *path* whole or not at all, durably: a temporary file beside it, fsynced, renamed over it.

    The temporary file is this writer's own: two processes writing one name at once through one
    temporary file left a mix of both (each wrote from its start), which neither had written.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def private_files() -> None:
    """Make every file and directory this process creates readable by its owner only."""
    os.umask(0o077)


@dataclass(frozen=True, slots=True)
class DataDir:
    root: Path

    @property
    def marker(self) -> Path:
        return self.root / MARKER

    @property
    def spool(self) -> Path:
        """Accepted messages waiting to be published; see :mod:`inbound.edge.spool`."""
        return self.root / "spool"

    @property
    def spool_tmp(self) -> Path:
        """Entries being written: never acknowledged, removed when stale."""
        return self.spool / "tmp"

    @property
    def spool_new(self) -> Path:
        """Complete, fsynced entries: each one was answered 250."""
        return self.spool / "new"

    @property
    def publish_lock(self) -> Path:
        """Held by the one publisher working the spool."""
        return self.spool / "publish.lock"

    @property
    def quarantine(self) -> Path:
        """Damaged files, moved aside for ``inbound recover``."""
        return self.root / "quarantine"

    @property
    def bus(self) -> Path:
        """The embedded bus's log."""
        return self.root / "bus.db"

    @property
    def outbox(self) -> Path:
        """The deliverer's due-time table."""
        return self.root / "outbox.db"

    @property
    def activity(self) -> Path:
        """The SQLite activity store."""
        return self.root / "activity.db"

    @property
    def spamd_outage(self) -> Path:
        """Present while this host's processor cannot reach spamd; read by ``inbound status``."""
        return self.root / "spamd-unavailable.json"

    @property
    def configured_streams(self) -> Path:
        """The names of the streams this host's process stage has ever had: a stream missing from its
        table is one removed, not one whose configuration is still on its way (:mod:`inbound.processing.process`)."""
        return self.root / "configured-streams.json"

    @property
    def databases(self) -> tuple[Path, ...]:
        """Every SQLite file, checked at start-up and salvaged by ``inbound recover``."""
        return (self.bus, self.outbox, self.activity)

    def init(self) -> tuple[bool, str]:
        """Create the directory and its marker if needed; (created, identity)."""
        if self.marker.exists():
            return False, self.identity()
        self.root.mkdir(mode=PRIVATE, parents=True, exist_ok=True)
        self.root.chmod(PRIVATE)  # an existing, empty directory made by someone else's umask
        identity = str(uuid.uuid4())
        tmp = self.root / f"{MARKER}.tmp"
        tmp.write_text(json.dumps({"id": identity, "created_at": now_rfc3339(), "host": socket.gethostname()}) + "\n")
        os.replace(tmp, self.marker)
        return True, identity

    def identity(self) -> str:
        try:
            return str(json.loads(self.marker.read_text())["id"])
        except (OSError, ValueError, KeyError) as exc:
            raise DataDirError(f"{self.marker} is unreadable: {exc}") from exc

    def check(self, *, allow_shared: bool = False) -> str:
        """The directory's identity; DataDirError if it is missing, not ours, not ours to use, or not private."""
        try:
            present, marked = self.root.is_dir(), self.marker.exists()
        except PermissionError:
            raise DataDirError(
                f"data directory {self.root} cannot be read by this user (made by another, as `sudo inbound init`"
                " would?)"
            ) from None
        if not present:
            raise DataDirError(
                f"data directory {self.root} does not exist (is its volume mounted? create it with `inbound init`)"
            )
        if not marked:
            raise DataDirError(
                f"data directory {self.root} has no {MARKER} marker: refusing to start on what may be an unmounted "
                "volume's empty mount point (run `inbound init` if this really is a new data directory)"
            )
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise DataDirError(f"data directory {self.root} is not writable by this user")
        mode = self.root.stat().st_mode & 0o777
        if mode & 0o077 and not allow_shared:
            raise DataDirError(
                f"data directory {self.root} has mode {mode:04o}: group or others may read the mail in it"
                f" (chmod 700 {self.root}, or set storage.allow_shared_permissions = true)"
            )
        return self.identity()

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

"""The data directory: where the spool, the embedded bus, the outbox and activity live.

``inbound init`` creates it with an identity marker; ``inbound serve`` refuses
to start on a directory without one. That catches the classic outage of a
service that starts before its volume is mounted and quietly fills an empty
directory on the root filesystem -- while the real spool waits, unseen, on the
unmounted volume.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import uuid
from pathlib import Path

from .clock import now_rfc3339
from .errors import DataDirError

MARKER = ".inbound-data"


def init_data_dir(path: Path) -> tuple[bool, str]:
    """Create *path* and its marker if needed; (created, identity)."""
    marker = path / MARKER
    if marker.exists():
        return False, read_identity(path)
    path.mkdir(parents=True, exist_ok=True)
    identity = str(uuid.uuid4())
    tmp = path / f"{MARKER}.tmp"
    tmp.write_text(json.dumps({"id": identity, "created_at": now_rfc3339(), "host": socket.gethostname()}) + "\n")
    os.replace(tmp, marker)
    return True, identity


def read_identity(path: Path) -> str:
    try:
        return str(json.loads((path / MARKER).read_text())["id"])
    except (OSError, ValueError, KeyError) as exc:
        raise DataDirError(f"{path / MARKER} is unreadable: {exc}") from exc


def check_data_dir(path: Path) -> str:
    """The directory's identity; DataDirError if it is missing, not ours, or not writable."""
    if not path.is_dir():
        raise DataDirError(
            f"data directory {path} does not exist (is its volume mounted? create it with `inbound init`)"
        )
    if not (path / MARKER).exists():
        raise DataDirError(
            f"data directory {path} has no {MARKER} marker: refusing to start on what may be an unmounted "
            "volume's empty mount point (run `inbound init` if this really is a new data directory)"
        )
    if not os.access(path, os.W_OK | os.X_OK):
        raise DataDirError(f"data directory {path} is not writable by this user")
    return read_identity(path)


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free

"""The settings a supervised service runs with, held in memory: what a child started again runs with.

Every setting outside ``[[streams]]`` keeps, until ``serve`` is restarted, the value
it was started with (:mod:`inbound.reload`). A child that the supervisor starts
again after a crash must keep them too, whatever the file says by then: a pipeline
that took up an edited ``storage.data_dir`` or ``bus.*`` while the edge kept the old
ones would leave every message the edge accepts from then on where no pipeline reads it.

So ``serve`` puts the settings it has read into an anonymous memory file (``memfd``),
which the supervisor holds and hands to each child it starts; a child reads its
settings there, never the configuration file. A child that applies a HUP reload
writes its new settings back, so that one started after it runs the stream table its
siblings run. In memory, not on disk: the settings hold secrets, and the memory goes
with the last process that holds it.

The children share one open file description (the supervisor's), on which ``flock``
would not keep them apart; a POSIX record lock (``lockf``) is held per process, so a
child never reads another's write half done.
"""

from __future__ import annotations

import fcntl
import os
import pickle
from typing import cast

from .config import Settings


def create(settings: Settings) -> int:
    """A memory file holding *settings*; its descriptor, left open across ``exec``."""
    fd = os.memfd_create("inbound-settings")
    os.set_inheritable(fd, True)
    write(fd, settings)
    return fd


def write(fd: int, settings: Settings) -> None:
    """Replace the settings held in *fd*."""
    data = pickle.dumps(settings)
    fcntl.lockf(fd, fcntl.LOCK_EX)
    try:
        # pwrite and pread, never the shared file offset, which a sibling may be using.
        if os.pwrite(fd, data, 0) != len(data):
            raise OSError(f"settings snapshot: short write to memory file {fd}")
        os.ftruncate(fd, len(data))
    finally:
        fcntl.lockf(fd, fcntl.LOCK_UN)


def read(fd: int) -> Settings:
    """The settings held in *fd*."""
    fcntl.lockf(fd, fcntl.LOCK_SH)
    try:
        data = os.pread(fd, os.fstat(fd).st_size, 0)
    finally:
        fcntl.lockf(fd, fcntl.LOCK_UN)
    # Written by this service's own processes, into memory only they hold.
    return cast(Settings, pickle.loads(data))

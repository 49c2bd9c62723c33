"""Spool: the durability point between the SMTP edge and the bus.

Input: an accepted message and its envelope. Output: a file in
``spool/new/`` that survives a crash of the process or the host. The SMTP
handler answers 250 only after :meth:`Spool.put` returned; everything behind
the spool (bus, processors, webhooks) may be down, and the spool turns that
outage into a delay.

How an entry is made durable (Maildir-style): write ``tmp/<id>``, fsync it,
rename it into ``new/``, fsync ``new/``. A crash before the rename leaves only
a ``tmp/`` file, which was never acknowledged and is removed at start-up.

Entries describe themselves and carry a checksum, so a damaged file is
detected instead of published::

    INBOUND-SPOOL/1\\n
    {"envelope": {...}, "size": N, "sha256": "<hex of envelope JSON + \\n + message>"}\\n
    <the N bytes of the message, exactly as received plus our Received: header>

An entry that cannot be read or fails its checksum is moved to
``quarantine/`` (never deleted: ``inbound recover`` salvages what it can) and
the others go on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .envelope import Envelope
from .errors import SpoolError

log = logging.getLogger(__name__)

MAGIC = b"INBOUND-SPOOL/1\n"


class CorruptEntry(Exception):
    """A spool file that is not a complete, intact entry."""


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    path: Path
    envelope: Envelope
    message: bytes


def _checksum(envelope_json: bytes, message: bytes) -> str:
    return hashlib.sha256(envelope_json + b"\n" + message).hexdigest()


def encode_entry(envelope: Envelope, message: bytes) -> bytes:
    envelope_json = json.dumps(envelope.to_json(), sort_keys=True, separators=(",", ":")).encode()
    header = {
        "envelope": envelope.to_json(),
        "size": len(message),
        "sha256": _checksum(envelope_json, message),
    }
    return MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + message


def decode_entry(path: Path, data: bytes) -> SpoolEntry:
    if not data.startswith(MAGIC):
        raise CorruptEntry("does not start with the spool magic line")
    header_line, newline, message = data[len(MAGIC) :].partition(b"\n")
    if not newline:
        raise CorruptEntry("the header line is incomplete")
    try:
        header = json.loads(header_line)
        envelope = Envelope.from_json(header["envelope"])
        size, expected = int(header["size"]), str(header["sha256"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptEntry(f"the header is unreadable: {exc}") from None
    if len(message) != size:
        raise CorruptEntry(f"the message is {len(message)} bytes, the header says {size}")
    envelope_json = json.dumps(envelope.to_json(), sort_keys=True, separators=(",", ":")).encode()
    if _checksum(envelope_json, message) != expected:
        raise CorruptEntry("the checksum does not match")
    return SpoolEntry(path, envelope, message)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    def __init__(self, root: Path, quarantine: Path) -> None:
        self.tmp = root / "tmp"
        self.new = root / "new"
        self.quarantine_dir = quarantine
        for directory in (self.tmp, self.new, self.quarantine_dir):
            directory.mkdir(parents=True, exist_ok=True)

    def put(self, envelope: Envelope, message: bytes) -> Path:
        """Make the entry durable; raise SpoolError if it may not be (then no 250 is given)."""
        name = envelope.queue_id
        tmp, final = self.tmp / name, self.new / name
        try:
            with tmp.open("xb") as f:
                f.write(encode_entry(envelope, message))
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, final)
            fsync_dir(self.new)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise SpoolError(f"cannot spool {name}: {exc.strerror or exc}") from exc
        return final

    def pending(self) -> list[Path]:
        """Entries waiting to be published, oldest first (queue ids sort by time)."""
        try:
            return sorted(self.new.iterdir())
        except FileNotFoundError:
            return []

    def read(self, path: Path) -> SpoolEntry:
        """The entry at *path*; CorruptEntry if it is damaged (OSError passes through)."""
        return decode_entry(path, path.read_bytes())

    def entries(self) -> Iterator[SpoolEntry]:
        """Every readable pending entry; damaged ones are quarantined on the way."""
        for path in self.pending():
            try:
                yield self.read(path)
            except FileNotFoundError:
                continue  # published and removed by another publisher meanwhile
            except (CorruptEntry, OSError) as exc:
                self.quarantine(path, str(exc))

    def remove(self, entry: SpoolEntry) -> None:
        # No fsync: if the unlink is lost in a crash, the entry is published again and
        # every later stage is idempotent by queue id.
        with contextlib.suppress(FileNotFoundError):
            entry.path.unlink()

    def quarantine(self, path: Path, reason: str) -> Path:
        target = self.quarantine_dir / f"spool-{path.name}"
        os.replace(path, target)
        fsync_dir(self.quarantine_dir)
        log.error("spool entry quarantined: %s (%s)", target, reason)
        return target

    def clean_tmp(self, older_than: float = 3600.0) -> int:
        """Remove half-written entries left by a crash; they were never acknowledged.

        Only old ones: another SMTP process sharing this spool may be writing a fresh one.
        """
        removed = 0
        cutoff = time.time() - older_than
        for path in self.tmp.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
        return removed

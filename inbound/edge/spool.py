"""Spool: the durability point between the SMTP edge and the bus.

Input: an accepted message and its envelope. Output: a file in
``spool/new/`` that survives a crash of the process or the host. The SMTP
handler answers 250 only after :meth:`Spool.put` returned; everything behind
the spool (bus, processors, webhooks) may be down, and the spool turns that
outage into a delay.

How an entry is made durable (Maildir-style): write ``tmp/<id>``, fsync it,
rename it into ``new/``, fsync ``new/``. A crash before the rename leaves only
a ``tmp/`` file, which was never acknowledged and is removed at start-up.

Entries describe themselves and carry checksums, so a damaged file is
detected instead of published::

    INBOUND-SPOOL/1\\n
    <header>\\n
    <the N bytes of the message, exactly as received plus our Received: header>
    \\n<header again>\\n

where the header is ``{"envelope": {...}, "size": N, "envelope_sha256": ...,
"message_sha256": ...}``. The copy at the end is for ``inbound recover``: with
either copy intact, a message whose file was damaged elsewhere can be found,
checked and saved.

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

from ..datadir import DataDir
from ..envelope import Envelope
from ..errors import SpoolError
from ..records import decode_envelope, encode_envelope

log = logging.getLogger(__name__)

MAGIC = b"INBOUND-SPOOL/1\n"


class CorruptEntry(Exception):
    """A spool file that is not a complete, intact entry."""


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    path: Path
    envelope: Envelope
    message: bytes


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _envelope_bytes(envelope: Envelope) -> bytes:
    return json.dumps(encode_envelope(envelope), sort_keys=True, separators=(",", ":")).encode()


def encode_entry(envelope: Envelope, message: bytes) -> bytes:
    header = json.dumps(
        {
            "envelope": encode_envelope(envelope),
            "size": len(message),
            "envelope_sha256": _sha256(_envelope_bytes(envelope)),
            "message_sha256": _sha256(message),
        },
        sort_keys=True,
    ).encode()
    return MAGIC + header + b"\n" + message + b"\n" + header + b"\n"


@dataclass(frozen=True, slots=True)
class Header:
    envelope: Envelope
    size: int
    message_sha256: str


def parse_header(line: bytes) -> Header:
    """One copy of the header, checked against its own envelope checksum; CorruptEntry if damaged."""
    try:
        header = json.loads(line)
        envelope = decode_envelope(header["envelope"])
        size, envelope_sha256, message_sha256 = int(header["size"]), header["envelope_sha256"], header["message_sha256"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptEntry(f"the header is unreadable: {exc}") from None
    if _sha256(_envelope_bytes(envelope)) != envelope_sha256:
        raise CorruptEntry("the envelope checksum does not match")
    return Header(envelope, size, str(message_sha256))


def check_message(header: Header, message: bytes) -> None:
    if len(message) != header.size:
        raise CorruptEntry(f"the message is {len(message)} bytes, the header says {header.size}")
    if _sha256(message) != header.message_sha256:
        raise CorruptEntry("the message checksum does not match")


def decode_entry(path: Path, data: bytes) -> SpoolEntry:
    """The entry in *data*, every part checked; CorruptEntry naming the first damage found."""
    if not data.startswith(MAGIC):
        raise CorruptEntry("does not start with the spool magic line")
    header_line, newline, rest = data[len(MAGIC) :].partition(b"\n")
    if not newline:
        raise CorruptEntry("the header line is incomplete")
    header = parse_header(header_line)
    message, trailer = rest[: header.size], rest[header.size :]
    check_message(header, message)
    if trailer != b"\n" + header_line + b"\n":
        raise CorruptEntry("the closing copy of the header is damaged or missing")
    return SpoolEntry(path, header.envelope, message)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    def __init__(self, data: DataDir) -> None:
        self.tmp = data.spool_tmp
        self.new = data.spool_new
        self.publish_lock = data.publish_lock
        self.quarantine_dir = data.quarantine
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

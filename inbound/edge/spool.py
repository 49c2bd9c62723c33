"""Spool: the durability point between the SMTP edge and the bus.

Input: accepted messages and their envelopes. Output: files in ``spool/new/``
that survive a crash of the process or the host. The SMTP handler answers 250
only after the spool holds its message durably (:class:`SpoolWriter`);
everything behind the spool (bus, processors, webhooks) may be down, and the
spool turns that outage into a delay.

How entries are made durable (Maildir-style): write ``tmp/<id>``, fsync it,
rename it into ``new/``, fsync ``new/``. A crash before the rename leaves only
a ``tmp/`` file, which was never acknowledged and is removed at start-up. If
the fsync of ``new/`` fails, the entry is removed again before the refusal, so
that a sender told to try again does not also have it published.
Messages whose DATA ends while a write is under way are written together as
one file, named by the first queue id, with those two fsyncs shared
(:class:`SpoolWriter`): an fsync costs milliseconds whatever it carries, so
per-message fsyncs would cap the edge at a few hundred messages a second.

A file holds one or more entries, each describing itself and carrying
checksums, so a damaged file is detected instead of published::

    INBOUND-SPOOL/1\\n
    <header>\\n
    <the N bytes of the message, exactly as received plus our Received: header>
    \\n<header again>\\n
    [the next entry, the same way]

where the header is ``{"envelope": {...}, "size": N, "envelope_sha256": ...,
"message_sha256": ...}``. The copy at the end is for ``inbound recover``: with
the opening copies read forwards and the closing ones backwards, every entry
of a damaged file that is not itself damaged can be found, checked and saved.

A file that cannot be read or fails a checksum is moved to ``quarantine/``
(never deleted: ``inbound recover`` salvages what it can) and the others go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..datadir import DataDir, fsync_dir
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


def _decode_one(data: bytes, start: int) -> tuple[Header, bytes, int]:
    """The entry at *start*: its header, its message, and where the next one starts."""
    if not data.startswith(MAGIC, start):
        raise CorruptEntry("does not start with the spool magic line")
    line_start = start + len(MAGIC)
    line_end = data.find(b"\n", line_start)
    if line_end < 0:
        raise CorruptEntry("the header line is incomplete")
    header_line = data[line_start:line_end]
    header = parse_header(header_line)
    message = data[line_end + 1 : line_end + 1 + header.size]
    check_message(header, message)
    trailer_start = line_end + 1 + header.size
    trailer = b"\n" + header_line + b"\n"
    if not data.startswith(trailer, trailer_start):
        raise CorruptEntry("the closing copy of the header is damaged or missing")
    return header, message, trailer_start + len(trailer)


def count_entries(path: Path) -> int:
    """How many messages the spool file at *path* holds, read from its headers alone (the
    messages are skipped over, not read): what ``inbound status`` counts. Not a check: a file
    that stops making sense is counted up to there, and at least as one."""
    count = 0
    try:
        with path.open("rb") as f:
            while f.read(len(MAGIC)) == MAGIC:
                header = f.readline()
                f.seek(parse_header(header.rstrip(b"\n")).size + 1 + len(header), os.SEEK_CUR)
                count += 1
    except (OSError, CorruptEntry):
        pass
    return max(count, 1)


def decode_entries(path: Path, data: bytes) -> list[SpoolEntry]:
    """Every entry of the file *data*, each part checked; CorruptEntry naming the first damage found."""
    entries, start = [], 0
    while True:
        header, message, start = _decode_one(data, start)
        entries.append(SpoolEntry(path, header.envelope, message))
        if start == len(data):
            return entries


class Spool:
    def __init__(self, data: DataDir) -> None:
        self.tmp = data.spool_tmp
        self.new = data.spool_new
        self.publish_lock = data.publish_lock
        self.quarantine_dir = data.quarantine
        for directory in (self.tmp, self.new, self.quarantine_dir):
            directory.mkdir(parents=True, exist_ok=True)

    def put(self, envelope: Envelope, message: bytes) -> Path:
        """Make one entry durable (see :meth:`put_many`)."""
        return self.put_many([(envelope, message)])

    def put_many(self, messages: Sequence[tuple[Envelope, bytes]]) -> Path:
        """Make every entry durable in one file; raise SpoolError if they may not be (then no 250 is given)."""
        name = messages[0][0].queue_id
        tmp, final = self.tmp / name, self.new / name
        try:
            with tmp.open("xb") as f:
                for envelope, message in messages:
                    f.write(encode_entry(envelope, message))
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise SpoolError(f"cannot spool {name}: {exc.strerror or exc}") from exc
        try:
            fsync_dir(self.new)
        except OSError as exc:
            self._take_back(final, messages)
            raise SpoolError(f"cannot spool {name}: {exc.strerror or exc}") from exc
        return final

    def _take_back(self, path: Path, messages: Sequence[tuple[Envelope, bytes]]) -> None:
        """Remove an entry whose place in ``new/`` may not survive a power cut: its senders get a 4xx.

        Left there, the publisher would publish it and the senders' retries would make second copies.
        Should it not go, the 4xx stands all the same: a message delivered twice, where a 250 for an
        entry a power cut may undo would be a message lost.
        """
        try:
            path.unlink()
        except OSError as exc:  # FileNotFoundError too: a publisher has taken it already
            for envelope, _ in messages:
                log.error(
                    "queue_id=%s stage=receive refused, but its spool entry may still be published: it may be"
                    " delivered twice (%s: %s)",
                    envelope.queue_id,
                    path,
                    exc.strerror or exc,
                )
            return
        # If this fails too, only a power cut before the directory reaches the disk brings the entry back.
        with contextlib.suppress(OSError):
            fsync_dir(self.new)

    def pending(self) -> list[Path]:
        """Entries waiting to be published, oldest first (queue ids sort by time)."""
        try:
            return sorted(self.new.iterdir())
        except FileNotFoundError:
            return []

    def read(self, path: Path) -> list[SpoolEntry]:
        """The entries of the file at *path*; CorruptEntry if it is damaged (OSError passes through)."""
        return decode_entries(path, path.read_bytes())

    def files(self) -> Iterator[list[SpoolEntry]]:
        """The entries of every readable pending file, a file at a time; damaged files are quarantined on the way."""
        for path in self.pending():
            try:
                yield self.read(path)
            except FileNotFoundError:
                continue  # published and removed by another publisher meanwhile
            except (CorruptEntry, OSError) as exc:
                self.quarantine(path, str(exc))

    def entries(self) -> Iterator[SpoolEntry]:
        """Every readable pending entry, oldest first."""
        for entries in self.files():
            yield from entries

    def remove(self, path: Path) -> None:
        """Remove a published file. No fsync: if the unlink is lost in a crash, its entries are
        published again, and every later stage is idempotent by queue id."""
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    def set_aside(self, entry: SpoolEntry) -> Path:
        """Keep *entry* in ``quarantine/`` as a spool file of its own (``inbound recover`` leaves it
        there: it is Failed, and no bus takes it), before the file it came in is removed."""
        target = self.quarantine_dir / f"too-large-{entry.envelope.queue_id}"
        with target.open("wb") as f:
            f.write(encode_entry(entry.envelope, entry.message))
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(self.quarantine_dir)
        return target

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


# A message waiting for its group's write, the future its session awaits (the 250 or not), and what
# to call once the write is answered, whether anyone still awaits it or not.
Waiting = tuple[Envelope, bytes, asyncio.Future[None], Callable[[], None]]


class SpoolWriter:
    """Group commit for the SMTP edge: the messages whose DATA ends while a write is under way share the next.

    :meth:`put` returns only once its own message is durable (or raises SpoolError: then no 250). One
    write is under way at a time, on a worker thread; whatever arrived meanwhile goes out together in
    the next, as one file with one fsync of it and one of ``new/``. Under load a write carries as many
    messages as sessions are waiting, so the fsyncs per message fall as the load rises; alone, a
    message costs what it did before. A write carries at most ``GROUP_BYTES`` (or one message, however
    large), so the publisher, which reads a file whole, never holds much more than one batch.

    A message stays in memory here until its write is answered, also when its session is cancelled
    meanwhile (its client left before the 250: the message is written all the same). So *answered*
    is called then, in every case: the SMTP edge's data budget counts the message until that call.
    """

    GROUP_BYTES = 16 * 1024 * 1024

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self.waiting: deque[Waiting] = deque()
        self.writing = False
        self.task: asyncio.Task[None] | None = None  # held: the loop keeps only a weak reference to a task
        # One thread of its own, not asyncio.to_thread's: no context copied a write, and the thread
        # that wrote the last group is the one waiting (3-4 % less edge CPU a message, measured).
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="spool-write")

    async def put(self, envelope: Envelope, message: bytes, answered: Callable[[], None] = lambda: None) -> None:
        done = asyncio.get_running_loop().create_future()
        self.waiting.append((envelope, message, done, answered))
        if not self.writing:
            self.writing = True
            self.task = asyncio.get_running_loop().create_task(self._write_all())
        await done

    async def _write_all(self) -> None:
        try:
            while self.waiting:
                group = self._next_group()
                error: Exception | None = None
                try:
                    entries = [(env, msg) for env, msg, _, _ in group]
                    await asyncio.get_running_loop().run_in_executor(self.thread, self.spool.put_many, entries)
                except Exception as exc:  # noqa: BLE001 -- every waiter gets it; none may wait forever
                    error = exc
                _answer(group, error)
        finally:
            self.writing = False

    def _next_group(self) -> list[Waiting]:
        group = [self.waiting.popleft()]
        size = len(group[0][1])
        while self.waiting and size + len(self.waiting[0][1]) <= self.GROUP_BYTES:
            group.append(self.waiting.popleft())
            size += len(group[-1][1])
        return group


def _answer(group: list[Waiting], error: Exception | None) -> None:
    """Tell each session of *group* how the write went. A session whose client left is cancelled, and
    nobody waits for its answer: skipped, so that the others behind it get theirs."""
    for envelope, _, done, answered in group:
        answered()
        if done.cancelled():
            if error is None:  # its session logs nothing more: say that it is kept, for a grep by queue id
                log.info("queue_id=%s stage=receive spooled, but its client left before the 250", envelope.queue_id)
            continue
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

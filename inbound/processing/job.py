"""Job: what the parse worker is asked to do for one message, what it answers, and how both cross a pipe.

Stage: the work of ``process`` that reads hostile bytes -- parsing the message
(``parse.py``) and building each stream's webhook body (``formats/``) -- as one
pure function, :func:`~inbound.processing.work.run_job`. The processor (``process.py``) hands a
:class:`ParseJob` to a parser (``isolation.py``), which runs it in a worker
process (``parsechild.py``) or, in tests and benches, in process.

Input: the message as received, its envelope, and per stream the settings,
delivery id and screening decision. Output: an :class:`Outcome` -- either the
reason the message cannot be parsed, or the few fields the activity log shows
(sender, subject, attachment count) plus each stream's body or the reason it
could not be built.

Wire format, and why it is not pickle both ways: the job goes parent -> child
as a pickle (the child trusts its parent). The answer goes child -> parent as
JSON plus the raw bodies, because the child is the process that reads
strangers' bytes: if a parser bug ever let a message take it over, a pickle
would carry that into the parent; JSON and lengths cannot. Frames are an
8-byte big-endian length followed by that many bytes.
"""

from __future__ import annotations

import copyreg
import dataclasses
import io
import json
import operator
import os
import pickle
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, TypeVar

from .. import jsoncodec
from ..config import ProcessingSettings, StreamSettings
from ..envelope import Envelope, Recipient
from .screen import Decision

_LENGTH = struct.Struct(">Q")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Rendered:
    """A webhook body and what it is: the POST's Content-Type."""

    content_type: str
    body: bytes


@dataclass(frozen=True, slots=True)
class RenderRequest:
    """One stream's body to build."""

    stream: StreamSettings
    delivery_id: str
    decision: Decision | None


# Messages this big get the peak memory of their parse measured (and logged by the process stage).
# Below it the worker skips the measure: resetting and reading the peak is 40-60 us a message.
PEAK_MEASURED_FROM = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ParseJob:
    raw: bytes  # the message exactly as the SMTP edge accepted it
    envelope: Envelope
    renders: tuple[RenderRequest, ...]
    limits: ProcessingSettings

    @property
    def memory_limit(self) -> int:
        """Bytes of address space the parse may add to the worker's idle footprint."""
        return self.limits.memory_limit(len(self.raw))

    @property
    def timeout(self) -> float:
        """Seconds of wall time; the parent kills the worker after it."""
        return self.limits.parse_timeout

    @property
    def measures_peak(self) -> bool:
        """Whether the worker measures the peak memory of this parse (``Outcome.peak_rss``)."""
        return len(self.raw) >= PEAK_MEASURED_FROM


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one message: ``failure`` set, or the summary fields and each stream's body."""

    failure: str | None = None
    sender: str | None = None  # the first From: address
    subject: str | None = None
    attachments: int | None = None
    bodies: dict[str, Rendered | str] | None = None  # per stream: the body, or why it cannot be built
    peak_rss: int = 0  # bytes; the worker's high-water mark while it ran this job (0: not measured)

    @classmethod
    def failed(cls, reason: str) -> Outcome:
        return cls(failure=reason)


def write_frame(out: BinaryIO, *chunks: bytes) -> None:
    """One frame holding *chunks* back to back (written without joining them: bodies can be large)."""
    out.write(_LENGTH.pack(sum(len(c) for c in chunks)))
    for chunk in chunks:
        out.write(chunk)
    out.flush()


def read_frame(source: BinaryIO) -> bytes | None:
    """The next frame, or None at a clean end of input (the other side closed the pipe)."""
    head = source.read(_LENGTH.size)
    if not head:
        return None
    if len(head) != _LENGTH.size:
        raise EOFError("pipe closed inside a frame header")
    (length,) = _LENGTH.unpack(head)
    data = source.read(length)
    if len(data) != length:
        raise EOFError("pipe closed inside a frame")
    return bytes(data)


def _by_fields(cls: type) -> Callable[[Any], tuple[type, tuple[Any, ...]]]:
    """A pickle reducer: *cls* and its fields in order, rebuilt by calling *cls* with them.

    A slotted dataclass pickles through a ``__getstate__`` in Python that calls ``fields()`` for
    every object; seven of them to a job made that half of encoding one (14.5 -> 7.4 us a job,
    decoded 15.3 -> 9.5 us). Only for classes whose every field is an argument of ``__init__``.
    """
    fields = dataclasses.fields(cls)
    if not all(field.init for field in fields):
        raise TypeError(f"{cls.__name__} has fields __init__ does not take: it cannot be rebuilt from them")
    names = [field.name for field in fields]
    values = operator.attrgetter(*names)
    if len(names) == 1:
        return lambda obj: (cls, (values(obj),))
    return lambda obj: (cls, values(obj))


# What a job holds, pickled by its fields (a Decision only with sender verdicts or spam scoring on).
_REDUCERS = copyreg.dispatch_table | {
    cls: _by_fields(cls)
    for cls in (ParseJob, RenderRequest, Envelope, Recipient, StreamSettings, ProcessingSettings, Decision)
}


def encode_job(job: ParseJob) -> bytes:
    out = io.BytesIO()
    pickler = pickle.Pickler(out, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = _REDUCERS
    pickler.dump(job)
    return out.getvalue()


def decode_job(data: bytes) -> ParseJob:
    job = pickle.loads(data)  # written by our parent process, never by a stranger
    if not isinstance(job, ParseJob):
        raise TypeError(f"expected a ParseJob, got {type(job).__name__}")
    return job


def encode_outcome(outcome: Outcome) -> list[bytes]:
    """The chunks of one frame: a JSON head, then every body's bytes in the head's order."""
    streams: list[dict[str, Any]] = []
    payloads: list[bytes] = []
    for stream, body in (outcome.bodies or {}).items():
        if isinstance(body, Rendered):
            streams.append({"stream": stream, "content_type": body.content_type, "length": len(body.body)})
            payloads.append(body.body)
        else:
            streams.append({"stream": stream, "error": body})
    head = {
        "failure": outcome.failure,
        "sender": outcome.sender,
        "subject": outcome.subject,
        "attachments": outcome.attachments,
        "bodies": streams if outcome.bodies is not None else None,
        "peak_rss": outcome.peak_rss,
    }
    encoded = json.dumps(head).encode()  # stdlib in the worker: see inbound.jsoncodec
    return [_LENGTH.pack(len(encoded)), encoded, *payloads]


def decode_outcome(frame: bytes | bytearray) -> Outcome:
    """The inverse of :func:`encode_outcome`; ValueError/KeyError/TypeError on anything malformed."""
    (head_length,) = _LENGTH.unpack_from(frame)
    view = memoryview(frame)
    head = jsoncodec.loads(view[_LENGTH.size : _LENGTH.size + head_length])
    offset = _LENGTH.size + head_length
    bodies: dict[str, Rendered | str] | None = None
    if head["bodies"] is not None:
        bodies = {}
        for item in head["bodies"]:
            if "error" in item:
                bodies[str(item["stream"])] = str(item["error"])
                continue
            end = offset + int(item["length"])
            if end > len(frame):
                raise ValueError("a body runs past the end of the frame")
            bodies[str(item["stream"])] = Rendered(str(item["content_type"]), bytes(view[offset:end]))
            offset = end
    return Outcome(
        failure=_optional(head["failure"], str),
        sender=_optional(head["sender"], str),
        subject=_optional(head["subject"], str),
        attachments=_optional(head["attachments"], int),
        bodies=bodies,
        peak_rss=int(head["peak_rss"]),
    )


def _optional(value: object, kind: type[T]) -> T | None:
    """*value* when it is None or a *kind*; TypeError otherwise (the processor must never get a surprise)."""
    if value is None or isinstance(value, kind):
        return value
    raise TypeError(f"expected {kind.__name__} or null, got {type(value).__name__}")


def peak_rss() -> int:
    """This process's resident high-water mark in bytes (Linux ``VmHWM``), 0 where unknown."""
    return _status_kib("VmHWM") * 1024


def address_space() -> int:
    """This process's virtual memory size in bytes (Linux ``VmSize``), 0 where unknown.

    Read from ``statm``, one short line, rather than ``status``: the parse worker reads it twice a
    message, and ``status`` takes twice as long to make and to read (11 against 22 µs).
    """
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[0]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return 0


def _status_kib(field: str) -> int:
    try:
        with open(f"/proc/{os.getpid()}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0

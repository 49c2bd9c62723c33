"""MIME shape: how deep a message's multiparts nest and how many parts they hold, read in one linear pass.

Stage: called in the parse worker (``job.py``) before the message is parsed,
so that a message built to make the parsers walk a huge tree -- thousands of
levels, millions of parts, each costing Python objects and recursion -- is
turned away (Failed, with the figures) before any parser builds that tree.

Input: the raw message. Output: a :class:`Shape` (depth, parts), an upper
bound of what a MIME parser finds: a line ``--<b>`` counts only when ``<b>``
is the boundary of a multipart ``Content-Type`` field somewhere in the
message, read as the stdlib's parser reads it (``Message.get_boundary``,
RFC 2231 forms included, the top-level header section as ``repair.py`` hands
it to the parser), and nesting is followed as the delimiters open and close.
Lines end where the parser's lines end: at CRLF, LF or a bare CR. A boundary
string that also appears inside a non-multipart body can only make the count
higher, never lower -- so it can never let a tree past the limits; so can a
multipart ``Content-Type`` field there, and more of them than ``max_parts`` + 1
count as too many parts. ``message/rfc822``
nesting is not counted here; the parser refuses it past Python's recursion
limit (``parse.py``). Parts under a delimiter that no field declares are not
counted either: mime.py's walk recovers them (a multipart whose boundary never
comes), and counts them against the same limits before it builds them.

Cost: scans linear in the message's size (a lowered copy for the field name, the ``Content-Type``
fields found in it, the lines that start with ``--``) and the stdlib's reading of at most
``max_parts`` + 1 multipart ``Content-Type`` fields: 6 us for a plain 10 KiB message, 25 us for a
multipart one, 25 ms for 25 MB. The lowered copy is freed before any parser starts, so the parse's
peak is not raised.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message

from . import rfc2231
from .repair import repair_header_section

rfc2231.install()  # the boundaries are read with the parameter reading the parser has (mime.py installs it too)

# A Content-Type field, in the lowered message (a literal the engine finds fast: with IGNORECASE it
# tried every byte), with its continuation lines; the value is taken from the message itself at the
# same place, its case kept (boundaries are case-sensitive). White space before the colon is obsolete
# syntax that repair.py makes right in the top-level section.
_CONTENT_TYPE = re.compile(rb"content-type[ \t]*:([^\r\n]*(?:(?:\r\n|\r|\n)[ \t][^\r\n]*)*)")
# A line that may be a delimiter: "--" and the rest of the line. Searched for as a literal, the line
# end before it checked for each hit: a pattern starting with [\r\n] made the engine try every line
# (77 against 6 ms for 25 MB).
_DASHES = re.compile(rb"--([^\r\n]*)")


class BeyondLimits(Exception):
    """Parts past ``max_mime_depth`` or ``max_mime_parts`` that only a later reading finds (mime.py's walk
    recovers parts under delimiters no field declares); the text is the reason, the one :meth:`Shape.refusal` gives."""


@dataclass(frozen=True, slots=True)
class Shape:
    depth: int  # multiparts inside multiparts: 0 for a single-part message
    parts: int  # body parts opened by a delimiter, at any depth

    def refusal(self, max_depth: int, max_parts: int) -> str | None:
        """Why a message of this shape is Failed under these limits; None when it is within them."""
        if self.depth > max_depth:
            return f"MIME parts nested more than max_mime_depth ({max_depth}) deep"
        if self.parts > max_parts:
            return f"more than max_mime_parts ({max_parts}) MIME parts"
        return None


def mime_shape(raw: bytes, max_depth: int, max_parts: int) -> Shape:
    """The shape of *raw*; the scan stops as soon as either limit is passed, so its cost is bounded too."""
    fields = _multipart_fields(raw)
    if len(fields) > max_parts + 1:
        # Each is a part's but the top-level one's, or text quoting one (counted, as any over-count, safely):
        # read no further, each costs the stdlib 5 us (28 MB of them took 4.8 s).
        return Shape(0, len(fields) - 1)
    declared = {boundary for boundary in map(_boundary, fields) if boundary is not None}
    nesting: list[bytes] = []  # the open multiparts' boundaries, innermost last
    level: dict[bytes, int] = {}  # boundary -> its index in nesting
    depth = parts = 0
    for line in _DASHES.finditer(raw) if declared else ():
        if line.start() == 0 or raw[line.start() - 1] not in b"\r\n":  # not at a line's start
            continue
        boundary = line[1].rstrip(b" \t")
        closing = boundary not in declared and boundary.endswith(b"--")
        if closing:
            boundary = boundary[:-2]
        if boundary not in declared:
            continue
        if boundary in level:  # a delimiter of an outer multipart ends every multipart inside it
            for inner in nesting[level[boundary] + 1 :]:
                del level[inner]
            del nesting[level[boundary] + 1 :]
        elif not closing:
            level[boundary] = len(nesting)
            nesting.append(boundary)
        if closing:
            if boundary in level:
                del nesting[level.pop(boundary)]
            continue
        parts += 1
        depth = max(depth, len(nesting))
        if depth > max_depth or parts > max_parts:
            break
    return Shape(depth, parts)


def _multipart_fields(raw: bytes) -> set[bytes]:
    """The value of every multipart Content-Type field with a boundary parameter in *raw*, once each."""
    lowered = raw.lower()
    if b"boundary" not in lowered:
        return set()
    repaired = repair_header_section(raw)[0]
    if repaired is not raw:  # the top-level section as the parser gets it (encoded words in a boundary joined...)
        raw, lowered = repaired, repaired.lower()
    return {
        raw[slice(*field.span(1))]
        for field in _CONTENT_TYPE.finditer(lowered)
        if (field.start() == 0 or lowered[field.start() - 1] in b"\r\n")
        and b"boundary" in field[1]
        and field[1].lstrip().startswith(b"multipart/")  # else the parser reads it as text/plain, no boundary
    }


def _boundary(value: bytes) -> bytes | None:
    """The boundary of a Content-Type field's *value*, as the parser compares it with a line; None for none."""
    field = Message()
    # As the parser keeps a field (compat32): its lines joined as they came, 8-bit bytes as surrogates.
    field.set_raw("Content-Type", value.decode("ascii", "surrogateescape").lstrip(" \t"))
    boundary = field.get_boundary() if field.get_content_maintype() == "multipart" else None
    try:
        return boundary.encode("ascii", "surrogateescape") if boundary else None
    except UnicodeEncodeError:  # the parser's lines are ASCII, 8-bit bytes as surrogates: it matches none
        return None

"""Headers: raw header fields -> decoded text, in time and memory linear in their length.

Stage: used by the parser (``parse.py``) for the top-level headers, the headers of attached
messages and a report's returned headers, so every header is decoded one way.

Why not ``str(message[name])``: the stdlib's header registry is the decoder (RFC 2047 words,
U+FFFD for what cannot be decoded, with its complaints), but it is quadratic in the number
of encoded words, and a sender controls that number; ``decode`` feeds it pieces.

Failure behaviour: never raises; a complaint of the stdlib's becomes a defect line.
"""

from __future__ import annotations

import re
from collections import Counter
from email.headerregistry import HeaderRegistry
from email.message import Message

from .charsets import json_safe

# Every header decoded as unstructured text: RFC 2047 words decoded, unknown
# charsets and stray 8-bit bytes replaced with U+FFFD (with a defect), never an
# exception. The structured classes (address, date) re-render the value instead.
_UNSTRUCTURED = HeaderRegistry(use_default_map=False)
# The white space between two encoded words (it is not part of the text: RFC 2047 6.2).
_ENCODED_WORD_GAP = re.compile(r"\?=[ \t]+(?==\?)")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
# Encoded words a piece of a header holds at most (see ``_pieces``).
WORDS_PER_PIECE = 200


def _pieces(value: str) -> list[str]:
    """*value* cut between encoded words, at most ``WORDS_PER_PIECE`` of them a piece.

    The stdlib's unstructured-header parser is quadratic in the number of encoded words (16,000
    took 9 s and 2.3 GB, measured), and a sender controls that number. Decoded piece by piece, a
    header costs time and memory in proportion to its length. The cuts fall only on the white
    space between two encoded words, which RFC 2047 6.2 drops when decoding anyway, so the
    pieces' texts joined are the header's text.
    """
    pieces, start = [], 0
    for count, gap in enumerate(_ENCODED_WORD_GAP.finditer(value), start=1):
        if count % WORDS_PER_PIECE == 0:
            pieces.append(value[start : gap.start() + 2])
            start = gap.end()
    pieces.append(value[start:])
    return pieces


def decode(name: str, raw: str) -> tuple[str, list[str]]:
    """Unfold and decode one raw header value; also the stdlib's complaints about it.

    Raw 8-bit bytes are read as UTF-8 (RFC 6532) where they are valid UTF-8.
    """
    value = _LINE_BREAK.sub("", raw)
    if value.isascii() and "=?" not in value:
        # Nothing to decode: the registry would give it back as it is (checked over random ASCII),
        # at about a fifth of the parse worker's time per message.
        return json_safe(value).strip(), []
    complaints: list[str] = []
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        try:
            value = value.encode("utf-8", "surrogateescape").decode("utf-8")
        except UnicodeError:  # left to the registry, which replaces them
            complaints.append("8-bit bytes that are not UTF-8, replaced with U+FFFD")
    decoded_parts: list[str] = []
    for piece in _pieces(value):
        try:
            header = _UNSTRUCTURED(name, piece)
        except Exception as exc:  # noqa: BLE001 -- the stdlib header parser has had crashes on odd input
            return json_safe(value).strip(), [*complaints, f"{type(exc).__name__}: {exc}"]
        complaints.extend(f"{type(d).__name__}: {d}" if str(d) else type(d).__name__ for d in header.defects)
        decoded_parts.append(str(header))
    decoded = json_safe("".join(decoded_parts)).strip()
    if decoded.count("\ufffd") > value.count("\ufffd") and not complaints:
        complaints.append("encoded-word in an unknown charset or with bad bytes, replaced with U+FFFD")
    return decoded, complaints


def decoded_headers(message: Message, defects: list[str]) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    seen: Counter[str] = Counter()
    for raw_name, raw_value in message.raw_items():
        name = json_safe(raw_name)
        value, complaints = decode(name, raw_str(raw_value))
        n = seen[name.lower()]
        seen[name.lower()] += 1
        defects.extend(f"headers: {name}[{n}]: {c}" for c in complaints)
        headers.append((name, value))
    return headers


def raw_str(value: object) -> str:
    """A raw header value as the stdlib keeps it (str, 8-bit bytes as surrogates)."""
    if isinstance(value, str):
        return value
    encode = getattr(value, "encode", None)  # email.header.Header
    return str(encode()) if callable(encode) else str(value)

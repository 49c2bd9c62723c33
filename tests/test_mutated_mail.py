"""The corpus's messages, broken at random: each still parses and renders in every format.

What a stranger sends is rarely a well-formed message. These mutations (fixed seeds, so a
failure repeats) splice MIME and header fragments into real mail, cut and repeat pieces of
it and flip bytes; the four kinds of message they found that failed the parse are tests of
their own in ``test_parse.py``. Here nothing but ParseError for a message without a header
may come out of the parse, and no exception at all out of building any format's body.
"""

from __future__ import annotations

import random

import pytest

from inbound.errors import ParseError
from inbound.processing.formats import FORMATS, Source, render
from inbound.processing.mimeshape import mime_shape
from inbound.processing.parse import ParsedMessage, parse_message

from .corpus import corpus_files, wire_bytes
from .test_formats import DELIVERY_ID, ENVELOPE, stream

FRAGMENTS = [
    b"\r\n", b"\r\n\r\n", b"--", b"boundary=", b"=?utf-8?q?", b"=?utf-8?b?", b"?=", b"\x00", b"\xff\xfe", b"\xc3",
    b"Content-Type: multipart/mixed; boundary=x\r\n", b"Content-Type: message/rfc822\r\n",
    b"Content-Transfer-Encoding: base64\r\n", b"Content-Transfer-Encoding: quoted-printable\r\n", b"=\r\n",
    b"charset=", b'charset="utf\x00-8"', b"From: ", b"To: ", b"Subject: ", b"<", b">", b"@", b",", b";", b'"', b"\\",
    b"filename*=utf-8''", b"Content-Disposition: attachment; filename=", b"<html><body>", b"&#", b"\t", b"\x0c",
]  # fmt: skip
MESSAGES = [wire_bytes(path) for path in corpus_files()]
LIMITS = (100, 10_000)  # processing.max_mime_depth and max_mime_parts: beyond them no parse is tried


def mutated(rnd: random.Random) -> bytes:
    data = bytearray(rnd.choice(MESSAGES))
    for _ in range(rnd.randint(1, 6)):
        at, kind = rnd.randrange(len(data) + 1), rnd.random()
        if kind < 0.35:
            data[at:at] = rnd.choice(FRAGMENTS)
        elif kind < 0.5:
            del data[at : at + rnd.randint(1, 40)]
        elif kind < 0.65 and data:
            start = rnd.randrange(len(data))
            data[at:at] = data[start : start + rnd.randint(1, 200)]
        elif kind < 0.8:
            data[at:at] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 8)))
        else:
            other = rnd.choice(MESSAGES)
            start = rnd.randrange(len(other))
            data[at:at] = other[start : start + rnd.randint(10, 500)]
    return bytes(data)


def readable(raw: bytes) -> ParsedMessage | None:
    """The parse; None for a message without any header (behind our edge, never: it adds Received:)."""
    try:
        return parse_message(raw)
    except ParseError as exc:
        if str(exc).startswith(("no header fields", "empty message")):
            return None
        raise


@pytest.mark.parametrize("seed", range(4))
def test_broken_mail_parses_and_renders(seed: int) -> None:
    rnd = random.Random(seed)
    streams = [stream(payload_format, include_raw=True) for payload_format in sorted(FORMATS)]
    for _ in range(150):
        raw = mutated(rnd)
        shape = mime_shape(raw, *LIMITS)
        parsed = readable(raw) if shape.depth <= LIMITS[0] and shape.parts <= LIMITS[1] else None
        for settings in streams if parsed is not None else ():
            render(Source(parsed, ENVELOPE, settings, DELIVERY_ID, raw))

"""Charsets: a declared charset label and 8-bit bytes -> text, the way mail clients and browsers read them.

Stage: used by the parser (``parse.py`` for RFC 2047 words, ``mime.py`` for body parts), so
every charset decision of the pipeline is made here.

Why not the label as Python spells it: senders' software writes a label and then
the bytes of a larger encoding. Outlook labels GBK text ``gb2312``, Windows labels
CP932 ``shift_jis``, Korean mail says ``ks_c_5601-1987`` for CP949, and "Latin-1"
text holds Windows' curly quotes at 0x80-0x9F. Decoded strictly by the label, one
such character used to fail the whole part. The WHATWG Encoding Standard, which
every browser follows, maps each of these labels to its superset; so do we
(``SUPERSETS``).

Failure behaviour: never an exception. A byte that does not decode in the
(superset) charset becomes U+FFFD by itself, and the caller gets a note for its
defects. Only when the label is missing or unknown and the bytes are not ASCII
is the charset guessed, by charset-normalizer (MIT), and the note says so.
"""

from __future__ import annotations

import codecs
import re

from charset_normalizer import from_bytes

# Python codec name of a label -> the codec of its real-world superset (WHATWG Encoding Standard).
SUPERSETS = {
    "ascii": "cp1252",
    "iso8859-1": "cp1252",
    "iso8859-9": "cp1254",
    "iso8859-11": "cp874",
    "tis-620": "cp874",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "shift_jis": "cp932",
    "euc_kr": "cp949",
    "big5": "big5hkscs",
}
# WHATWG labels Python does not know.
_ALIASES = {
    "x-gbk": "gb18030",
    "windows-31j": "cp932",
    "x-sjis": "cp932",
    "unicode-1-1-utf-8": "utf-8",
    "unicode11utf8": "utf-8",
    "unicode20utf8": "utf-8",
    "x-unicode20utf8": "utf-8",
    "ks_c_5601-1989": "cp949",
    "x-x-big5": "big5hkscs",
    "cn-big5": "big5hkscs",
}
_SURROGATE = re.compile("[\ud800-\udfff]")
# The charsets a guess chooses from: those mail without a label is really written in. Given every
# codec, charset-normalizer reads a few bytes of "café" as cp1006 and Russian as Shift_JIS 2004.
_LIKELY = [
    "cp1252",
    "cp1250",
    "cp1251",
    "koi8_r",
    "cp1253",
    "cp1254",
    "cp1255",
    "cp1256",
    "cp1257",
    "cp874",
    "gb18030",
    "big5hkscs",
    "cp932",
    "euc_jp",
    "cp949",
]
# Codecs Python counts as text encodings that are no charset a message is written in: one that always
# raises (undefined), the domain-name ones, which raise on 8-bit bytes or refuse errors="replace"
# (punycode, idna), and Python's string-literal escapes. Named as a charset, the first three failed
# the whole message (UnicodeError, which no decode expected); here they are unknown labels.
_NOT_CHARSETS = frozenset({"undefined", "idna", "punycode", "unicode-escape", "raw-unicode-escape"})
# How much of a part charset-normalizer reads to guess (it samples; this bounds the work).
_GUESS_BYTES = 64 * 1024


def codec_for(label: str | None) -> str | None:
    """The Python codec that decodes text labelled *label*: its superset; None when the label is unknown
    or names a codec that is no charset (base64, idna...), which is read as an unknown label."""
    if not label:
        return None
    name = label.strip().strip("\"'").lower()
    if name in _ALIASES:
        return _ALIASES[name]
    codec = _lookup(name)
    return SUPERSETS.get(codec, codec) if codec else None


def _lookup(label: str | None) -> str | None:
    """Python's name for the charset of *label*, as labelled (no superset); None when unknown or no charset."""
    codec = _codec(label)
    return codec.name if codec is not None and _is_charset(codec) else None


def names_no_charset(label: str | None) -> bool:
    """Whether *label* names a Python codec that is no charset (``_NOT_CHARSETS``, the bytes-to-bytes ones)."""
    codec = _codec(label)
    return codec is not None and not _is_charset(codec)


def _codec(label: str | None) -> codecs.CodecInfo | None:
    try:
        return codecs.lookup(label.strip().strip("\"'").lower()) if label else None
    except (LookupError, ValueError):  # ValueError: a NUL in the label
        return None


def _is_charset(codec: codecs.CodecInfo) -> bool:
    # _is_text_encoding is the stdlib's own flag for its bytes-to-bytes (base64, zlib...) and
    # str-to-str (rot13) codecs, which str.decode refuses with LookupError.
    return codec._is_text_encoding and codec.name not in _NOT_CHARSETS


def decode(data: bytes, label: str | None) -> tuple[str, str | None]:
    """*data* as text, and a note for the defects when it did not decode cleanly (else None)."""
    codec = codec_for(label)
    if codec is None:
        if data.isascii():
            return data.decode("ascii"), None if not label else f"unknown charset {label!r} on ASCII text"
        codec = _guess(data)
        what = f"unknown charset {label!r}" if label else "no charset"
        note = f"{what} with 8-bit bytes; decoded as {codec} (guessed)"
        text = data.decode(codec, "replace")
        return text, note
    if SUPERSETS.get(_lookup(label) or "") == "cp1252" and not data.isascii():
        try:  # an ASCII or Latin-1 label on bytes that are UTF-8: mislabelled, and UTF-8 is what they say
            return data.decode("utf-8"), f"charset {label!r} on text that is UTF-8; read as UTF-8"
        except UnicodeDecodeError:
            pass
    try:
        return data.decode(codec), None
    except UnicodeDecodeError:
        text = data.decode(codec, "replace")
        return text, f"bytes that are not {codec} (charset {label!r}) replaced with U+FFFD"


def _guess(data: bytes) -> str:
    """The charset of 8-bit text with no usable label: UTF-8 when it is valid, else charset-normalizer's
    guess among ``_LIKELY``, else windows-1252 (the WHATWG default)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        best = from_bytes(data[:_GUESS_BYTES], cp_isolation=_LIKELY).best()
        return codecs.lookup(best.encoding).name if best is not None else "cp1252"
    return "utf-8"


def json_safe(value: object) -> str:
    """Any text the parsers hand back, as a str that encodes to UTF-8.

    The stdlib keeps undecodable 8-bit bytes as lone surrogates; a JSON payload
    cannot carry them, so they become U+FFFD (after trying UTF-8, RFC 6532).
    """
    text = value if isinstance(value, str) else str(value or "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        except UnicodeEncodeError:  # a surrogate that is not an escaped byte
            return _SURROGATE.sub("\ufffd", text)
    return text

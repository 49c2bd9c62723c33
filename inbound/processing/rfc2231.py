"""MIME parameters the stdlib raises on, or decodes in quadratic time, read all the same and noted as defects.

Why: every ``email.message.Message`` method that reads a header parameter --
``get_param``, ``get_filename``, ``get_boundary``, ``get_content_charset`` --
has ``email.utils.decode_params`` join its RFC 2231 sections, and the parser
itself asks each multipart for its boundary. Two shapes of ordinary-looking
mail make the stdlib (3.11) raise there, and so failed the whole message as
"cannot parse message":

* a parameter both whole and in numbered sections (``filename*=utf-8''a.pdf;
  filename*0=b``): ``decode_params`` sorts the sections by number, and the
  whole one's number is None (TypeError);
* a NUL in an RFC 2231 charset (``name*=utf\\0-8''a.pdf``): ``str(bytes,
  charset)`` raises ValueError, where ``collapse_rfc2231_value`` and
  ``get_content_charset`` expect LookupError for a charset they do not know;
* an RFC 2231 charset naming a Python codec that is no charset
  (``boundary*=undefined''b``, ``punycode``, ``idna``): ``str(bytes, charset,
  "replace")`` raises UnicodeError, which ``collapse_rfc2231_value`` lets through.

What instead, in :func:`decode_params` (the stdlib's, wrapped): such a
parameter is read from its numbered sections, its whole form left out; a
charset holding a NUL or naming no charset (``charsets.names_no_charset``)
reads as None, which is what the stdlib gives for a charset it cannot parse,
so each caller uses its fallback (us-ascii).

The parameter list itself is split at each ``;`` outside quotes by
``email.message._parseparam``, which counts the quotes before each ``;`` from
the start of its piece again and copies the rest of the value after each
piece: 40,000 ``;`` in a quoted file name (40 KB) took 1.6 s, and a part's
header section may hold a megabyte. :func:`parse_params` makes the same pieces
in one pass.

A file name (``filename=``, ``name=``) is decoded by every reader with
``email.header.decode_header``'s reading (mail-parser, on every part; mime.py,
on each attachment), which in the stdlib is quadratic in the RFC 2047 words of
a line: a name of 128,000 words (1.8 MB) took 21.8 s, and 256,000 had the
message Failed at parse_timeout. ``headers.decode_words`` reads it in linear
time now, but a file name longer than ``MAX_FILE_NAME`` characters is still
read up to there: no file system takes a longer one.

Each of these is told to :func:`noting_defects`, which ``parse.py`` turns into
the message's defects.

Where it takes effect: ``email.message`` calls ``utils.decode_params`` and its
own ``_parseparam`` through their modules at every call, so replacing the
modules' attributes changes every Message of the process that called
:func:`install`.
``mime.py``, which builds every tree we parse, calls it when it is imported:
in the parse worker (and in the processes that parse in tests and benches).
The pipeline process and the edge read no MIME parameters.
"""

from __future__ import annotations

import email.message
import email.utils
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from . import charsets

_STDLIB_DECODE_PARAMS = email.utils.decode_params
WHOLE_AND_IN_SECTIONS = "body: a MIME parameter both whole (name*=) and in sections (name*0=); read from its sections"
NUL_IN_CHARSET = "body: a NUL in the charset of an RFC 2231 MIME parameter; read as us-ascii"
NO_CHARSET = "body: the charset of an RFC 2231 MIME parameter names a codec that is no charset; read as us-ascii"
# Characters of a file name read at most. No file system takes a name longer than 255 UTF-16 units; the
# longest written as encoded words (CJK, B-encoded, 1,300 characters; Q-encoded, up to 2,900) are read
# whole or nearly.
MAX_FILE_NAME = 2_000
FILE_NAME_CUT = f"body: a file name of more than {MAX_FILE_NAME} characters; the rest left out"
_FILE_NAMES = ("filename", "name")
# This thread's defects while it is in noting_defects(); None outside.
_this_thread = threading.local()


@contextmanager
def noting_defects() -> Iterator[list[str]]:
    """A list that gets a line for each parameter read here in spite of the stdlib, within the block, in this thread."""
    outer = getattr(_this_thread, "defects", None)
    noted: list[str] = []
    _this_thread.defects = noted
    try:
        yield noted
    finally:
        _this_thread.defects = outer


def decode_params(params: list[tuple[str, str]]) -> list[tuple[str, Any]]:
    """``email.utils.decode_params``, for the parameters it raises on too."""
    try:
        decoded: list[tuple[str, Any]] = _STDLIB_DECODE_PARAMS(params)
    except TypeError:
        _note(WHOLE_AND_IN_SECTIONS)
        decoded = _STDLIB_DECODE_PARAMS(_without_whole_forms_of_sectioned(params))
    return [(name, _short_file_name(name, _readable_charset(value))) for name, value in decoded]


def install() -> None:
    """Make the stdlib's Message methods use :func:`decode_params` and :func:`parse_params` in this process."""
    email.utils.decode_params = decode_params
    email.message._parseparam = parse_params  # type: ignore[attr-defined]


# What splits a parameter list: a ";", unless between quotes; an escaped quote opens or closes nothing.
_PARAM_MARKS = re.compile(r'\\"|"|;')


def parse_params(value: object) -> list[str]:
    """``email.message._parseparam`` in one pass: the same pieces, each cut and lower-cased the same way."""
    text = str(value)
    pieces: list[str] = []
    start = 0
    quoted = False
    for mark in _PARAM_MARKS.finditer(text):
        if mark.group() == '"':
            quoted = not quoted
        elif mark.group() == ";" and not quoted:
            pieces.append(text[start : mark.start()])
            start = mark.end()
    pieces.append(text[start:])
    return [_param(piece) for piece in pieces]


def _param(piece: str) -> str:
    name, equals, value = piece.partition("=")
    return f"{name.strip().lower()}={value.strip()}".strip() if equals else piece.strip()


def _without_whole_forms_of_sectioned(params: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """*params* (the first is the content type itself) without ``name*`` where ``name*0``, ``name*1``... are there."""
    # The stdlib's own reading of a name as a section, so that what is left out is what it would sort.
    sections = [email.utils.rfc2231_continuation.match(name) for name, _ in params[1:]]  # type: ignore[attr-defined]
    sectioned = {found.group("name") for found in sections if found and found.group("num") is not None}
    return params[:1] + [
        param
        for param, found in zip(params[1:], sections, strict=True)
        if not (found and found.group("num") is None and found.group("name") in sectioned)
    ]


def _readable_charset(value: Any) -> Any:
    """An RFC 2231 value (charset, language, text) with a charset ``str(bytes, charset)`` takes; others as they came."""
    if not isinstance(value, tuple) or not isinstance(value[0], str):
        return value
    if "\0" in value[0]:
        _note(NUL_IN_CHARSET)
    elif charsets.names_no_charset(value[0]):
        _note(NO_CHARSET)
    else:
        return value
    return (None, *value[1:])


def _short_file_name(name: str, value: Any) -> Any:
    """A file name parameter's value (quoted text, or a (charset, language, quoted text) tuple) of at most
    ``MAX_FILE_NAME`` characters; other parameters' values as they came."""
    quoted = value[2] if isinstance(value, tuple) else value
    if not isinstance(quoted, str) or len(quoted) <= MAX_FILE_NAME or name.lower() not in _FILE_NAMES:
        return value
    text = email.utils.unquote(quoted)
    if len(text) <= MAX_FILE_NAME:
        return value
    _note(FILE_NAME_CUT)
    kept = text[:MAX_FILE_NAME]
    if "=?" in kept:  # an encoded word may be cut in two: the name ends at the white space before it
        kept = kept.rsplit(None, 1)[0]
    short = f'"{email.utils.quote(kept)}"'
    return (*value[:2], short) if isinstance(value, tuple) else short


def _note(defect: str) -> None:
    noted: list[str] | None = getattr(_this_thread, "defects", None)
    if noted is not None:
        noted.append(defect)

"""Headers: raw header fields -> decoded text, in time and memory linear in their length.

Stage: used by the parser (``parse.py``) for the top-level headers, the headers of attached
messages and a report's returned headers, so every header is decoded one way; and by every
reader of RFC 2047 words in the parse worker: mime.py's file names and, installed here,
mail-parser's decoding of every header and file name (:func:`decode_words`).

Why not ``str(message[name])``: the stdlib's header registry is the reading we want (RFC 2047
words where it finds them, U+FFFD for what cannot be decoded), but its parser copies the rest of
the value at every token (CPython issue 136063), and a sender controls the tokens: 32,000 encoded
words with a word of text between them took 10 s. :func:`_unstructured` is the same reading in
time linear in the value. ``email.header.decode_header`` (mail-parser's and mime.py's reading)
pops its words one by one from the front of a list, and its regex looks for the end of each
``=?x?q?`` up to the end of the line: :func:`decode_words` is the same function without either.

Failure behaviour: never raises; a value the stdlib would raise on is kept as it came, with a defect line.
"""

from __future__ import annotations

import binascii
import email.base64mime
import email.header
import email.quoprimime
import re
from collections import Counter
from collections.abc import Iterator
from email import _encoded_words  # type: ignore[attr-defined]  # the registry's decoder of one word
from email.errors import HeaderParseError
from email.message import Message
from typing import Any

import mailparser.utils

from .charsets import json_safe

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_CLOSE = re.compile(r"\?=")  # the end of an encoded word
_LINE_FEED = re.compile(r"\n")
_BLANK = re.compile(r"[ \t]")  # where a token of the registry's parser ends
_NOT_WHITE = re.compile(r"\S")  # where a run of white space it reads (str.lstrip's white space) ends
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_STDLIB_DECODE_HEADER = email.header.decode_header


class _Next:
    """Where *pattern* next occurs in *text* at or after a position (the text's length: nowhere), for positions
    asked in order, never decreasing: an answer serves until a position passes it, so the text is searched once."""

    def __init__(self, text: str, pattern: re.Pattern[str]) -> None:
        self._text, self._pattern = text, pattern
        self._found = -1

    def __call__(self, start: int) -> int:
        if self._found < start:
            hit = self._pattern.search(self._text, start)
            self._found = hit.start() if hit else len(self._text)
        return self._found


def _unstructured(value: str) -> str:
    """``str(email._header_value_parser.get_unstructured(value))``, the registry's reading of an unstructured
    *value* (unfolded), in linear time.

    Token by token as the stdlib reads them, at indexes instead of copies: white space is kept; an
    encoded word is its text, and the white space between two goes (RFC 2047 6.2); any other token
    is kept as it is. An encoded word is what ``get_encoded_word`` reads at a token's start, or in
    a token holding a whole one (``rfc2047_matcher``), at that token's first ``=?``.
    """
    closes, extended_closes = _Next(value, _CLOSE), _Next(value, _CLOSE)
    blanks, not_white = _Next(value, _BLANK), _Next(value, _NOT_WHITE)
    out: list[str] = []
    last_two = ("", "")  # the kinds of the last two tokens: "blank", "word" or "text"
    start = 0
    while start < len(value):
        if value[start] in " \t":
            end = not_white(start)
            out.append(value[start:end])
            last_two, start = (last_two[1], "blank"), end
            continue
        word = _encoded_word_at(value, start, closes, extended_closes) if value.startswith("=?", start) else None
        if word is not None and word[1] is not None:
            if last_two == ("word", "blank"):
                out[-1] = ""
            out.append(word[1])
            last_two, start = (last_two[1], "word"), word[0]
            continue
        end = blanks(start)
        if word is None and _holds_a_word(value, start, end):
            end = value.index("=?", start)
        out.append(value[start:end])
        last_two, start = (last_two[1], "text"), end
    text = "".join(out)
    if text.isascii() or _is_unicode(text):
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")  # the registry's _sanitize


def _encoded_word_at(value: str, start: int, closes: _Next, extended_closes: _Next) -> tuple[int, str | None] | None:
    """What ``get_encoded_word`` reads at *start* (a ``=?``): where it ends and its text (None: not a word);
    None when no ``?=`` follows at all."""
    close = closes(start + 2)
    if close == len(value):
        return None
    end = close + 2
    if end + 2 <= len(value) and _HEX_DIGITS.issuperset(value[end : end + 2]) and _questions(value, start, close) < 2:
        # "=?cs?q?=41...": that "?=" began an escape of the text, and the word ends at the next one
        close = extended_closes(end)
        end = min(close + 2, len(value))
    if _questions(value, start, close) != 2:  # not charset?encoding?text: cheaper to know than to split
        return end, None
    try:
        text: str = _encoded_words.decode(f"=?{value[start + 2 : close]}?=")[0]
    except (ValueError, KeyError):  # what get_encoded_word takes for "no encoded word"
        return end, None
    return end, text


def _questions(value: str, start: int, close: int) -> int:
    """How many "?" the word opened at *start* holds up to *close*, counted up to 3."""
    found, at = 0, start + 2
    while found < 3 and (at := value.find("?", at, close) + 1) > 0:
        found += 1
    return found


def _holds_a_word(value: str, start: int, end: int) -> bool:
    """Whether ``rfc2047_matcher`` finds a word in ``value[start:end]`` (a token without blanks or line breaks)."""
    opening = value.find("=?", start, end)
    while opening >= 0:
        question = value.find("?", opening + 2, end)
        if question < 0:
            return False
        if value.startswith(("q?", "Q?", "b?", "B?"), question + 1, end):
            # the first "?=" after it ends the word; if there is none, none further on has one either
            return value.find("?=", question + 3, end) >= 0
        opening = value.find("=?", opening + 1, end)
    return False


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def decode(name: str, raw: str) -> tuple[str, list[str]]:
    """Unfold and decode one raw header value (*name*'s: every field is read as unstructured text); also what
    could not be decoded, as complaints.

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
        except UnicodeError:  # left to the reading, which replaces them as the registry does
            complaints.append("8-bit bytes that are not UTF-8, replaced with U+FFFD")
    try:
        decoded = json_safe(_unstructured(value)).strip()
    except Exception as exc:  # noqa: BLE001 -- as the stdlib header parser would: an odd charset's codec may raise
        return json_safe(value).strip(), [*complaints, f"{type(exc).__name__}: {exc}"]
    if decoded.count("\ufffd") > value.count("\ufffd") and not complaints:
        complaints.append("encoded-word in an unknown charset or with bad bytes, replaced with U+FFFD")
    return decoded, complaints


def decode_words(header: Any) -> list[tuple[Any, str | None]]:
    """``email.header.decode_header(header)``, the same pairs, in time linear in the length of *header*.

    The stdlib pops the parts of each line from the front of a list, deletes the white space
    between two words from the middle of another, and grows each run of one charset a bytes
    object at a time: 32,000 words with text between them took mail-parser 1.4 s (four times as
    long for twice as many), here 0.1 s. Its words are found by :func:`_words_in`.
    """
    if not isinstance(header, str):  # an email.header.Header: the stdlib reads its chunks, in linear time
        return _STDLIB_DECODE_HEADER(header)
    if "=?" not in header or next(_words_in(header), None) is None:
        return [(header, None)]
    words: list[tuple[str, str | None, str | None]] = []  # (text, encoding, charset); encoding None: not encoded
    for line in header.splitlines():
        at = 0
        for start, question, close in _words_in(line):
            unencoded = line[at:start].lstrip() if at == 0 else line[at:start]
            if unencoded:
                words.append((unencoded, None, None))
            words.append((line[question + 3 : close], line[question + 1].lower(), line[start + 2 : question].lower()))
            at = close + 2
        unencoded = line.lstrip() if at == 0 else line[at:]
        if unencoded:
            words.append((unencoded, None, None))
    # White space between two encoded words is no text (RFC 2047 6.2).
    gaps = {n - 1 for n in range(2, len(words)) if words[n][1] and words[n - 2][1] and words[n - 1][0].isspace()}
    runs: list[tuple[list[bytes], str | None]] = []  # adjacent words of one charset, collapsed into one
    for n, (text, encoding, charset) in enumerate(words):
        if n in gaps:
            continue
        word = _word_bytes(text, encoding)
        if runs and runs[-1][1] == charset:
            runs[-1][0].extend((b" ", word) if charset is None else (word,))
        else:
            runs.append(([word], charset))
    return [(b"".join(run), charset) for run, charset in runs]


def _words_in(text: str) -> Iterator[tuple[int, int, int]]:
    """The encoded words ``email.header.ecre`` finds in *text* (``finditer``), in linear time: for each, where
    it starts, the "?" that ends its charset and the "?=" that ends it.

    The regex looks for the "?=" of each "=?x?q?" it meets up to the end of the line: 10,000 that
    never close (70 KB) took 7.8 s. Here the end found for one opening serves the next.
    """
    closes, line_feeds = _Next(text, _CLOSE), _Next(text, _LINE_FEED)
    at = 0
    while (start := text.find("=?", at)) >= 0:
        question = text.find("?", start + 2)  # the charset is all up to the first "?", line breaks and all
        if question < 0:
            return
        if text.startswith(("q?", "Q?", "b?", "B?"), question + 1):
            close = closes(question + 3)
            if close == len(text):  # nor can any word further on end
                return
            if line_feeds(question + 3) > close:  # the text is all up to the first "?=" on its line
                yield start, question, close
                at = close + 2
                continue
        at = start + 1


def _word_bytes(text: str, encoding: str | None) -> bytes:
    """A word as ``decode_header`` decodes it: base64 padded, HeaderParseError if it is no base64."""
    if encoding is None:
        return bytes(text, "raw-unicode-escape")
    if encoding == "q":
        return email.quoprimime.header_decode(text).encode("raw-unicode-escape")
    padding = len(text) % 4  # missing padding added, as the stdlib does
    try:
        return email.base64mime.decode(text + "==="[: 4 - padding] if padding else text)
    except binascii.Error as exc:
        raise HeaderParseError("Base64 decoding error") from exc


def install() -> None:
    """Make mail-parser read RFC 2047 words with :func:`decode_words`, in this process: it decodes every
    top-level header, and every part's file name, with ``email.header.decode_header``."""
    mailparser.utils.decode_header = decode_words


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


install()  # mail-parser binds decode_header when it is imported: replaced before any message is read

"""Repairs of a message's top-level header section, made before any parser reads it.

Stage: the first step of the parser (``parse.py``). Each repair is one that mail clients make
as they read, and that the stdlib's or mail-parser's reading would otherwise turn into lost
headers, lost addresses or a failed message. What was repaired is said, as defect lines.

Failure behaviour: never raises; a section needing no repair comes back as the same object
(a copy of a 25 MB message is 25 MB more at the parse's peak).
"""

from __future__ import annotations

import base64
import binascii
import re

from mailparser.utils import decode_base64_payload

from . import charsets

_ENCODED_WORD = re.compile(rb"=\?([^?\s]+)\?([qQbB])\?([^?\s]*)\?=")
_ENCODED_WORD_RUN = re.compile(rb"=\?([^?\s]+)\?([qQbB])\?[^?\s]*\?=(?:[ \t\r\n]+=\?\1\?\2\?[^?\s]*\?=)+")
# Adjacent encoded words of any charsets, folding white space between them: blanks, or blanks, a line
# break and blanks. Written "[ \t]*(?:\r?\n)?[ \t]+", the same, the regex engine tried every split of a
# run of blanks between the two, at each word such a run follows: a header of 320 KB took 45 s.
_ANY_WORD = rb"=\?[^?\s]+\?[qQbB]\?[^?\s]*\?="
_MIXED_WORD_RUN = re.compile(_ANY_WORD + rb"(?:(?:[ \t]*\r?\n)?[ \t]+" + _ANY_WORD + rb")+")
# Encoded words a header section holds before its runs in alternating charsets are merged (see
# _join_encoded_word_runs); ordinary mail has far fewer.
_WORDS_BEFORE_MERGING = 200
_BLANK_LINE = re.compile(rb"^\r?$", re.MULTILINE)  # the line that ends the header section
_OBSOLETE_NAME = re.compile(rb"^([!-9;-~]+)[ \t]+:", re.MULTILINE)
_B_WORD = re.compile(rb"=\?([^?\s]+)\?[bB]\?([^?\s]*)\?=")
# The address fields where Outlook's ";" between addresses is read as "," (see semicolons_as_commas).
_ADDRESS_FIELD = re.compile(
    rb"^(?:from|sender|to|cc|bcc|reply-to)[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.MULTILINE | re.IGNORECASE
)


def repair_header_section(raw: bytes) -> tuple[bytes, list[str]]:
    """The top-level header section repaired before any parser sees it; and what was done, as defects.

    ``Subject  : x`` -> ``Subject: x``: RFC 5322 4.5.3 still allows whitespace
    between a field name and its colon (obs-optional) and old mail has it; the
    stdlib parser does not, and reads every header from there on as body text.

    ``=?utf-8?B?<bad base64>?=``: re-encoded from a lenient decode (the one
    mail-parser uses for attachments), as mail clients read it; mail-parser's
    address parser raises on it and would fail the whole message.

    Runs of encoded words joined (:func:`_join_encoded_word_runs`), and ``;`` between
    addresses read as ``,`` (:func:`semicolons_as_commas`).
    """
    end = _BLANK_LINE.search(raw)
    split = end.start() if end else len(raw)
    original = head = raw[:split]  # the body is not sliced off unless the head changed: 25 MB copied for nothing
    head, obsolete = _OBSOLETE_NAME.subn(rb"\1:", head)
    bad_words = 0

    def lenient(word: re.Match[bytes]) -> bytes:
        nonlocal bad_words
        data = word.group(2)
        try:
            # 8-bit bytes are no base64, though the check below skips them: the stdlib would read
            # them as their escapes (\udcb3), and mail-parser's address parser raises on them.
            if data.isascii():
                binascii.a2b_base64(data + b"=" * (-len(data) % 4))
                return word.group(0)
        except binascii.Error:
            pass
        bad_words += 1
        fixed = base64.b64encode(decode_base64_payload(data.decode("ascii", "replace")))
        return b"=?" + word.group(1) + b"?B?" + fixed + b"?="

    head = _join_encoded_word_runs(_B_WORD.sub(lenient, head))
    head, semicolons = semicolons_as_commas(head)
    notes = [f"headers: {obsolete} field name(s) followed by whitespace before ':' (obsolete syntax)"] * bool(obsolete)
    notes += [f"headers: {semicolons} address field(s) with ';' between addresses, read as ','"] * bool(semicolons)
    notes += [f"headers: {bad_words} encoded-word(s) with broken base64, decoded leniently"] * bool(bad_words)
    # Unchanged, the message goes on as it came: a copy of a 25 MB message is 25 MB more at the parse's peak.
    return (raw if head == original else head + raw[split:]), notes


def _join_encoded_word_runs(head: bytes) -> bytes:
    """Each run of adjacent encoded words of one charset and encoding joined into one word, and every
    word's charset label made its real-world superset (``charsets.SUPERSETS``: gb2312 -> gb18030).

    Senders cut encoded words at a byte count, so a Shift_JIS or GBK character is often split
    across two of them; decoded one by one (as the stdlib's header parser does) it is lost.
    Joined first, it is whole again; RFC 2047 6.2 drops the white space between encoded words,
    so the text is otherwise the same.

    The stdlib's ``email.header.decode_header`` (which mail-parser calls) also joins such runs, by
    growing one bytes object word by word: quadratic in the words of a run (100,000 of them took
    31 s, measured). Joined here in one step, that cost is gone too.

    What is left in a header of many words (runs in alternating charsets) is decoded and each run
    becomes one UTF-8 word: ``decode_header`` pops words one by one from the front of a list, and
    mail-parser unfolds the header first, quadratic again (100,000 words took 4.4 s; now 0.6 s).
    Ordinary mail, with a few words a header, keeps its words.
    """
    if b"=?" not in head:
        return head

    def join(run: re.Match[bytes]) -> bytes:
        words: list[tuple[bytes, bytes, bytes]] = _ENCODED_WORD.findall(run.group(0))
        charset, encoding = words[0][0], words[0][1]
        if encoding in b"qQ":
            return b"=?" + charset + b"?Q?" + b"".join(text for _, _, text in words) + b"?="
        data = b"".join(_word_bytes(encoding, text) for _, _, text in words)
        return b"=?" + charset + b"?B?" + base64.b64encode(data) + b"?="

    def superset(word: re.Match[bytes]) -> bytes:
        label = word.group(1)
        codec = charsets.codec_for(label.decode("ascii", "replace"))
        if codec is None and b"\x00" not in label:
            return word.group(0)
        # A NUL in a label makes Python's codec lookup raise ValueError, not LookupError, and
        # mail-parser fails the message on it: such a label is unknown, and is named so.
        name = codec.encode("ascii") if codec is not None else b"unknown-8bit"
        return b"=?" + name + word.group(0)[2 + len(label) :]

    head = _ENCODED_WORD.sub(superset, _ENCODED_WORD_RUN.sub(join, head))
    if head.count(b"=?") <= _WORDS_BEFORE_MERGING:
        return head

    def decode(charset: bytes, encoding: bytes, text: bytes) -> str:
        label = charset.split(b"*", 1)[0].decode("ascii", "replace")  # RFC 2231 5: charset*language
        return charsets.decode(_word_bytes(encoding, text), label)[0]

    def merge(run: re.Match[bytes]) -> bytes:
        text = "".join(decode(*word) for word in _ENCODED_WORD.findall(run.group(0)))
        return b"=?utf-8?B?" + base64.b64encode(text.encode("utf-8", "replace")) + b"?="

    return _MIXED_WORD_RUN.sub(merge, head)


def _word_bytes(encoding: bytes, text: bytes) -> bytes:
    """The bytes an encoded word's *text* stands for; base64 decoded leniently, as mail clients do."""
    if encoding in b"qQ":
        return binascii.a2b_qp(text, header=True)
    data: bytes = decode_base64_payload(text.decode("ascii", "replace"))
    return data


def semicolons_as_commas(head: bytes) -> tuple[bytes, int]:
    """Address fields with ``;`` between addresses (as Outlook users type them) made ``,``-separated;
    and how many fields were changed.

    RFC 5322 allows ``;`` only to close a group (``Team: a@x, b@y;``); read strictly, everything
    before a stray one is an unterminated group and mail-parser drops those addresses. A ``;``
    inside quotes, comments or angle brackets, or closing a group, is kept.
    """
    changed = 0

    def fix(field: re.Match[bytes]) -> bytes:
        nonlocal changed
        value = field.group(1)
        if b";" not in value:
            return field.group(0)
        out, quoted, escaped, comment, angle, group = bytearray(), False, False, 0, False, False
        for byte in value:
            char = bytes((byte,))
            if escaped:
                escaped = False
            elif char == b"\\" and (quoted or comment):
                escaped = True
            elif quoted:
                quoted = char != b'"'
            elif comment:
                comment += {b"(": 1, b")": -1}.get(char, 0)
            elif char in b'"(<>:':
                quoted, comment = char == b'"', int(char == b"(")
                angle = char == b"<" or (angle and char != b">")
                group = group or (char == b":" and not angle)
            elif char == b";" and not angle:
                char, group = (b";", False) if group else (b",", group)
            out += char
        if bytes(out) == value:
            return field.group(0)
        changed += 1
        return field.group(0)[: field.start(1) - field.start(0)] + bytes(out)

    return _ADDRESS_FIELD.sub(fix, head), changed

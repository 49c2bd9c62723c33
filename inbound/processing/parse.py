"""Parse: the raw RFC 5322 bytes of one accepted message -> a typed ``ParsedMessage``.

Stage: called by the processor (``inbound/processing/process.py``) once per ``received``
record, before the per-stream payloads are built (``inbound/processing/payload.py``).

Input: the message exactly as the SMTP edge accepted it (CRLF line endings,
our ``Received:`` header on top). Output: frozen, slotted dataclasses holding
only ``str``/``bytes``/``int``, so nothing downstream ever touches a parser
object or guesses at a charset again.

Failure behaviour: inbound mail is whatever the internet sends, and a webhook
with a note of what was wrong is worth more than a ``failed`` record. So
broken mail *parses*: every oddity (bad boundaries, unknown charsets,
unparseable dates, ambiguous addresses) becomes a line in ``defects`` and the
best reading mail-parser can give. ``ParseError`` is raised only when there is
no message to speak of: empty input, input with no header field at all
(never the case behind our SMTP edge, which adds ``Received:``), MIME nesting
too deep to walk, or mail-parser failing in a way not guarded against below.

Why mail-parser *and* the stdlib: mail-parser (``mailparser``) is the parser
of record. It builds the MIME tree, reads the addresses (with recovery and
diagnostics for ambiguous ones), the date (with diagnostics), the bodies
(charset decoding with recovery) and decides what is an attachment, and it
collects the defects of all of these. Where it is weak, the stdlib ``email``
package is used on the same tree, or the input is repaired first:

* headers: it merges repeated headers into a dict and decodes with
  ``errors="ignore"``, silently dropping bytes. Here every header is kept in
  order and decoded by the stdlib header registry, which replaces what it
  cannot decode with U+FFFD (and we say so);
* display names: it leaves ``"=?charset?...?="`` literal when quoted (strict
  RFC 2047); every mail client decodes these, so we do too;
* 7-bit charsets: it returns ISO-2022-JP (and UTF-7) bodies undecoded;
* attachment names: it invents random (non-deterministic) or Content-ID names
  for unnamed parts; those become ``None`` so a redelivery is byte-identical;
* crashes: broken base64 in an encoded-word and a missing epilogue make it
  raise; both are guarded against before it runs (``_repair_header_section``,
  and the epilogue guard in ``parse_message``).

This is the only module that imports ``mailparser``: it is untyped, so its
``Any`` stays here.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from email import message_from_bytes
from email.headerregistry import HeaderRegistry
from email.message import Message
from typing import Any, Literal

import mailparser
from mailparser.exceptions import MailParserRecursionError
from mailparser.utils import decode_base64_payload, decode_header_part, mime_header_view

from ..errors import ParseError

Disposition = Literal["inline", "attachment"]

# Every header decoded as unstructured text: RFC 2047 words decoded, unknown
# charsets and stray 8-bit bytes replaced with U+FFFD (with a defect), never an
# exception. The structured classes (address, date) re-render the value instead.
_UNSTRUCTURED = HeaderRegistry(use_default_map=False)
# The white space between two encoded words (it is not part of the text: RFC 2047 6.2).
_ENCODED_WORD_GAP = re.compile(r"\?=[ \t]+(?==\?)")
_ENCODED_WORD = re.compile(rb"=\?([^?\s]+)\?([qQbB])\?([^?\s]*)\?=")
_ENCODED_WORD_RUN = re.compile(rb"=\?([^?\s]+)\?([qQbB])\?[^?\s]*\?=(?:[ \t\r\n]+=\?\1\?\2\?[^?\s]*\?=)+")
# Adjacent encoded words of any charsets (folding white space between them).
_ANY_WORD = rb"=\?[^?\s]+\?[qQbB]\?[^?\s]*\?="
_MIXED_WORD_RUN = re.compile(_ANY_WORD + rb"(?:[ \t]*(?:\r?\n)?[ \t]+" + _ANY_WORD + rb")+")
_WORDS_PER_PIECE = 200
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_SURROGATE = re.compile("[\ud800-\udfff]")
_BLANK_LINE = re.compile(rb"^\r?$", re.MULTILINE)  # the line that ends the header section
_OBSOLETE_NAME = re.compile(rb"^([!-9;-~]+)[ \t]+:", re.MULTILINE)
_B_WORD = re.compile(rb"=\?([^?\s]+)\?[bB]\?([^?\s]*)\?=")
# The names mail-parser gives attachments that have none: a random ``xxxxxxxxxx.rtf``
# or ``xxxxxxxxxx.txt`` (see mailparser.core.MailParser.parse), or the Content-ID.
_INVENTED_NAME = re.compile(r"[a-z]{10}\.(?:rtf|txt)")
_MIME_TYPE = re.compile(r"[^/\s]+/[^/\s]+")
# Headers RFC 5322 allows once; when repeated, the first is what we report.
_SINGLE = ("from", "subject", "date", "message-id")


@dataclass(frozen=True, slots=True)
class Address:
    name: str  # display name, decoded; "" when there is none
    email: str


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str | None  # decoded, untrusted; None when the part names no file
    content_type: str  # lower case, e.g. "image/png"
    size: int  # len(content)
    content_id: str | None  # without the angle brackets, as HTML cites it: cid:<content_id>
    disposition: Disposition
    content: bytes  # transfer encoding removed


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    message_id: str | None
    date: str | None  # RFC 3339 with the sender's UTC offset; None when absent or unparseable
    subject: str | None  # None when there is no Subject header
    from_: Address | None
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    headers: tuple[tuple[str, str], ...]  # top-level headers, in order, repeats kept, decoded
    text: str | None  # text/plain body parts, joined; LF line endings
    html: str | None  # text/html body parts, joined; LF line endings
    attachments: tuple[Attachment, ...]
    defects: tuple[str, ...]

    def header(self, name: str) -> str | None:
        """The first header called ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)


def parse_message(raw: bytes) -> ParsedMessage:
    """Parse one message. Raises ParseError only when there is no message to speak of."""
    if not raw.strip():
        raise ParseError("empty message: no header fields and no body")
    raw, repairs = _repair_header_section(raw)
    try:
        # What MailParser.from_bytes does, with one guard: mail-parser reads the
        # epilogue unchecked when a start boundary is missing, and it may be None.
        tree = message_from_bytes(raw)
        if tree.is_multipart() and tree.epilogue is None:
            tree.epilogue = ""
        mp: Any = mailparser.MailParser(tree)
    except (RecursionError, MailParserRecursionError) as exc:
        raise ParseError("MIME parts nested too deeply to parse") from exc
    except Exception as exc:  # a parser bug on hostile input is this message's failure, not ours
        raise ParseError(f"mail-parser failed: {type(exc).__name__}: {exc}") from exc
    message: Message = mp.message
    if not message.keys():
        raise ParseError("no header fields: the input does not start with a 'Name: value' header")

    defects = repairs
    headers = _headers(message, defects)
    counts = Counter(name.lower() for name, _ in headers)
    for name in _SINGLE:
        if counts[name] > 1:
            defects.append(f"headers: {name} occurs {counts[name]} times; the first is used")
    if not counts["from"]:
        defects.append("headers: no From header")
    if not counts["date"]:
        defects.append("headers: no Date header")

    def first(name: str) -> str | None:
        return next((v for k, v in headers if k.lower() == name), None)

    try:
        senders, to, cc, reply_to = (
            _addresses(mp.from_),
            _addresses(mp.to),
            _addresses(mp.cc),
            _addresses(mp.reply_to),
        )
        attachments = _attachments(mp, message)
        undecoded = _seven_bit_texts(message)
        text, html = _body(mp.text_plain, undecoded), _body(mp.text_html, undecoded)
        other = _body(mp.text_not_managed, undecoded)
        if text is None and html is None and other and other.strip():
            # Typically a multipart whose boundary never came: its content is one blob.
            text = other
            defects.append("body: no text/plain or text/html part; text is the body part(s) of other types")
        date = _date(mp.date, mp.timezone)
        defects[:0] = _mailparser_defects(mp.defects)
    except Exception as exc:  # as above: mail-parser's output did not have its documented shape
        raise ParseError(f"mail-parser failed: {type(exc).__name__}: {exc}") from exc
    return ParsedMessage(
        message_id=first("message-id") or None,
        date=date,
        subject=first("subject"),
        from_=senders[0] if senders else None,
        to=to,
        cc=cc,
        reply_to=reply_to,
        headers=tuple(headers),
        text=text,
        html=html,
        attachments=attachments,
        defects=tuple(dict.fromkeys(defects)),
    )


def _repair_header_section(raw: bytes) -> tuple[bytes, list[str]]:
    """Two repairs in the top-level header section, before any parser sees it; and what was done.

    ``Subject  : x`` -> ``Subject: x``: RFC 5322 4.5.3 still allows whitespace
    between a field name and its colon (obs-optional) and old mail has it; the
    stdlib parser does not, and reads every header from there on as body text.

    ``=?utf-8?B?<bad base64>?=``: re-encoded from a lenient decode (the one
    mail-parser uses for attachments), as mail clients read it; mail-parser's
    address parser raises on it and would fail the whole message.
    """
    end = _BLANK_LINE.search(raw)
    head, rest = (raw[: end.start()], raw[end.start() :]) if end else (raw, b"")
    original = head
    head, obsolete = _OBSOLETE_NAME.subn(rb"\1:", head)
    bad_words = 0

    def lenient(word: re.Match[bytes]) -> bytes:
        nonlocal bad_words
        data = word.group(2)
        try:
            binascii.a2b_base64(data + b"=" * (-len(data) % 4))
        except binascii.Error:
            bad_words += 1
            fixed = base64.b64encode(decode_base64_payload(data.decode("ascii", "replace")))
            return b"=?" + word.group(1) + b"?B?" + fixed + b"?="
        return word.group(0)

    head = _join_encoded_word_runs(_B_WORD.sub(lenient, head))
    notes = [f"headers: {obsolete} field name(s) followed by whitespace before ':' (obsolete syntax)"] * bool(obsolete)
    notes += [f"headers: {bad_words} encoded-word(s) with broken base64, decoded leniently"] * bool(bad_words)
    # Unchanged, the message goes on as it came: a copy of a 25 MB message is 25 MB more at the parse's peak.
    return (raw if head == original else head + rest), notes


def _join_encoded_word_runs(head: bytes) -> bytes:
    """In a header section holding more than ``_WORDS_PER_PIECE`` encoded words, join each run of
    adjacent words of one charset and encoding into one word.

    The stdlib's ``email.header.decode_header`` (which mail-parser calls) joins such runs itself,
    by growing one bytes object word by word: quadratic in the words of a run (100,000 of them
    took 31 s, measured). Joined here in one step, the text is the same -- RFC 2047 6.2 drops
    the white space between encoded words -- and a character split across two words is whole
    again. Runs that still hold several words (alternating charsets) are decoded and become one
    UTF-8 word. Ordinary mail, with a few words a header, is left exactly as it came.
    """
    if head.count(b"=?") <= _WORDS_PER_PIECE:
        return head

    def join(run: re.Match[bytes]) -> bytes:
        words: list[tuple[bytes, bytes, bytes]] = _ENCODED_WORD.findall(run.group(0))
        charset, encoding = words[0][0], words[0][1]
        if encoding in b"qQ":
            return b"=?" + charset + b"?Q?" + b"".join(text for _, _, text in words) + b"?="
        data = b"".join(decode_base64_payload(text.decode("ascii", "replace")) for _, _, text in words)
        return b"=?" + charset + b"?B?" + base64.b64encode(data) + b"?="

    def decode(charset: bytes, encoding: bytes, text: bytes) -> str:
        data = binascii.a2b_qp(text, header=True) if encoding in b"qQ" else decode_base64_payload(text.decode())
        label = charset.split(b"*", 1)[0].decode("ascii", "replace")  # RFC 2231 5: charset*language
        try:
            return data.decode(label, "replace")
        except LookupError:
            return data.decode("utf-8", "replace")

    def merge(run: re.Match[bytes]) -> bytes:
        # What is left are runs of words in alternating charsets. decode_header pops them one by one
        # from the front of a list, and mail-parser unfolds the header first: quadratic again
        # (100,000 took 4.4 s). Decoded here, the run becomes one UTF-8 word of the same text.
        text = "".join(decode(*word) for word in _ENCODED_WORD.findall(run.group(0)))
        return b"=?utf-8?B?" + base64.b64encode(text.encode("utf-8", "replace")) + b"?="

    return _MIXED_WORD_RUN.sub(merge, _ENCODED_WORD_RUN.sub(join, head))


def _clean(value: object) -> str:
    """Any text mail-parser hands back, as a str that encodes to UTF-8.

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


def _pieces(value: str) -> list[str]:
    """*value* cut between encoded words, at most ``_WORDS_PER_PIECE`` of them a piece.

    The stdlib's unstructured-header parser is quadratic in the number of encoded words (16,000
    took 9 s and 2.3 GB, measured), and a sender controls that number. Decoded piece by piece, a
    header costs time and memory in proportion to its length. The cuts fall only on the white
    space between two encoded words, which RFC 2047 6.2 drops when decoding anyway, so the
    pieces' texts joined are the header's text.
    """
    pieces, start = [], 0
    for count, gap in enumerate(_ENCODED_WORD_GAP.finditer(value), start=1):
        if count % _WORDS_PER_PIECE == 0:
            pieces.append(value[start : gap.start() + 2])
            start = gap.end()
    pieces.append(value[start:])
    return pieces


def _decode_header(name: str, raw: str) -> tuple[str, list[str]]:
    """Unfold and decode one raw header value; also the stdlib's complaints about it.

    Raw 8-bit bytes are read as UTF-8 (RFC 6532) where they are valid UTF-8.
    """
    value = _LINE_BREAK.sub("", raw)
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
            return _clean(value).strip(), [*complaints, f"{type(exc).__name__}: {exc}"]
        complaints.extend(f"{type(d).__name__}: {d}" if str(d) else type(d).__name__ for d in header.defects)
        decoded_parts.append(str(header))
    decoded = _clean("".join(decoded_parts)).strip()
    if decoded.count("\ufffd") > value.count("\ufffd") and not complaints:
        complaints.append("encoded-word in an unknown charset or with bad bytes, replaced with U+FFFD")
    return decoded, complaints


def _headers(message: Message, defects: list[str]) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    seen: Counter[str] = Counter()
    for raw_name, raw_value in message.raw_items():
        name = _clean(raw_name)
        value, complaints = _decode_header(name, _raw_str(raw_value))
        n = seen[name.lower()]
        seen[name.lower()] += 1
        defects.extend(f"headers: {name}[{n}]: {c}" for c in complaints)
        headers.append((name, value))
    return headers


def _raw_str(value: object) -> str:
    """A raw header value as the stdlib keeps it (str, 8-bit bytes as surrogates)."""
    if isinstance(value, str):
        return value
    encode = getattr(value, "encode", None)  # email.header.Header
    return str(encode()) if callable(encode) else str(value)


def _addresses(pairs: Any) -> tuple[Address, ...]:
    """mail-parser's (name, email) pairs; names that are one quoted encoded-word get decoded."""
    out: list[Address] = []
    for name, email in pairs or ():
        display = _clean(name).strip()
        if "=?" in display:
            display, _ = _decode_header("display-name", display)
        if _clean(email).strip():
            out.append(Address(display, _clean(email).strip()))
    return tuple(out)


def _date(value: Any, offset_hours: Any) -> str | None:
    """mail-parser's UTC datetime, shown in the sender's own UTC offset (RFC 3339)."""
    if not isinstance(value, datetime):
        return None
    moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        zone = timezone(timedelta(hours=float(offset_hours or 0)))
        return moment.astimezone(zone).isoformat().replace("+00:00", "Z")
    except (ValueError, OverflowError):  # an offset of a day or more, or a year out of range
        return moment.isoformat().replace("+00:00", "Z")


def _body(parts: Any, undecoded: dict[str, str]) -> str | None:
    """The body parts of one type, joined, with the wire's CRLF made LF."""
    texts = [undecoded.get(p, _clean(p)) for p in parts or () if p]
    return "\n".join(texts).replace("\r\n", "\n") if texts else None


def _seven_bit_texts(message: Message) -> dict[str, str]:
    """Raw text -> decoded text, for the body parts mail-parser returns undecoded.

    For a 7bit/8bit part whose payload is plain ASCII, mail-parser returns the
    payload as is, without applying the declared charset. That is right for
    ASCII-compatible charsets and wrong for the 7-bit encodings (ISO-2022-JP,
    UTF-7, HZ): Japanese mail arrives as escape sequences. Those are decoded here.
    """
    fixes: dict[str, str] = {}
    for part in message.walk():
        raw = part.get_payload()
        charset = part.get_content_charset()
        cte = str(part.get("content-transfer-encoding", "")).strip().lower()
        if not (isinstance(raw, str) and raw.isascii() and charset and cte in ("", "7bit", "8bit")):
            continue
        try:
            codec = codecs.lookup(charset).name
        except LookupError:
            continue
        if codec.startswith("iso2022_") or codec in ("utf-7", "hz"):
            fixes[raw] = _clean(raw.encode("ascii").decode(codec, "replace"))
    return fixes


def _mailparser_defects(groups: Any) -> list[str]:
    """mail-parser's ``[{where: [defect, ...]}, ...]`` as flat ``"where: defect"`` lines."""
    lines: list[str] = []
    for group in groups or ():
        for where, items in dict(group).items():
            lines.extend(f"{_clean(where)}: {_clean(item)}" for item in items)
    return lines


def _attachments(mp: Any, message: Message) -> tuple[Attachment, ...]:
    """mail-parser's attachments, with invented names dropped and content decoded to bytes."""
    named: set[str] = set()
    for part in message.walk():
        view, _ = mime_header_view(part)  # exactly how mail-parser reads the name
        name = decode_header_part(view.get_filename())
        if name:
            named.add(name)
    out: list[Attachment] = []
    for item in mp.attachments:
        raw_cid = _clean(item.get("content-id")).strip()
        filename: str | None = _clean(item.get("filename"))
        if filename not in named and (filename == raw_cid or _INVENTED_NAME.fullmatch(filename or "")):
            filename = None
        payload = item.get("payload") or ""
        if isinstance(payload, bytes):
            content = payload
        elif item.get("binary"):  # base64 text, decoded as leniently as a mail client would
            content = decode_base64_payload(payload)
        else:  # a multipart part (an attached message) flattened to text; 8-bit kept as surrogates
            content = _to_bytes(str(payload))
        content_type = _clean(item.get("mail_content_type")).lower()
        token = _clean(item.get("content-disposition")).split(";", 1)[0].strip().lower()
        inline = token == "inline" or (not token and bool(raw_cid))
        out.append(
            Attachment(
                filename=filename or None,
                content_type=content_type if _MIME_TYPE.fullmatch(content_type) else "application/octet-stream",
                size=len(content),
                content_id=raw_cid.strip("<>").strip() or None,
                disposition="inline" if inline else "attachment",
                content=content,
            )
        )
    return tuple(out)


def _to_bytes(text: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that is not an escaped byte
        return text.encode("utf-8", "replace")

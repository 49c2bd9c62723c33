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
best reading we can give. ``ParseError`` is raised only when there is
no message to speak of: empty input, input with no header field at all
(never the case behind our SMTP edge, which adds ``Received:``), or MIME
nesting too deep to walk.

Who reads what: the stdlib builds the MIME tree (compat32, ``mime.message_tree``)
and mail-parser (``mailparser``) reads the addresses from it (with recovery and
diagnostics for ambiguous ones) and the date (with diagnostics). What is body text and what is a file,
attached messages and delivery reports are decided by ``mime.py`` on the same
tree, and every charset by ``charsets.py``: mail-parser joined every alternative
and attached message into the text, dropped delivery-status parts and re-decoded
a whole body as UTF-8 for one bad byte. Where it is weak elsewhere, the stdlib
``email`` package is used on the same tree, or the input is repaired first:

* headers: it merges repeated headers into a dict and decodes with
  ``errors="ignore"``, silently dropping bytes. Here every header is kept in
  order and decoded by the stdlib header registry, which replaces what it
  cannot decode with U+FFFD (and we say so);
* encoded words: runs of one charset are joined before decoding (a character
  split across two words is whole again) and labels read as their supersets;
* display names: it leaves ``"=?charset?...?="`` literal when quoted (strict
  RFC 2047); every mail client decodes these, so we do too;
* address lists: ``;`` between addresses (Outlook's habit) made ``,``, or every
  address before it is lost as an unterminated group;
* crashes: broken base64 in an encoded-word and a missing epilogue make it
  raise; both are guarded against before it runs (``repair.py``,
  and the epilogue guard in ``_read_by_mail_parser``). Where it fails all the
  same, the addresses and the date are read by the stdlib and the failure is
  the first defect (``_read_by_the_stdlib``): its bug is no reason to fail a message.
  The stdlib itself raises on two shapes of RFC 2231 parameter, wherever a part's
  parameters are read (its parser included): ``rfc2231.py`` reads them and says so.

This is the only module that reads with ``mailparser`` (``repair.py`` borrows its lenient
base64 decode): it is untyped, so its ``Any`` stays here.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime, parsedate_tz
from typing import Any

import mailparser
from mailparser.exceptions import MailParserRecursionError

from ..config.settings import ProcessingSettings
from ..errors import ParseError
from .charsets import json_safe
from .headers import decode as decode_header
from .headers import decoded_headers, raw_str
from .htmltext import text_of_html
from .mime import Attachment, Disposition, ReportRecipient, Walked, message_tree, walk
from .repair import repair_header_section
from .rfc2231 import noting_defects

__all__ = [
    "Address",
    "AttachedMessage",
    "Attachment",
    "Disposition",
    "DroppedAttachment",
    "ParsedMessage",
    "Report",
    "ReportRecipient",
    "parse_message",
]

# mail-parser logs what it thinks of the message it reads: a warning for every part it does not put
# into its own text ("Email content 'png' not handled", about a decision mime.py makes instead), an
# error quoting every header part it cannot decode (the header stays as it came, and the webhook gets
# it so). One line per part, thousands for a hostile message, none with a queue id, and the text a
# stranger chose: a folded header wrote whole lines of its own into the service's log. What became of
# the message is what the process stage logs; mail-parser's view of it is not logged at all.
logging.getLogger("mailparser").setLevel(logging.CRITICAL + 1)
_CHARSET_COMPLAINT = "CharsetDecodeDefect"
# Headers RFC 5322 allows once; when repeated, the first is what we report.
_SINGLE = ("from", "subject", "date", "message-id")
_DEFAULT_LIMITS = ProcessingSettings()  # [processing]'s max_mime_depth and max_mime_parts when none are given


@dataclass(frozen=True, slots=True)
class Address:
    name: str  # display name, decoded; "" when there is none
    email: str


@dataclass(frozen=True, slots=True)
class AttachedMessage:
    """An attached message (``message/rfc822``), summarised; its bytes are among the attachments."""

    subject: str | None
    from_: Address | None
    date: str | None  # RFC 3339, as ParsedMessage.date
    message_id: str | None


@dataclass(frozen=True, slots=True)
class DroppedAttachment:
    """An attachment a stream's policy left out of its payload (processing/attachpolicy.py)."""

    filename: str | None
    content_type: str
    size: int
    reason: str  # the config key that dropped it: drop_attachment_types, max_attachment_size, max_attachments


@dataclass(frozen=True, slots=True)
class Report:
    """A ``multipart/report`` (RFC 6522): a bounce or delay notice, as a program can act on it."""

    report_type: str  # e.g. "delivery-status"
    reporting_mta: str | None
    recipients: tuple[ReportRecipient, ...]
    original_message_id: str | None  # from the returned headers or message, when there are any
    original_subject: str | None


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
    text: str | None  # text/plain body parts, joined; LF line endings; from the HTML when there is only HTML
    html: str | None  # text/html body parts, joined; LF line endings
    attachments: tuple[Attachment, ...]
    defects: tuple[str, ...]
    attached_messages: tuple[AttachedMessage, ...] = ()
    report: Report | None = None
    dropped_attachments: tuple[DroppedAttachment, ...] = ()  # set per stream by the attachment policy, not here

    def header(self, name: str) -> str | None:
        """The first header called ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)


def parse_message(raw: bytes, limits: ProcessingSettings = _DEFAULT_LIMITS) -> ParsedMessage:
    """Parse one message. Raises ParseError only when there is no message to speak of, and
    mimeshape.BeyondLimits when the parts it recovers pass *limits*' max_mime_depth or max_mime_parts."""
    with noting_defects() as unreadable_parameters:  # read all the same (rfc2231.py), wherever they are read
        parsed = _parse(raw, limits)
    if not unreadable_parameters:
        return parsed
    return replace(parsed, defects=tuple(dict.fromkeys((*parsed.defects, *unreadable_parameters))))


def _parse(raw: bytes, limits: ProcessingSettings) -> ParsedMessage:
    if not raw.strip():
        raise ParseError("empty message: no header fields and no body")
    raw, repairs = repair_header_section(raw)
    try:
        message = message_tree(raw)
    except RecursionError as exc:
        raise ParseError("MIME parts nested too deeply to parse") from exc
    if not message.keys():
        raise ParseError("no header fields: the input does not start with a 'Name: value' header")
    try:
        read = _read_by_mail_parser(message)
    except (RecursionError, MailParserRecursionError) as exc:
        raise ParseError("MIME parts nested too deeply to parse") from exc
    except Exception as exc:  # noqa: BLE001 -- mail-parser's bug on a stranger's message: read it without
        read = _read_by_the_stdlib(message, f"mail-parser failed ({type(exc).__name__}: {exc})")
    senders, to, cc, reply_to, date, defects = read
    defects += repairs
    headers = decoded_headers(message, defects)
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
        found = walk(message, limits.max_mime_depth, limits.max_mime_parts, len(raw))
    except RecursionError as exc:
        raise ParseError("MIME parts nested too deeply to parse") from exc
    defects += found.defects
    attached = tuple(_summary(inner, defects) for inner in found.attached)
    html = "\n".join(found.htmls) if found.htmls else None
    if found.texts:
        text: str | None = "\n".join(found.texts)
    else:
        text = text_of_html(html, defects) if html is not None else None
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
        attachments=tuple(found.attachments),
        defects=tuple(dict.fromkeys(defects)),
        attached_messages=attached,
        report=_report(found),
    )


# What the top-level header section gives beside its decoded headers: From, To, Cc, Reply-To, the
# date (RFC 3339), and what the reader had to say about the message (its defects).
_Read = tuple[tuple[Address, ...], tuple[Address, ...], tuple[Address, ...], tuple[Address, ...], str | None, list[str]]


def _read_by_mail_parser(message: Message) -> _Read:
    """What mail-parser reads of *message*, the tree mime.py made (mail-parser walks that tree as it is)."""
    # One guard, as MailParser.from_bytes has none: mail-parser reads the epilogue unchecked
    # when a start boundary is missing, and it may be None.
    if message.is_multipart() and message.epilogue is None:
        message.epilogue = ""
    mp: Any = mailparser.MailParser(message)
    senders, to, cc, reply_to = (_addresses(pairs) for pairs in (mp.from_, mp.to, mp.cc, mp.reply_to))
    date = _date(mp.date, mp.timezone, message.get("date"))
    return senders, to, cc, reply_to, date, _mailparser_defects(mp.defects)


def _read_by_the_stdlib(message: Message, why: str) -> _Read:
    """The same from the standard library, when mail-parser failed on *message*: *why* is its first defect.

    mail-parser decodes every part of a message to read its headers, and each way a stranger's
    message has broken that so far (a NUL in a part's charset; a top-level message/* part over a
    multipart whose start boundary never came) failed the whole message; none of it is needed to
    read the addresses and the date, and the body is walked by mime.py either way.
    """
    defects = [why]
    senders, to, cc, reply_to = (
        _addresses(
            _stdlib_addresses([raw_str(value) for value in message.get_all(name, [])], f"headers: {name}", defects)
        )
        for name in ("from", "to", "cc", "reply-to")
    )
    date = message.get("date")
    return senders, to, cc, reply_to, _rfc3339(raw_str(date)) if date is not None else None, defects


def _stdlib_addresses(values: list[str], where: str, defects: list[str]) -> list[tuple[str, str]]:
    """``email.utils.getaddresses`` of *values*; none, and a defect, where it would recurse too deep.

    The stdlib reads nested groups (``g:g:g: ...``) by recursion: a From field of 3,000 of them,
    6 KB, raised RecursionError and failed the message."""
    try:
        return getaddresses(values)
    except RecursionError:
        defects.append(f"{where}: groups nested too deeply to read; no address read")
        return []


def _addresses(pairs: Any) -> tuple[Address, ...]:
    """mail-parser's (name, email) pairs; names that are one quoted encoded-word get decoded."""
    out: list[Address] = []
    for name, email in pairs or ():
        display = json_safe(name).strip()
        if "=?" in display:
            display, _ = decode_header("display-name", display)
        if json_safe(email).strip():
            out.append(Address(display, json_safe(email).strip()))
    return tuple(out)


def _summary(inner: Message, defects: list[str]) -> AttachedMessage:
    """An attached message's subject, sender, date and Message-ID, decoded as the top level's are."""
    headers = _first_headers(inner)
    raw_from = inner.get("from")
    senders = _stdlib_addresses([raw_str(raw_from)], "attached message: from", defects) if raw_from is not None else []
    name, email = senders[0] if senders else ("", "")
    if "=?" in name:
        name, _ = decode_header("display-name", name)
    return AttachedMessage(
        subject=headers.get("subject"),
        from_=Address(json_safe(name).strip(), json_safe(email).strip()) if email.strip() else None,
        date=_rfc3339(headers.get("date", "")),
        message_id=headers.get("message-id") or None,
    )


def _rfc3339(date: str) -> str | None:
    """A Date header's moment in RFC 3339, in the sender's own UTC offset; None when it is no date."""
    try:
        moment = parsedate_to_datetime(date)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return moment.isoformat().replace("+00:00", "Z") if moment.tzinfo else moment.isoformat() + "Z"


def _first_headers(message: Message) -> dict[str, str]:
    """Lower-case name -> the first such header's decoded value (its complaints are the inner message's own)."""
    return {name.lower(): value for name, value in reversed(decoded_headers(message, []))}


def _report(found: Walked) -> Report | None:
    """The report of a multipart/report; the original's headers from text/rfc822-headers or the returned message."""
    if found.report_type is None:
        return None
    original = found.original_headers or next(iter(found.attached), None)
    headers = _first_headers(original) if original is not None else {}
    return Report(
        report_type=found.report_type,
        reporting_mta=found.reporting_mta,
        recipients=tuple(found.recipients),
        original_message_id=headers.get("message-id") or None,
        original_subject=headers.get("subject"),
    )


def _date(value: Any, offset_hours: Any, header: object) -> str | None:
    """mail-parser's UTC datetime, shown in the sender's own UTC offset (RFC 3339).

    mail-parser gives the offset in hours rounded to a tenth (Nepal's +0545 is "+5.8", and
    10:00 +0545 became 10:03 +05:48), so the Date *header*'s own offset is shown when it is
    the one mail-parser rounded.
    """
    if not isinstance(value, datetime):
        return None
    moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        hours = float(offset_hours or 0)
        seconds = _offset_seconds(header)
        # Not the offset mail-parser rounded (to within 0.05 hours, and float error): its own.
        if seconds is None or abs(seconds / 3600 - hours) >= 0.051:
            seconds = round(hours * 3600)
        zone = timezone(timedelta(seconds=seconds))
        return moment.astimezone(zone).isoformat().replace("+00:00", "Z")
    except (ValueError, OverflowError):  # an offset of a day or more, or a year out of range
        return moment.isoformat().replace("+00:00", "Z")


def _offset_seconds(header: object) -> int | None:
    """The UTC offset a Date header writes, in seconds; None when it writes none the stdlib reads."""
    if header is None:
        return None
    try:
        parsed = parsedate_tz(raw_str(header))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return parsed[9] if parsed is not None else None


def _mailparser_defects(groups: Any) -> list[str]:
    """mail-parser's ``[{where: [defect, ...]}, ...]`` as flat ``"where: defect"`` lines.

    Its charset complaints are left out: they are about its own decoding of the bodies, which
    is not the one we deliver (mime.py decodes them and says what it had to replace).
    """
    lines: list[str] = []
    for group in groups or ():
        for where, items in dict(group).items():
            lines.extend(f"{json_safe(where)}: {json_safe(item)}" for item in items if _CHARSET_COMPLAINT not in item)
    return lines

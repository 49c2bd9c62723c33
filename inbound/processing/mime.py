"""MIME walk: the parsed MIME tree of one message -> its body text, HTML, attachments and reports.

Stage: called by ``parse.py`` on the tree the stdlib's ``email`` package builds
(compat32, the tree mail-parser reads too), before ``ParsedMessage`` is made.

What is body and what is a file is decided here, once, by the structure of the
message, the way mail clients show it:

* ``multipart/alternative`` holds one content several ways: the text comes from
  the first alternative that has ``text/plain``, the HTML from the first that has
  ``text/html``; files inside any alternative (a related image) are kept.
* an attached message (``message/rfc822``) is one attachment holding its bytes;
  it is never walked into, so neither its text nor its own attachments become
  the outer message's. parse.py summarises it (``attached``).
* ``multipart/report`` (RFC 6522): ``message/delivery-status`` becomes the
  per-recipient ``ReportRecipient`` list, ``text/rfc822-headers`` the original
  message's headers; the human-readable part is the text.
* a ``text/plain`` or ``text/html`` leaf is body text unless it is marked
  ``attachment``, or is named and not marked ``inline``; every other leaf (an
  image with neither name nor Content-ID included) is an attachment.
* a ``multipart`` whose boundary never comes is searched for the delimiter lines
  it really uses and walked again; raw MIME source (base64 and all) is never text.
  Each such recovery parses the rest of its body again, so one nested in another
  costs the body's size at every level: in all, recovery parses at most twice the
  message's size and a mebibyte (a small message at any depth the limits allow),
  and a body past that is kept as one attachment.

Failure behaviour: never raises on content; what was odd becomes a line in
``defects``. Nesting is bounded by the caller (the stdlib parser's recursion).
The parts the walk builds itself are counted against ``max_mime_depth`` and
``max_mime_parts`` as the shape scan counts those it can see (``mimeshape.py``,
before any parse), and past either the walk raises ``BeyondLimits`` with the
scan's reason: the message is Failed as if the scan had seen them. Of a message
carried in a part's content (an attached message in base64, a report's returned
headers) only the header section is read, so no tree is built from its body.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.errors import HeaderParseError
from email.feedparser import BytesFeedParser
from email.generator import BytesGenerator
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from io import BytesIO
from typing import Any, Literal

from . import charsets, rfc2231
from .headers import decode_words
from .mimeshape import BeyondLimits, Shape, mime_shape

rfc2231.install()  # before any tree is built: the parser itself reads each multipart's boundary parameter

Disposition = Literal["inline", "attachment"]

_ATTACHED_MESSAGE = ("message/rfc822", "message/global")
_BODY_TYPES = ("text/plain", "text/html")
_STATUS_FIELDS = ("reporting-mta", "final-recipient", "action", "status", "original-recipient")
_MIME_TYPE = re.compile(r"[^/\s]+/[^/\s]+")
# A delimiter line (RFC 2046 5.1.1): "--" and a boundary of bchars, perhaps closed by "--".
_DELIMITER = re.compile(r"^--([0-9A-Za-z'()+_,./:=?-][0-9A-Za-z'()+_,./:=? -]{0,69}?)(?:--)?[ \t]*\r?$", re.MULTILINE)
_MIME_HEADER = re.compile(r"^Content-(?:Type|Transfer-Encoding|Disposition):", re.MULTILINE | re.IGNORECASE)
# Attached messages are given back as they came, CRLF line endings and headers unchanged.
_WIRE = compat32.clone(linesep="\r\n")
_FEED_SLICE = 64 * 1024  # bytes the MIME parser is fed at a time
_RECOVERABLE_ANYWAY = 1024 * 1024  # bytes recovery may parse again beyond twice the message's size


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str | None  # decoded, untrusted; None when the part names no file
    content_type: str  # lower case, e.g. "image/png"
    size: int  # len(content)
    content_id: str | None  # without the angle brackets, as HTML cites it: cid:<content_id>
    disposition: Disposition
    content: bytes  # transfer encoding removed


@dataclass(frozen=True, slots=True)
class ReportRecipient:
    """One per-recipient block of a ``message/delivery-status`` (RFC 3464 2.3); the type prefix
    (``rfc822;``, ``dns;``, ``smtp;``) of each value is left out."""

    action: str | None  # failed, delayed, delivered, relayed, expanded
    status: str | None  # e.g. "5.1.1"
    final_recipient: str | None
    original_recipient: str | None
    diagnostic_code: str | None
    remote_mta: str | None


@dataclass(slots=True)
class Walked:
    """What the walk found, in message order."""

    texts: list[str] = field(default_factory=list)
    htmls: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    attached: list[Message] = field(default_factory=list)  # the attached messages, for their summaries
    report_type: str | None = None
    reporting_mta: str | None = None
    recipients: list[ReportRecipient] = field(default_factory=list)
    original_headers: Message | None = None  # a report's text/rfc822-headers part
    named_texts: list[str] = field(default_factory=list)  # named text/plain parts (attachments): text if no other
    defects: list[str] = field(default_factory=list)

    def absorb(self, other: Walked, *, bodies: bool = True) -> None:
        if bodies:
            self.texts += other.texts
            self.htmls += other.htmls
        self.attachments += other.attachments
        self.attached += other.attached
        self.report_type = self.report_type or other.report_type
        self.reporting_mta = self.reporting_mta or other.reporting_mta
        self.recipients += other.recipients
        self.original_headers = self.original_headers or other.original_headers
        self.named_texts += other.named_texts
        self.defects += other.defects


def message_tree(raw: bytes) -> Message:
    """The stdlib's MIME tree of *raw*, fed to its parser a slice at a time.

    ``email.message_from_bytes`` decodes the whole message into one str and reads it through a
    ``StringIO``, which holds it again at four bytes a character: a 25.8 MB message peaked at
    200 MB in the parser alone. Fed in slices, the same tree (byte for byte) peaks at 71 MB.
    The slices cut anywhere: the parser decodes each byte on its own (ASCII, surrogateescape).

    A message that is neither multipart nor message/* is read up to its first blank line only:
    the parser makes the rest of such a message its payload as it is, a line at a time, and here
    the rest is set whole (98 -> 14 us for 10 KiB), the same tree. When the header section ended
    earlier (at a line that is no header) the message is read whole, as any other.
    """
    view = memoryview(raw)
    headed = _header_end(raw)
    # A header section that names either type is read whole at once, not its headers twice.
    head = raw[:headed].lower()
    if headed and b"multipart/" not in head and b"message/" not in head:
        tree = _fed(view[:headed])
        # A payload already: the header section ended before that line (a line that is no header).
        if tree.get_content_maintype() not in ("multipart", "message") and not _parsed_body(tree):
            tree.set_payload(str(view[headed:], "ascii", "surrogateescape"))
            return tree
    return _fed(view)


def header_section(raw: bytes) -> Message:
    """The header fields of the message *raw*, read as :func:`message_tree` reads them, its body kept as text.

    All that is read of a message carried in a part (an attached message's summary, a report's
    returned headers): its body, which may hold any number of parts, is never parsed.
    """
    return BytesHeaderParser(policy=compat32).parsebytes(raw[: _header_end(raw) or len(raw)])


def _header_end(raw: bytes) -> int:
    """Where the first blank line of *raw* ends (CRLF or bare LF); 0 when there is none."""
    crlf = raw.find(b"\r\n\r\n")
    lf = raw.find(b"\n\n", 0, crlf if crlf >= 0 else len(raw))  # a bare LF blank line before it, if any
    return lf + 2 if lf >= 0 else crlf + 4 if crlf >= 0 else 0


def _fed(view: memoryview) -> Message:
    parser = BytesFeedParser()
    for start in range(0, len(view), _FEED_SLICE):
        parser.feed(bytes(view[start : start + _FEED_SLICE]))
    tree: Message = parser.close()
    return tree


@dataclass(slots=True)
class _Tally:
    """The body parts the walk has met and how deep the multiparts around the current one nest, against
    the limits: recovered parts are counted before they are built (see the module's docstring)."""

    max_depth: int
    max_parts: int
    recoverable: int  # bytes that recovered multiparts may still parse again
    depth: int = 0
    parts: int = 0

    def check(self, more: Shape) -> None:
        """BeyondLimits if *more* parts, nested *more.depth* deeper than the current one, would pass a limit."""
        refusal = Shape(self.depth + more.depth, self.parts + more.parts).refusal(self.max_depth, self.max_parts)
        if refusal is not None:
            raise BeyondLimits(refusal)

    def count(self, more: Shape) -> None:
        self.check(more)
        self.parts += more.parts


def walk(message: Message, max_depth: int, max_parts: int, size: int) -> Walked:
    """What *message* (of *size* bytes) holds; BeyondLimits when the parts its walk builds nest deeper
    than *max_depth* or number more than *max_parts*, with the whole message's."""
    found = Walked()
    _visit(message, found, _Tally(max_depth, max_parts, recoverable=2 * size + _RECOVERABLE_ANYWAY))
    if not found.texts and not found.htmls and found.named_texts:
        # Named text parts and nothing else (some mailers name every part): they are the text
        # as well as files, rather than a message whose text is empty.
        found.texts = found.named_texts
        found.defects.append("body: no unnamed text part; text is the named text/plain part(s)")
    return found


def _visit(part: Message, found: Walked, tally: _Tally) -> None:
    ctype = part.get_content_type()
    if ctype == "message/delivery-status":
        _delivery_status(part, found)
    elif part.get_content_maintype() == "message" and _children(part):
        _attached_message(part, ctype, found)
    elif part.get_content_maintype() == "multipart":
        _multipart(part, ctype, found, tally)
    elif ctype == "text/rfc822-headers" and found.report_type is not None:
        found.original_headers = header_section(_payload(part) + b"\r\n")
    elif ctype in _BODY_TYPES and _is_body(part):
        text = _text(part, found)
        (found.texts if ctype == "text/plain" else found.htmls).append(text)
    else:
        found.attachments.append(_attachment(part, ctype, _payload(part)))
        if ctype == "text/plain" and part.get_content_disposition() != "attachment":
            found.named_texts.append(_text(part, found))


def _attached_message(part: Message, ctype: str, found: Walked) -> None:
    """An attached message: one attachment of its bytes, never walked into. message/partial and
    message/external-body are kept the same way, without a summary."""
    content = _wire_bytes(_children(part)[0])
    encoding = str(part.get("content-transfer-encoding", "")).strip().lower()
    if encoding in ("base64", "quoted-printable"):
        # Not allowed on message/* (RFC 2046 5.2.1), but sent: the stdlib parsed the encoded
        # text as if it were the message. Decoded, it is.
        found.defects.append(f"body: an attached {ctype} in {encoding}, decoded")
        content = _transfer_decoded(content, encoding)
    found.attachments.append(_attachment(part, ctype, content))
    if ctype in _ATTACHED_MESSAGE:
        found.attached.append(
            header_section(content) if encoding in ("base64", "quoted-printable") else _children(part)[0]
        )


def _wire_bytes(message: Message) -> bytes:
    """*message* (a part of a parsed tree) as bytes, CRLF line ends, as it came where the stdlib cannot write it."""
    try:
        return message.as_bytes(policy=_WIRE)
    except (UnicodeEncodeError, HeaderParseError):
        out = BytesIO()
        _AsItCame(out, mangle_from_=False, policy=_WIRE).flatten(message)
        return out.getvalue()


class _AsItCame(BytesGenerator):
    """The stdlib's generator, writing as they came the two things it fails on in hostile mail.

    A header value holding a line that looks like a header of its own: the stdlib refolds
    every value and refuses that one. A multipart whose boundary never came (its body one
    string): the stdlib reads that body back through ``get_payload()``, which makes U+FFFD
    of its 8-bit bytes, and then cannot write them. Either failed the whole message's parse.
    (Both hooks are the generator's own, private: typeshed leaves them out.)
    """

    def _write_headers(self, msg: Message) -> None:
        for name, value in msg.raw_items():
            self.write(f"{name}: {value}\r\n")  # the value's own folding, its 8-bit bytes as they came
        self.write("\r\n")

    def _handle_multipart(self, msg: Message) -> None:
        body = _parsed_body(msg)
        if isinstance(body, str):
            self.write(body)
        else:
            super()._handle_multipart(msg)  # type: ignore[misc]


def _transfer_decoded(content: bytes, encoding: str) -> bytes:
    holder = Message()
    holder["Content-Transfer-Encoding"] = encoding
    holder.set_payload(content.decode("ascii", "surrogateescape"))
    return _payload(holder)


def _multipart(part: Message, ctype: str, found: Walked, tally: _Tally) -> None:
    if not part.is_multipart():
        _unsplit(part, found, tally)
        return
    children = _children(part)
    tally.count(Shape(1 if children else 0, len(children)))
    tally.depth += 1
    try:
        if ctype == "multipart/alternative":
            _alternative(children, found, tally)
            return
        if ctype == "multipart/report":
            found.report_type = charsets.json_safe(part.get_param("report-type", "", header="content-type")).lower()
        for child in children:
            _visit(child, found, tally)
    finally:
        tally.depth -= 1


def _alternative(children: list[Message], found: Walked, tally: _Tally) -> None:
    """One content several ways: the first alternative's text and the first's HTML; every file kept."""
    choices = []
    for child in children:
        choice = Walked(report_type=found.report_type)
        _visit(child, choice, tally)
        choices.append(choice)
        found.absorb(choice, bodies=False)
    found.texts += next((c.texts for c in choices if c.texts), [])
    found.htmls += next((c.htmls for c in choices if c.htmls), [])


def _children(part: Message) -> list[Message]:
    """The parts of a multipart, the message of a message/rfc822, the blocks of a delivery status."""
    payload = _parsed_body(part)
    return [child for child in payload if isinstance(child, Message)] if isinstance(payload, list) else []


def _is_body(part: Message) -> bool:
    disposition = part.get_content_disposition()
    if disposition == "attachment":
        return False
    return disposition == "inline" or not part.get_filename()


def _delivery_status(part: Message, found: Walked) -> None:
    """RFC 3464: one block of per-message fields, then one block per recipient. A "delivery status"
    with none of its fields is a notice in words under the wrong type: it is text."""
    blocks = _children(part)
    if not any(field in block for block in blocks for field in _STATUS_FIELDS):
        found.defects.append("report: a message/delivery-status without status fields, read as text")
        found.texts.append(_text(_as_text(part), found))
        return
    found.reporting_mta = _typed(blocks[0], "reporting-mta")
    for block in blocks[1:]:
        found.recipients.append(
            ReportRecipient(
                action=_typed(block, "action", typed=False),
                status=_typed(block, "status", typed=False),
                final_recipient=_typed(block, "final-recipient"),
                original_recipient=_typed(block, "original-recipient"),
                diagnostic_code=_typed(block, "diagnostic-code"),
                remote_mta=_typed(block, "remote-mta"),
            )
        )


def _as_text(part: Message) -> Message:
    """A part whose payload the stdlib parsed into header blocks, as the text/plain part it was written as."""
    text = Message()
    text.set_payload(b"\r\n".join(_wire_bytes(block) for block in _children(part)).decode("ascii", "surrogateescape"))
    return text


def _typed(block: Message, name: str, *, typed: bool = True) -> str | None:
    """A delivery-status field, unfolded, without its ``type;`` prefix; None when absent."""
    value = block.get(name)
    if value is None:
        return None
    text = " ".join(charsets.json_safe(str(value)).split())
    if typed and ";" in text:
        text = text.split(";", 1)[1].strip()
    return (text.lower() if name == "action" else text) or None


def _unsplit(part: Message, found: Walked, tally: _Tally) -> None:
    """A multipart whose declared boundary never came: its body is one string."""
    body = _parsed_body(part)
    if not isinstance(body, str) or not body.strip():
        return  # an empty multipart (an empty alternative, say) holds nothing to show
    recovered = _recover(body, found, tally)
    if recovered is not None:
        found.defects.append(
            f"body: the {part.get_content_type()} boundary never came; parts found under {recovered.get_boundary()!r}"
        )
        _visit(recovered, found, tally)
    elif _MIME_HEADER.search(body):
        found.defects.append("body: MIME parts without a usable boundary; kept as one attachment, not as text")
        found.attachments.append(_attachment(part, "application/octet-stream", _payload(part)))
    else:
        found.defects.append("body: no text/plain or text/html part; text is the body of a multipart without parts")
        found.texts.append(_text(part, found))


def _recover(body: str, found: Walked, tally: _Tally) -> Message | None:
    """The body walked again under the first delimiter line it holds, when that gives parts.

    Its parts are no declared boundary's, so the shape scan could not count them: the body is
    scanned as that scan does, and the tree is built only if its parts are within the limits with
    those met so far (the walk counts them as it meets them).
    """
    delimiter = _DELIMITER.search(body)
    if delimiter is None:
        return None
    if len(body) > tally.recoverable:
        found.defects.append("body: multiparts without their boundaries, nested past what recovery parses again")
        return None
    tally.recoverable -= len(body)
    head = f'Content-Type: multipart/mixed; boundary="{delimiter.group(1)}"\r\n\r\n'
    source = head.encode("ascii") + _raw(body)
    tally.check(mime_shape(source, tally.max_depth - tally.depth, tally.max_parts - tally.parts))
    tree = message_tree(source)
    return tree if tree.is_multipart() and tree.get_payload() else None


def _attachment(part: Message, content_type: str, content: bytes) -> Attachment:
    raw_cid = charsets.json_safe(part.get("content-id", "")).strip()
    disposition = part.get_content_disposition()
    inline = disposition == "inline" or (disposition is None and bool(raw_cid))
    return Attachment(
        filename=_filename(part),
        content_type=content_type if _MIME_TYPE.fullmatch(content_type) else "application/octet-stream",
        size=len(content),
        content_id=raw_cid.strip("<>").strip() or None,
        disposition="inline" if inline else "attachment",
        content=content,
    )


def _filename(part: Message) -> str | None:
    """The file name (RFC 2231 by the stdlib; RFC 2047 words and raw 8-bit bytes too, as mail clients read them)."""
    name = part.get_filename()
    if name and "\ufffd" in name:
        name = _eight_bit_view(part).get_filename() or name
    if name and "=?" in name:
        try:
            words = decode_words(name)  # email.header.decode_header's reading, in linear time
        except HeaderParseError:  # broken base64 in a word: the name as it came
            words = [(name, None)]
        name = "".join(charsets.decode(w, c)[0] if isinstance(w, bytes) else w for w, c in words)
    if not name:
        return None
    return charsets.json_safe(name).strip() or None


def _eight_bit_view(part: Message) -> Message:
    """The part's Content-Type and Content-Disposition with raw 8-bit bytes read as text: UTF-8
    (RFC 6532), else the part's charset. (The stdlib replaces them with U+FFFD in parameters.)"""
    view = Message()
    for key, value in part.raw_items():
        if key.lower() in ("content-type", "content-disposition"):
            data = _raw(str(value))
            try:
                view[key] = data.decode("utf-8")
            except UnicodeDecodeError:
                view[key] = charsets.decode(data, part.get_content_charset())[0]
    return view


def _payload(part: Message) -> bytes:
    """The part's content with its transfer encoding removed (leniently, as mail clients do)."""
    content = part.get_payload(decode=True)
    return content if isinstance(content, bytes) else b""


def _text(part: Message, found: Walked) -> str:
    label = part.get_param("charset", None, header="content-type")
    text, note = charsets.decode(_payload(part), label if isinstance(label, str) else None)
    if note:
        found.defects.append(f"body: {note}")
    return charsets.json_safe(text).replace("\r\n", "\n")


def _parsed_body(part: Message) -> Any:
    """The payload as the parser left it: a list of parts, or text holding 8-bit bytes as surrogates.

    ``get_payload()`` would decode those bytes again by the part's charset label, into U+FFFD with
    ``errors="replace"`` (their bytes lost), or raise ValueError when the label holds a NUL. The
    attribute is the stdlib's own, private one: typeshed leaves it out.
    """
    return part._payload  # type: ignore[attr-defined]


def _raw(text: str) -> bytes:
    """A payload the stdlib keeps as text (8-bit bytes as surrogates) back as its bytes."""
    return text.encode("utf-8", "surrogateescape")

"""What every payload format reads: the normalised message (``Source``) and the pieces two formats share.

A format module maps fields and nothing else; anything it would otherwise
compute for itself (an address list written out as a header value, the header
section as received, a form-data body) lives here once, so two formats that
show the same thing show it the same way.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import formataddr, getaddresses

import orjson

from ...config import StreamSettings
from ...envelope import Envelope, Recipient
from ..headers import decode
from ..job import Rendered
from ..parse import Address, ParsedMessage
from ..screen import Decision

FORM_URLENCODED = "application/x-www-form-urlencoded"
# orjson writes a payload about twenty times faster than the stdlib (3 against 58 us for a 10 KiB
# message's), but it cannot answer running out of memory: under the parse worker's address-space
# limit it crashed the worker (SIGSEGV) writing a 21 MB message's body, where the stdlib raises
# MemoryError, an answer. Below this size (Source.size) a payload is a few MiB at most, and the
# limit's fixed part alone is at least 64 MiB (processing.parse_memory_limit).
ORJSON_BELOW = 1024 * 1024
# (field name, text) or (field name, (file name, content, content type)), in the order they are sent.
FormField = tuple[str, str | bytes] | tuple[str, tuple[str, bytes, str]]
# What str.splitlines ends a line at: a header value holding one (decoded from an encoded word)
# makes the receiver's header parser raise (Django, django-anymail) or read another header.
_LINE_BREAKS = re.compile(r"\r\n|[\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029]")
# What a form part's filename="..." cannot hold as it is: urllib3 escapes only '"', CR and LF (as %22,
# %0D, %0A, as browsers do), so a trailing backslash escaped our closing quote (Werkzeug read the file
# as a text field) and a literal "%22" was read back as '"'; a control character is refused or dropped
# by some readers. Any other "%" is read as it is ("100% off.pdf").
_NOT_IN_A_FORM_FILE_NAME = re.compile(r'[\\"\x00-\x1f\x7f]|%(?=22|0[AaDd])')
# Headers whose value is an address list (RFC 5322 3.6.2, 3.6.3, 3.6.6).
_ADDRESS_HEADERS = frozenset(
    {"from", "sender", "reply-to", "to", "cc", "bcc"}
    | {f"resent-{name}" for name in ("from", "sender", "to", "cc", "bcc")}
)


def json_body(payload: dict[str, object], size: int) -> bytes:
    """*payload* as ``json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()`` writes it.

    *size*: what the payload is made of, about (:attr:`Source.size`).
    """
    if size < ORJSON_BELOW:
        try:
            return orjson.dumps(payload)
        except TypeError:  # what orjson refuses (a lone surrogate, a huge int): the stdlib's answer, whatever it is
            pass
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class Source:
    """Everything a format may show about one message for one stream."""

    parsed: ParsedMessage
    envelope: Envelope
    stream: StreamSettings
    delivery_id: str
    raw: bytes  # the message exactly as the SMTP edge accepted it
    decision: Decision | None = None  # the stream's screening: verdicts, spam score, our trace headers

    @property
    def headers(self) -> list[tuple[str, str]]:
        """The top-level headers as we deliver them: our trace headers first, forged ones left out (screen.py)."""
        return self.decision.trace_headers(self.parsed.headers) if self.decision else list(self.parsed.headers)

    def header_fields(self) -> list[tuple[str, str]]:
        """:attr:`headers` as values a header parser reads back (a provider's ``Headers``, ``message-headers``).

        Decoded, as Mailgun and Postmark send them ("transcoded to UTF-8", django-anymail says of
        Mailgun's), with two exceptions: a line break decoded from an encoded word is a space, and an
        address header is read from the field as received and written back as :func:`address_line`
        writes one: decoded and left so, ``=?utf-8?q?M=C3=BCller=2C_Zo=C3=AB?= <z@x>`` reads as two
        addresses, ``Müller`` and ``Zoë <z@x>``.
        """
        raw: dict[str, deque[str]] = {}  # taken in order, from the front: a deque, so 40,000 To fields stay linear
        for name, value in _raw_fields(self.header_section()):
            if name.lower() in _ADDRESS_HEADERS:
                raw.setdefault(name.lower(), deque()).append(value)
        return [
            (name, _address_value(raw[name.lower()].popleft()) if raw.get(name.lower()) else header_value(value))
            for name, value in self.headers
        ]

    @property
    def size(self) -> int:
        """The message's length and its text's, twice (whole and reply-stripped): what a payload is made
        of. The text can be the larger: an HTML-only message's is its layout, up to four times its HTML
        (htmltext.py), and one of 115 kB laid out at 20 MB crashed orjson (see ORJSON_BELOW)."""
        return len(self.raw) + 2 * len(self.parsed.text or "")

    @property
    def delivered(self) -> bytes:
        """The message as we deliver it: ``raw`` with our trace headers on top and forged ones left out.

        As an MTA adds its ``Received:``; every byte of the message itself is as accepted.
        """
        return self.decision.trace_raw(self.raw) if self.decision else self.raw

    @property
    def recipients(self) -> tuple[Recipient, ...]:
        """This stream's RCPT TO addresses only: one customer never learns another's (Bcc stays Bcc)."""
        recipients = self.envelope.recipients_of(self.stream.name)
        if not recipients:
            raise ValueError(f"stream {self.stream.name!r} has no recipient in the envelope of {self.delivery_id}")
        return recipients

    @property
    def received_timestamp(self) -> int:
        """When DATA completed, in Unix seconds (the providers' ``timestamp``)."""
        return int(datetime.fromisoformat(self.envelope.received_at).timestamp())

    @property
    def sender_ip(self) -> str:
        """The connecting client's address without its port (``[::1]:25`` and ``192.0.2.1:25`` alike)."""
        host = self.envelope.client_address.rpartition(":")[0] or self.envelope.client_address
        return host.strip("[]")

    def header_section(self) -> bytes:
        """The top-level header section as delivered (our trace headers and ``Received:`` on top), CRLFs kept."""
        delivered = self.delivered
        end = delivered.find(b"\r\n\r\n")
        return delivered[: end + 2] if end >= 0 else delivered


def header_value(value: str) -> str:
    """*value* on one line: each line break in it (decoded from an encoded word, or folding) a space."""
    return _LINE_BREAKS.sub(" ", value)


def _address_value(raw: str) -> str:
    """An address header's *raw* value written back by :func:`address_line`; as it came (its encoded words
    undecoded) when it holds something that is not an address (a group, a bare word) or nests too deep."""
    try:
        pairs = getaddresses([raw])
    except RecursionError:
        return raw
    if not pairs or not all(email for _, email in pairs):
        return raw
    names = [header_value(decode("display-name", name)[0] if "=?" in name else name) for name, _ in pairs]
    return address_line([Address(name, email) for name, (_, email) in zip(names, pairs, strict=True)])


def _raw_fields(section: bytes) -> list[tuple[str, str]]:
    """The (name, value) of each field of a header *section*, unfolded, the value's encoded words as they are."""
    fields: list[bytes] = []
    for line in section.splitlines(keepends=True):
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1] += line
        elif line.strip():
            fields.append(line)
    named = (field.decode("utf-8", "replace").partition(":") for field in fields)
    return [(name.strip(), " ".join(value.split())) for name, colon, value in named if colon]


def dropped_field(parsed: ParsedMessage, name: str) -> list[FormField]:
    """The attachments the stream's policy left out (attachpolicy.py), as one JSON form field *name*
    [{filename, content_type, size, reason}]; no field when none was (the body is then the provider's)."""
    if not parsed.dropped_attachments:
        return []
    dropped = [
        {"filename": a.filename, "content_type": a.content_type, "size": a.size, "reason": a.reason}
        for a in parsed.dropped_attachments
    ]
    return [(name, json.dumps(dropped, ensure_ascii=False))]


def address_line(addresses: Sequence[Address]) -> str:
    """Addresses written back as one header value: ``"Name" <a@x>, b@y``."""
    return ", ".join(_mailbox(a) for a in addresses)


# formataddr refuses an address that is not ASCII, which RFC 6532 mail has (``märy@exämple.net``);
# how it writes the name (quoted, or an encoded word) does not depend on the address.
_ASCII_STAND_IN = "a@a"


def _mailbox(address: Address) -> str:
    if address.email.isascii():
        return formataddr((address.name, address.email))
    if not address.name:
        return address.email
    name = formataddr((address.name, _ASCII_STAND_IN)).removesuffix(f" <{_ASCII_STAND_IN}>")
    return f"{name} <{address.email}>"


def mailbox_hash(address: str) -> str:
    """The part of the local part after ``+`` (``help+T42@x`` -> ``T42``); "" when there is none."""
    local = address.rpartition("@")[0]
    return local.partition("+")[2]


def form_data(delivery_id: str, fields: Sequence[FormField]) -> Rendered:
    """A ``multipart/form-data`` body, byte-identical every time it is built from the same record.

    The boundary is derived from the delivery id instead of drawn at random,
    so a redelivery (or a rebuild from the bus) carries the same bytes and the
    same signature. Field contents are sender-written, so a boundary that
    occurs in one of them is skipped for the next derived one.
    """
    contents = [content.encode() if isinstance(content, str) else content for content in map(_content, fields)]
    for n in range(1000):
        boundary = hashlib.sha256(f"{delivery_id}/{n}".encode()).hexdigest()[:40]
        if not any(boundary.encode() in content for content in contents):
            break
    else:  # 1000 derived boundaries all in the message: a deliberate collision; Failed beats a body read wrongly
        raise ValueError("no multipart boundary that the message does not contain")
    # Imported here: only streams in the form-posting formats need it, and urllib3 (with its
    # HTTP client) is 2 MiB of the parse worker's memory.
    from urllib3 import encode_multipart_formdata

    body, content_type = encode_multipart_formdata([_safe_file_name(f) for f in fields], boundary=boundary)
    return Rendered(content_type, body)


def _safe_file_name(field: FormField) -> FormField:
    """*field* with its file name, if it has one, as every form reader reads it back: each character
    that the part header would have to escape is "_" (the exact name is in the format's JSON fields)."""
    name, value = field
    if not isinstance(value, tuple):
        return field
    filename, content, content_type = value
    return name, (_NOT_IN_A_FORM_FILE_NAME.sub("_", filename), content, content_type)


def _content(field: FormField) -> str | bytes:
    """A field's content: a file's bytes or a text. (File names cannot hold a line break: see _safe_file_name.)"""
    value = field[1]
    return value[1] if isinstance(value, tuple) else value

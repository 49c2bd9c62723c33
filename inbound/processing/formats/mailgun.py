"""The ``mailgun`` format: the POST of a Mailgun route's ``forward()`` action.

As Mailgun does, the body is ``multipart/form-data`` when the message has an
attachment and ``application/x-www-form-urlencoded`` when it has none.

Reference: https://documentation.mailgun.com/docs/mailgun/user-manual/receive-forward-store/
and the inbound handler of django-anymail (``anymail/webhooks/mailgun.py``),
which the tests feed our POST to. The receiver checks
``signature = hex(HMAC-SHA256(key=mailgun_signing_key, timestamp + token))``
as it would Mailgun's. Where Mailgun's value has no counterpart here:

* ``token`` is derived from the delivery id with the signing key (Mailgun's
  is random): unguessable, and the same on every attempt, so a receiver that
  keeps tokens to drop replays also drops our retries of one delivery.
* ``timestamp`` is when our SMTP server accepted the message, so a body
  rebuilt later is the same bytes.
* ``recipient`` is this stream's RCPT TO addresses, comma-separated (one,
  as from Mailgun, unless several of the stream's addresses got the message).
* ``stripped-text`` and ``stripped-signature`` come from ``reply.strip_reply``: the
  signature is what follows an RFC 3676 ``-- `` line in the reply, or a "Sent from my
  iPhone" footer; ``stripped-html`` is the HTML unchanged (quotes are not removed from HTML).
* An attachment without a file name is sent as ``attachment-N``: form parsers
  (Django's among them) drop file fields whose name is empty.
* ``body-mime`` (Mailgun's "raw MIME" variant) is added with ``include_raw``.
* Verdicts are in ``message-headers``: our ``Authentication-Results`` and
  ``X-Spam-Status`` first (Mailgun's own ``X-Mailgun-*`` checks are not imitated).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from urllib.parse import urlencode

from ..job import Rendered
from ..reply import strip_reply
from ._shared import (
    FORM_URLENCODED,
    FormField,
    Source,
    address_line,
    dropped_field,
    form_data,
)


def render(source: Source) -> Rendered:
    parsed = source.parsed
    key = (source.stream.mailgun_signing_key or "").encode()
    timestamp = str(source.received_timestamp)
    token = hmac.new(key, source.delivery_id.encode(), hashlib.sha256).hexdigest()[:50]
    text, html = parsed.text or "", parsed.html or ""
    reply = strip_reply(text)
    files = [f"attachment-{n}" for n in range(1, len(parsed.attachments) + 1)]
    inline = list(zip(files, parsed.attachments, strict=True))
    fields: list[FormField] = [
        ("recipient", ", ".join(r.address for r in source.recipients)),
        ("sender", source.envelope.mail_from),
        ("from", address_line([parsed.from_]) if parsed.from_ else ""),
        ("subject", parsed.subject or ""),
        ("body-plain", text),
        ("stripped-text", reply.text),
        ("stripped-signature", reply.signature),
        ("body-html", html),
        ("stripped-html", html),
        ("attachment-count", str(len(parsed.attachments))),
        ("timestamp", timestamp),
        ("token", token),
        ("signature", hmac.new(key, (timestamp + token).encode(), hashlib.sha256).hexdigest()),
        ("message-headers", json.dumps([[name, value] for name, value in source.header_fields()], ensure_ascii=False)),
        ("content-id-map", _object([(f"<{a.content_id}>", f) for f, a in inline if a.content_id])),
    ]
    fields += dropped_field(parsed, "dropped-attachments")
    if source.stream.include_raw:
        fields.append(("body-mime", source.delivered))
    if not parsed.attachments:
        return Rendered(FORM_URLENCODED, urlencode(fields).encode("ascii"))
    fields += [
        (file, (a.filename or file, a.content, a.content_type))
        for file, a in zip(files, parsed.attachments, strict=True)
    ]
    return form_data(source.delivery_id, fields)


def _object(pairs: list[tuple[str, str]]) -> str:
    """A JSON object of *pairs* in order, a repeated key repeated: two parts sharing a Content-ID are
    both in Mailgun's content-id-map, which django-anymail reads pair by pair (a dict kept the last)."""
    return "{" + ", ".join(f"{json.dumps(key)}: {json.dumps(value)}" for key, value in pairs) + "}"

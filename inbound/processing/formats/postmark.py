"""The ``postmark`` format: Postmark's inbound webhook JSON, field for field (``schemas/postmark-inbound.schema.json``).

Reference: https://postmarkapp.com/developer/webhooks/inbound-webhook and the
inbound handler of django-anymail (``anymail/webhooks/postmark.py``), which the
tests feed our POST to. Where Postmark's own value has no counterpart here:

* ``MessageID`` is Postmark's id for the delivery, not the Message-ID header
  (which is in ``Headers``): here it is our delivery id, the ``webhook-id``.
* ``Headers`` leaves out what has a field of its own (From, To, Cc, Bcc,
  Subject, Date, Reply-To) and starts with ``Return-Path`` holding the
  envelope sender, as Postmark's does.
* ``BccFull`` lists this stream's envelope recipients that neither To nor Cc
  shows: how Postmark reports a message that reached it as a Bcc.
* ``Tag`` is always "" (Postmark's is set by its own inbound rules).
* Verdicts are in ``Headers`` after ``Return-Path``, as Postmark writes its
  own: our ``Authentication-Results``, ``X-Spam-Status`` (``Yes``/``No``),
  ``X-Spam-Score``, ``X-Spam-Tests`` and ``Received-SPF`` (when ``[auth]`` /
  ``[spam]`` are on). ``RawEmail`` has our trace headers in SpamAssassin's form.
* ``RawEmail`` (only with ``include_raw``) is text, as Postmark sends it:
  bytes that are not UTF-8 become U+FFFD. The ``inbound`` format's ``raw`` is exact.
* Empty values are "" and [] (never null), as Postmark sends them; an
  attachment has ``ContentID`` only when the part has one.
"""

from __future__ import annotations

import base64
from typing import Any

from ..job import Rendered
from ..parse import Address, Attachment
from ..reply import strip_reply
from ._shared import Source, address_line, header_value, json_body, mailbox_hash

CONTENT_TYPE = "application/json"
# Headers Postmark gives a field of their own and leaves out of ``Headers``.
_OWN_FIELD = frozenset({"from", "to", "cc", "bcc", "subject", "date", "reply-to"})


def render(source: Source) -> Rendered:
    parsed = source.parsed
    recipients = source.recipients
    shown = {a.email.lower() for a in (*parsed.to, *parsed.cc)}
    bcc = [Address("", r.address) for r in recipients if r.address.lower() not in shown]
    payload: dict[str, Any] = {
        "FromName": parsed.from_.name if parsed.from_ else "",
        "MessageStream": source.stream.name,
        "From": parsed.from_.email if parsed.from_ else "",
        "FromFull": _full(parsed.from_ or Address("", "")),
        "To": address_line(parsed.to),
        "ToFull": [_full(a) for a in parsed.to],
        "Cc": address_line(parsed.cc),
        "CcFull": [_full(a) for a in parsed.cc],
        "Bcc": address_line(bcc),
        "BccFull": [_full(a) for a in bcc],
        "OriginalRecipient": recipients[0].address,
        "ReplyTo": address_line(parsed.reply_to),
        "Subject": header_value(parsed.subject or ""),
        "MessageID": source.delivery_id,
        "Date": parsed.header("date") or "",
        "MailboxHash": recipients[0].mailbox_hash or "",
        "TextBody": parsed.text or "",
        "HtmlBody": parsed.html or "",
        "StrippedTextReply": strip_reply(parsed.text or "").text,
        "Tag": "",
        "Headers": [{"Name": "Return-Path", "Value": f"<{source.envelope.mail_from}>"}]
        + _verdict_headers(source)
        + [
            {"Name": name, "Value": value}
            for name, value in source.header_fields()[len(_ours(source)) :]  # the message's own: ours come first
            if name.lower() not in _OWN_FIELD
        ],
        "Attachments": [_attachment(a) for a in parsed.attachments],
    }
    if parsed.dropped_attachments:  # not Postmark's: what this stream's attachment policy left out
        payload["DroppedAttachments"] = [
            {"Name": a.filename or "", "ContentType": a.content_type, "ContentLength": a.size, "Reason": a.reason}
            for a in parsed.dropped_attachments
        ]
    if source.stream.include_raw:
        payload["RawEmail"] = source.delivered.decode("utf-8", "replace")
    return Rendered(CONTENT_TYPE, json_body(payload, source.size))


def _ours(source: Source) -> tuple[tuple[str, str], ...]:
    return source.decision.headers if source.decision else ()


def _verdict_headers(source: Source) -> list[dict[str, str]]:
    """Our trace headers as Postmark writes its own: ``X-Spam-Status`` Yes/No with the score and tests apart."""
    headers = []
    for name, value in _ours(source):
        if name.lower() == "x-spam-status" and source.decision and source.decision.spam:
            spam = source.decision.spam
            headers.append({"Name": name, "Value": "Yes" if spam["is_spam"] else "No"})
            headers.append({"Name": "X-Spam-Score", "Value": f"{spam['score']:.1f}"})
            headers.append({"Name": "X-Spam-Tests", "Value": ",".join(spam["rules"])})
        else:
            headers.append({"Name": name, "Value": value})
    if source.decision and source.decision.auth:
        spf = source.decision.auth["spf"]
        headers.append({"Name": "Received-SPF", "Value": f"{spf['result']} (domain of {spf['domain']})"})
    return headers


def _full(address: Address) -> dict[str, str]:
    return {"Email": address.email, "Name": address.name, "MailboxHash": mailbox_hash(address.email)}


def _attachment(attachment: Attachment) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "Name": attachment.filename or "",
        "Content": base64.b64encode(attachment.content).decode("ascii"),
        "ContentType": attachment.content_type,
        "ContentLength": attachment.size,
    }
    if attachment.content_id:
        fields["ContentID"] = attachment.content_id
    return fields

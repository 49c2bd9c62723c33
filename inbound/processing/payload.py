"""Payload: one ``ParsedMessage`` + its envelope -> the webhook JSON for one stream.

Stage: the field mapping of the ``inbound`` payload format, called through
``processing/formats/inbound.py`` once per stream a message is addressed to,
after ``parse_message``. The result is serialised as the value of a
``messages`` record and POSTed, unchanged, by the deliverer.

Input: the parsed message, the SMTP envelope, the stream name and the
delivery id (``<queue_id>-<stream>``, also sent as the ``webhook-id``
header). Output: a dict of JSON types only, valid against
``schemas/inbound-message.schema.json`` (the contract with webhook
consumers: change both together). Keys are snake_case.

Per stream, not per message: a message to two streams is two payloads, and
each carries only *its* stream's RCPT TO addresses, so one customer's webhook
never learns the other recipients of the SMTP transaction (Bcc stays Bcc).

Failure behaviour: building is pure and deterministic, so a record processed
twice gives the same bytes twice. The only error is ``ValueError`` for a
stream with no recipient in the envelope, which is a caller bug.

``stripped_text`` is the reply without quoted history or signature
(reply.py, mail-parser-reply's headers in every language it knows).
"""

from __future__ import annotations

import base64
from typing import Any

from ..envelope import Envelope
from .parse import Address, AttachedMessage, Attachment, DroppedAttachment, ParsedMessage, Report
from .reply import strip_reply
from .screen import Decision


def build_payload(
    parsed: ParsedMessage, *, envelope: Envelope, stream: str, delivery_id: str, decision: Decision | None = None
) -> dict[str, Any]:
    """The webhook payload of ``parsed`` for ``stream``; see the schema for every key.

    *decision* is the stream's screening (screen.py): the ``auth``, ``spam`` and
    ``flags`` keys, and our trace headers first among ``headers``.
    """
    recipients = envelope.recipients_of(stream)
    if not recipients:
        raise ValueError(f"stream {stream!r} has no recipient in the envelope of {envelope.queue_id}")
    first = recipients[0]
    headers = decision.trace_headers(parsed.headers) if decision else parsed.headers
    return {
        "id": delivery_id,
        "queue_id": envelope.queue_id,
        "stream": stream,
        "received_at": envelope.received_at,
        "envelope": {
            "mail_from": envelope.mail_from,
            "rcpt_to": [r.address for r in recipients],
            "client_address": envelope.client_address,
            "helo": envelope.helo,
            "tls": envelope.tls,
        },
        "mailbox_hash": first.mailbox_hash,
        "original_recipient": first.address,
        "message_id": parsed.message_id,
        "date": parsed.date,
        "subject": parsed.subject,
        "from": _address(parsed.from_) if parsed.from_ else None,
        "to": [_address(a) for a in parsed.to],
        "cc": [_address(a) for a in parsed.cc],
        "reply_to": [_address(a) for a in parsed.reply_to],
        "text": parsed.text,
        "html": parsed.html,
        "stripped_text": strip_reply(parsed.text).text if parsed.text is not None else None,
        "headers": [{"name": name, "value": value} for name, value in headers],
        "attachments": [_attachment(a) for a in parsed.attachments],
        "dropped_attachments": [_dropped(a) for a in parsed.dropped_attachments],
        "attached_messages": [_attached_message(m) for m in parsed.attached_messages],
        "report": _report(parsed.report) if parsed.report else None,
        "defects": list(parsed.defects),
        "auth": decision.auth if decision else None,
        "spam": decision.spam if decision else None,
        "flags": list(decision.flags) if decision else [],
    }


def _address(address: Address) -> dict[str, str]:
    return {"name": address.name, "email": address.email}


def _attachment(attachment: Attachment) -> dict[str, Any]:
    return {
        "filename": attachment.filename,
        "content_type": attachment.content_type,
        "size": attachment.size,
        "content_id": attachment.content_id,
        "disposition": attachment.disposition,
        "content": base64.b64encode(attachment.content).decode("ascii"),
    }


def _dropped(attachment: DroppedAttachment) -> dict[str, Any]:
    return {
        "filename": attachment.filename,
        "content_type": attachment.content_type,
        "size": attachment.size,
        "reason": attachment.reason,
    }


def _attached_message(message: AttachedMessage) -> dict[str, Any]:
    return {
        "subject": message.subject,
        "from": _address(message.from_) if message.from_ else None,
        "date": message.date,
        "message_id": message.message_id,
    }


def _report(report: Report) -> dict[str, Any]:
    return {
        "report_type": report.report_type,
        "reporting_mta": report.reporting_mta,
        "recipients": [
            {
                "action": r.action,
                "status": r.status,
                "final_recipient": r.final_recipient,
                "original_recipient": r.original_recipient,
                "diagnostic_code": r.diagnostic_code,
                "remote_mta": r.remote_mta,
            }
            for r in report.recipients
        ],
        "original_message_id": report.original_message_id,
        "original_subject": report.original_subject,
    }

"""The ``sendgrid`` format: SendGrid's Inbound Parse POST, ``multipart/form-data``, parsed or raw.

Reference: https://www.twilio.com/docs/sendgrid/for-developers/parsing-email/setting-up-the-inbound-parse-webhook
and the inbound handler of django-anymail (``anymail/webhooks/sendgrid.py``),
which the tests feed our POST to. With ``sendgrid_raw = true`` the whole
message is in ``email`` (SendGrid's "POST the raw, full MIME message") instead
of ``text``, ``html`` and the attachment files. Where SendGrid's value has no
counterpart here:

* ``dkim`` (``{@example.org : pass, ...}``, one entry per signature) and
  ``SPF`` carry our verdicts when ``[auth]`` is on, else "": an empty verdict is
  safer than one a receiver might trust.
* ``spam_score`` and ``spam_report`` (our ``X-Spam-Status`` value) are sent
  when spamd scored the message, and left out otherwise.
* ``headers`` and ``email`` are the bytes as received; every other text
  field is UTF-8, which ``charsets`` says for each of them.
* An attachment without a file name is sent as ``attachmentN``: form parsers
  (Django's among them) drop file fields whose name is empty.
"""

from __future__ import annotations

import json

from ..job import Rendered
from ._shared import FormField, Source, address_line, dropped_field, form_data

_TEXT_FIELDS = ("to", "from", "cc", "subject", "text", "html")


def render(source: Source) -> Rendered:
    parsed = source.parsed
    auth = source.decision.auth if source.decision else None
    common: list[FormField] = [
        ("dkim", "{" + ", ".join(f"@{d['domain']} : {d['result']}" for d in auth["dkim"]) + "}" if auth else ""),
        ("to", address_line(parsed.to)),
        ("from", address_line([parsed.from_]) if parsed.from_ else ""),
        ("cc", address_line(parsed.cc)),
        ("subject", parsed.subject or ""),
        ("sender_ip", source.sender_ip),
        ("envelope", json.dumps({"to": [r.address for r in source.recipients], "from": source.envelope.mail_from})),
        ("charsets", json.dumps(dict.fromkeys(_TEXT_FIELDS, "UTF-8"))),
        ("SPF", auth["spf"]["result"] if auth else ""),
        *_spam_fields(source),
    ]
    if source.stream.sendgrid_raw:
        return form_data(source.delivery_id, [*common, ("email", source.delivered)])
    files = [f"attachment{n}" for n in range(1, len(parsed.attachments) + 1)]
    pairs = list(zip(files, parsed.attachments, strict=True))
    info = {
        file: {"filename": a.filename or file, "name": a.filename or file, "type": a.content_type}
        | ({"content-id": a.content_id} if a.content_id else {})
        for file, a in pairs
    }
    fields: list[FormField] = [
        ("headers", source.header_section()),
        *common,
        ("content-ids", json.dumps({a.content_id: file for file, a in pairs if a.content_id})),
        ("text", parsed.text or ""),
        ("html", parsed.html or ""),
        ("attachments", str(len(pairs))),
        ("attachment-info", json.dumps(info, ensure_ascii=False)),
        *dropped_field(parsed, "dropped_attachments"),
        *[(file, (a.filename or file, a.content, a.content_type)) for file, a in pairs],
    ]
    return form_data(source.delivery_id, fields)


def _spam_fields(source: Source) -> list[FormField]:
    spam = source.decision.spam if source.decision else None
    if spam is None or "score" not in spam:
        return []
    report = dict(source.decision.headers).get("X-Spam-Status", "") if source.decision else ""
    return [("spam_score", f"{spam['score']:.1f}"), ("spam_report", report)]

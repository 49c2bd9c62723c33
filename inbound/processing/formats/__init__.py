"""Formats: one normalised message for one stream -> the webhook body in the format the stream speaks.

Stage: called by the processor (``processing/process.py``) after parsing, once
per stream. Input: a :class:`Source` (the ``ParsedMessage``, the envelope,
the stream's settings, the delivery id and the message as received). Output:
a :class:`Rendered` body and its Content-Type, which the processor writes into
the ``messages`` record and the deliverer POSTs unchanged (signed with the
Standard Webhooks headers over exactly these bytes).

One module per format (``payload_format`` in a ``[[streams]]`` table), each
only mapping fields, the way django-anymail keeps one module per provider: a
customer moving from Postmark, Mailgun or SendGrid changes the URL it
receives at and nothing else.

Failure behaviour: rendering is pure and deterministic (multipart boundaries
are derived from the delivery id), so a record processed twice gives the same
bytes twice. An exception is that message's Failed record, decided by the processor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from ..attachpolicy import apply_attachment_policy
from ..job import Rendered
from . import inbound, mailgun, postmark, sendgrid
from ._shared import Source

__all__ = ["FORMATS", "Rendered", "Source", "render"]

FORMATS: dict[str, Callable[[Source], Rendered]] = {
    "inbound": inbound.render,
    "postmark": postmark.render,
    "mailgun": mailgun.render,
    "sendgrid": sendgrid.render,
}


def render(source: Source) -> Rendered:
    """The body of *source* in its stream's ``payload_format``, with the stream's attachment policy applied."""
    source = replace(source, parsed=apply_attachment_policy(source.parsed, source.stream))
    return FORMATS[source.stream.payload_format](source)

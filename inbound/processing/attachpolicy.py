"""Attachment policy: one stream's limits on attachments -> the message as that stream receives it.

Stage: applied by ``formats.render`` once per stream, after parsing and before any
format maps fields, so every format sees the same attachments and the same list
of what was left out.

Input: the ``ParsedMessage`` and the stream's ``max_attachment_size``,
``max_attachments`` and ``drop_attachment_types`` (``[[streams]]`` config). Output:
the message with the kept attachments, and each one left out in
``dropped_attachments`` with the config key that left it out: a customer's code
can tell "no attachment" from "an attachment we did not send you".

Why per stream and here: streams are different customers with different
endpoints (one takes 25 MB bodies, another only PDFs), while the message is
parsed once. Pure and deterministic: the same record gives the same payload.
"""

from __future__ import annotations

from dataclasses import replace

from ..config import StreamSettings
from .parse import Attachment, DroppedAttachment, ParsedMessage


def apply_attachment_policy(parsed: ParsedMessage, stream: StreamSettings) -> ParsedMessage:
    """*parsed* with the attachments *stream* does not take moved to ``dropped_attachments``.

    The checks run in this order: type, then size, then count (the first
    ``max_attachments`` of those left, in message order, are kept).
    """
    if not parsed.attachments or not _has_policy(stream):
        return parsed
    kept: list[Attachment] = []
    dropped: list[DroppedAttachment] = []
    for attachment in parsed.attachments:
        reason = _reason(attachment, stream, len(kept))
        if reason is None:
            kept.append(attachment)
        else:
            dropped.append(DroppedAttachment(attachment.filename, attachment.content_type, attachment.size, reason))
    return replace(parsed, attachments=tuple(kept), dropped_attachments=tuple(dropped))


def _has_policy(stream: StreamSettings) -> bool:
    return (
        stream.max_attachment_size is not None
        or stream.max_attachments is not None
        or bool(stream.drop_attachment_types)
    )


def _reason(attachment: Attachment, stream: StreamSettings, kept_so_far: int) -> str | None:
    """The config key that drops *attachment*, or None when it is kept."""
    if any(_matches(attachment, kind) for kind in stream.drop_attachment_types):
        return "drop_attachment_types"
    if stream.max_attachment_size is not None and attachment.size > stream.max_attachment_size:
        return "max_attachment_size"
    if stream.max_attachments is not None and kept_so_far >= stream.max_attachments:
        return "max_attachments"
    return None


def _matches(attachment: Attachment, kind: str) -> bool:
    """``.exe`` against the file name; ``image/*`` and ``image/png`` against the content type."""
    if kind.startswith("."):
        return (attachment.filename or "").lower().rstrip(". ").endswith(kind)
    if kind.endswith("/*"):
        return attachment.content_type.startswith(kind[:-1])
    return attachment.content_type == kind

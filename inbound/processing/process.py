"""Process: turn accepted mail into one webhook payload per stream, or a Blocked/Failed record.

Input: ``received`` records. Output, per stream the message is addressed to:
a ``messages`` record (key: stream, so a stream's messages stay in arrival
order; value: the webhook body in the stream's ``payload_format``, with its
content type, see ``processing/formats/``) and a
``processed`` event with the summary the activity log shows (sender, subject,
size, attachment count: after this stage the body is opaque), or a ``blocked`` event when the sender (envelope or From:)
matches the stream's ``block_senders`` or the stream's policy on the sender
verdicts and spam score says block (screen.py; the verdicts are computed once
per message, not per stream), or a ``failed`` event when the message
cannot be parsed. A bad message never stops the worker or the messages behind
it.

Idempotent: a record processed twice yields the same ``delivery_id`` twice,
which the deliverer's outbox and the activity store both keep once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from .. import metrics
from ..bus import Producer, Record
from ..clock import now_rfc3339
from ..config import StreamSettings
from ..envelope import Envelope
from ..events import Event, EventType, Summary, delivery_id
from ..records import (
    EVENTS,
    MESSAGES,
    Bypass,
    MessageRecord,
    decode_bypass,
    decode_received,
    event_record,
    message_record,
)
from ..routing import RoutingTable
from .formats import Source, render
from .parse import ParsedMessage, parse_message
from .screen import Screener, Screening, decide

log = logging.getLogger(__name__)


class Processor:
    def __init__(
        self,
        routing: RoutingTable,
        producer: Producer,
        streams: Sequence[StreamSettings],
        screener: Screener | None = None,
    ) -> None:
        self.routing = routing
        self.producer = producer
        self.streams = {s.name: s for s in streams}
        self.screener = screener

    def handle(self, records: list[Record]) -> None:
        for record in records:
            self.process(record)
        self.producer.flush()

    def process(self, record: Record) -> None:
        try:
            envelope, message = decode_received(record.value)
            bypass = decode_bypass(record)
        except (ValueError, KeyError, TypeError) as exc:
            # Without an envelope there is no stream to record it under; it stays on the bus,
            # and `inbound recover` / the logs are where an operator finds it.
            log.error("stage=process skipping unreadable received record at offset %d: %s", record.offset, exc)
            return
        parsed: ParsedMessage | None = None
        reason = ""
        try:
            parsed = parse_message(message)
        except Exception as exc:  # noqa: BLE001 -- any parser failure is this message's, not the worker's
            reason = f"cannot parse message: {exc}"
        screening = self.screener.screen(envelope, message) if self.screener and parsed else None
        if bypass is not None:
            self.route(envelope, message, bypass.stream, parsed, reason, bypass=bypass, screening=screening)
            return
        for stream in envelope.streams():
            self.route(envelope, message, stream, parsed, reason, screening=screening)

    def route(
        self,
        envelope: Envelope,
        raw: bytes,
        stream: str,
        parsed: ParsedMessage | None,
        reason: str,
        *,
        bypass: Bypass | None = None,
        screening: Screening | None = None,
    ) -> None:
        """One stream's outcome; a *bypass* (an operator's ``inbound bypass``) skips the block rules and policies."""
        did = delivery_id(envelope.queue_id, stream)
        generation = bypass.generation if bypass is not None else 0
        summary = Summary(
            envelope.received_at,
            (parsed.from_.email if parsed and parsed.from_ else "") or envelope.mail_from,
            tuple(r.address for r in envelope.recipients_of(stream)),
            parsed.subject if parsed else None,
            len(raw),
            len(parsed.attachments) if parsed else None,
        )

        def event(kind: EventType, why: str | None = None) -> None:
            ev = Event(kind, did, envelope.queue_id, stream, now_rfc3339(), generation, summary=summary, reason=why)
            key, value = event_record(ev)
            self.producer.send(EVENTS, value, key=key)
            metrics.PROCESSED.labels(stream, kind.value).inc()
            log.info(
                "queue_id=%s stream=%s stage=process %s%s",
                envelope.queue_id,
                stream,
                kind.value,
                f": {why}" if why else "",
            )

        if parsed is None:
            event(EventType.FAILED, reason)
            return
        senders = [envelope.mail_from] + ([parsed.from_.email] if parsed.from_ else [])
        blocked = next((s for s in senders if self.routing.is_blocked(stream, s)), None)
        if blocked is not None and bypass is None:
            event(EventType.BLOCKED, f"sender {blocked} is in block_senders")
            return
        settings = self.streams.get(stream)
        if settings is None:  # the stream was removed from the config after this message was accepted
            event(EventType.FAILED, f"stream {stream!r} is no longer configured")
            return
        decision = None
        if screening is not None and self.screener is not None:
            decision = decide(screening, settings, self.screener.hostname)
            if decision.block_reason and bypass is None:
                event(EventType.BLOCKED, decision.block_reason)
                return
        try:
            rendered = render(Source(parsed, envelope, settings, did, raw, decision))
        except Exception as exc:  # noqa: BLE001 -- as above: one bad message, recorded as Failed
            event(EventType.FAILED, f"cannot build payload: {exc}")
            return
        key, value, headers = message_record(
            MessageRecord(did, stream, generation, rendered.content_type, rendered.body)
        )
        self.producer.send(MESSAGES, value, key=key, headers=headers)
        event(EventType.PROCESSED)

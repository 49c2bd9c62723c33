"""Record: keep the activity store in step with the bus.

Input: ``messages`` records (each becomes a ``processed`` event carrying the
webhook body as opaque bytes: it is stored, never parsed) and ``events``
records (among them the processor's ``processed`` event with the summary the
activity log shows). Output: upserts into the activity store, in
one transaction per batch. Offsets are committed only after that transaction
-- if the store cannot be written (locked, disk error) the batch comes again
and nothing is dropped. The store's upserts are idempotent and monotonic, so
replays and the missing order between the two topics do no harm.
"""

from __future__ import annotations

import logging

from ..bus import Record
from ..clock import rfc3339
from ..events import STREAM_EVENTS, Event, EventType
from ..records import MESSAGES, decode_event, decode_message
from ._base import ActivityStore

log = logging.getLogger(__name__)


def message_event(record: Record) -> Event:
    """The ``processed`` event a ``messages`` record stands for: it carries the body, unread."""
    message = decode_message(record)
    return Event(
        EventType.PROCESSED,
        message.delivery_id,
        message.queue_id,
        message.stream,
        rfc3339(record.timestamp_ms / 1000),
        generation=message.generation,
        payload=message.body,
        payload_type=message.content_type,
    )


def to_event(record: Record) -> Event:
    return message_event(record) if record.topic == MESSAGES else decode_event(record.value)


class Recorder:
    def __init__(self, store: ActivityStore) -> None:
        self.store = store

    def handle(self, records: list[Record]) -> None:
        events = []
        for record in records:
            try:
                events.append(to_event(record))
            except (ValueError, KeyError, TypeError) as exc:
                # Not ours to fix and retrying cannot help; it stays on the bus for inspection.
                log.error(
                    "stage=record skipping unreadable %s record at offset %d: %s", record.topic, record.offset, exc
                )
        events = [e for e in events if e.type not in STREAM_EVENTS]  # alerts: no delivery to record
        self.store.apply(events)
        if log.isEnabledFor(logging.DEBUG):  # each stage logs its own outcome: at INFO this only repeated them
            for event in events:
                log.debug("delivery_id=%s stream=%s stage=record %s", event.delivery_id, event.stream, event.type.value)

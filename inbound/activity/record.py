"""Record: keep the activity store in step with the bus.

Input: ``messages`` records (each becomes a ``processed`` event carrying the
payload) and ``events`` records. Output: upserts into the activity store, in
one transaction per batch. Offsets are committed only after that transaction
-- if the store cannot be written (locked, disk error) the batch comes again
and nothing is dropped. The store's upserts are idempotent and monotonic, so
replays and the missing order between the two topics do no harm.
"""

from __future__ import annotations

import json
import logging

from ..bus import Record
from ..events import Event, EventType, Summary
from ._base import ActivityStore

log = logging.getLogger(__name__)


def message_event(record: Record) -> Event:
    """The ``processed`` event a ``messages`` record stands for."""
    payload = json.loads(record.value)
    generation = int(record.header("generation") or b"0")
    sender = payload.get("from") or {}
    summary = Summary(
        payload["received_at"],
        sender.get("email") or payload["envelope"]["mail_from"],
        tuple(payload["envelope"]["rcpt_to"]),
        payload.get("subject"),
    )
    return Event(
        EventType.PROCESSED,
        payload["id"],
        payload["queue_id"],
        payload["stream"],
        payload["received_at"],
        generation=generation,
        summary=summary,
        payload=payload,
    )


def to_event(record: Record) -> Event:
    return message_event(record) if record.topic == "messages" else Event.decode(record.value)


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
        self.store.apply(events)
        for event in events:
            log.info("delivery_id=%s stream=%s stage=record %s", event.delivery_id, event.stream, event.type.value)

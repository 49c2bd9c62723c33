"""Operator actions on one message: what ``inbound retry`` (and the HTTP API) ask for.

Each action checks the message's state in the activity store, then writes to
the bus -- the source of truth -- and nothing else: the stages do the rest,
and the activity log shows the action as an event of its own (who asked is in
``reason``). An action that does not apply raises :class:`ActionRefused` with
a sentence the CLI prints and the API returns as a problem, never a
half-done change.
"""

from __future__ import annotations

from ..activity import ActivityRecord, ActivityStore
from ..bus import Bus
from ..clock import now_rfc3339
from ..errors import InboundError
from ..events import Event, EventType, Status
from ..records import EVENTS, MESSAGES, MessageRecord, event_record, message_record


class ActionRefused(InboundError):
    """The action does not apply to this message (unknown id, wrong status, nothing to send)."""


def find(store: ActivityStore, delivery_id: str) -> ActivityRecord:
    record = store.get(delivery_id)
    if record is None:
        raise ActionRefused(f"no message with id {delivery_id!r} (see `inbound activity list`)")
    return record


def retry(bus: Bus, store: ActivityStore, delivery_id: str, *, requested_by: str = "cli") -> int:
    """Send a Failed message again as the next generation (same webhook-id); return that generation.

    The ``retry_requested`` event and the ``messages`` record go out in one flush: the
    activity log shows the request as soon as the deliverer can act on it.
    """
    record = find(store, delivery_id)
    if record.status is not Status.FAILED:
        raise ActionRefused(f"{delivery_id} is {record.status.value}; only failed messages can be retried")
    if record.payload is None or record.payload_type is None:
        raise ActionRefused(f"{delivery_id} failed before it was parsed; there is no payload to send")
    generation = record.generation + 1
    event = Event(
        EventType.RETRY_REQUESTED,
        delivery_id,
        record.queue_id,
        record.stream,
        now_rfc3339(),
        generation,
        reason=f"requested by {requested_by}",
    )
    message = MessageRecord(delivery_id, record.stream, generation, record.payload_type, record.payload)
    producer = bus.producer()
    try:
        key, value = event_record(event)
        producer.send(EVENTS, value, key=key)
        key, value, headers = message_record(message)
        producer.send(MESSAGES, value, key=key, headers=headers)
        producer.flush()
    finally:
        producer.close()
    return generation

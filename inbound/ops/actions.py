"""Operator actions on one message: what ``inbound retry`` (and the HTTP API) ask for.

Each action checks the message's state in the activity store, then writes to
the bus -- the source of truth -- and nothing else: the stages do the rest,
and the activity log shows the action as an event of its own (who asked is in
``reason``). An action that does not apply raises :class:`ActionRefused` with
a sentence the CLI prints and the API returns as a problem, never a
half-done change.

The activity store lags the bus by the record stage, so an action does not
take its generation (g+1 of a delivery it read at g) from what it read: it
claims it in the store (:meth:`~inbound.activity.ActivityStore.claim_generations`),
and a second action on the same delivery before the first is recorded is
refused. Two actions once both sent generation g+1, and the deliverer kept
only the first to arrive -- a retry lost behind a replay to a debug URL,
both answered 202.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..bus import Bus
from ..clock import now_rfc3339, rfc3339
from ..errors import InboundError
from ..events import Event, EventType, Status
from ..records import (
    EVENTS,
    MESSAGES,
    RECEIVED,
    Bypass,
    MessageRecord,
    event_record,
    message_record,
    received_record,
)
from .rawmessage import find_received

if TYPE_CHECKING:  # the CLI imports this module in every process of `serve`: no store for them
    from ..activity import ActivityRecord, ActivityStore, Claimed

MAX_STREAMS = 10_000  # more deliveries than one message can have: one per stream
# Messages a replay reads and sends at a time: it holds their payloads, never a whole window's.
REPLAY_BATCH = 100
# How long a generation an action claimed is held for it to reach the activity log; after that
# another action may take the next one. Longer than an outage of the record stage an operator goes
# on acting through: a second action past it replaces the first in the deliverer's queue (held 5
# minutes, a retry was lost behind a replay that way). Only an action killed between its claim and
# its write to the bus (one that fails there lets its claim go) holds its delivery this long.
CLAIM_SECONDS = 24 * 3600


class ActionRefused(InboundError):
    """The action does not apply to this message (unknown id, wrong status, nothing to send)."""


class UnknownMessage(ActionRefused):
    """No record has this id."""


class ActionPending(ActionRefused):
    """An earlier action on the message is not in the activity log yet: once it is, this one may apply."""


def find(store: ActivityStore, delivery_id: str) -> ActivityRecord:
    record = store.get(delivery_id)
    if record is None:
        raise UnknownMessage(f"no message with id {delivery_id!r} (see `inbound activity list`)")
    return record


def find_all(store: ActivityStore, message_id: str) -> list[ActivityRecord]:
    """The record of a delivery id, or every stream's record of a queue id (the id in the 250 reply).

    With payloads, like :func:`find`; :class:`UnknownMessage` when it is neither.
    """
    record = store.get(message_id)
    if record is not None:
        return [record]
    found = [store.get(r.delivery_id) for r in store.list(queue_id=message_id, limit=MAX_STREAMS)]
    if not found:
        raise UnknownMessage(
            f"no message with id {message_id!r} (a delivery id, or the queue id from the 250 reply;"
            " see `inbound activity list`)"
        )
    return [r for r in found if r is not None]


def _configured(record: ActivityRecord, streams: Collection[str], action: str) -> None:
    """Refuse to act for a stream a reload removed: its delivery would wait, Queued, for no deliverer."""
    if record.stream not in streams:
        raise ActionRefused(
            f"{record.delivery_id}: stream {record.stream!r} is no longer configured; add it back to {action} it"
        )


def retry(
    bus: Bus, store: ActivityStore, delivery_id: str, *, streams: Collection[str], requested_by: str = "cli"
) -> int:
    """Send a Failed message of one of *streams* (those configured) again as the next generation (same
    webhook-id); return that generation."""
    record = find(store, delivery_id)
    if record.status is not Status.FAILED:
        raise ActionRefused(f"{delivery_id} is {record.status.value}; only failed messages can be retried")
    _configured(record, streams, "retry")
    why = unsendable(record)
    if why is not None:
        raise ActionRefused(f"{delivery_id}: {why}")
    with _claimed(store, [record]) as claimed:
        _refuse(claimed)
        return resend(bus, [record], claimed.generations, requested_by=f"retry requested by {requested_by}")[0]


def bypass(
    bus: Bus, store: ActivityStore, delivery_id: str, *, streams: Collection[str], requested_by: str = "cli"
) -> int:
    """Deliver a Blocked message of one of *streams* after all: process it again for its stream, past
    the block rules.

    The message is read back from the bus's ``received`` topic, so it can be bypassed while the
    bus retains it (``bus.retention`` on Kafka). Returns the generation the bypass starts.
    """
    record = find(store, delivery_id)
    if record.status is not Status.BLOCKED:
        raise ActionRefused(f"{delivery_id} is {record.status.value}; only blocked messages can be bypassed")
    _configured(record, streams, "bypass")
    found = find_received(bus, record.queue_id)
    if found is None:
        raise ActionRefused(f"{delivery_id}: the bus no longer holds the message (past bus.retention)")
    envelope, message = found
    with _claimed(store, [record]) as claimed:
        _refuse(claimed)
        generation = claimed.generations[delivery_id]
        event = Event(
            EventType.RETRY_REQUESTED,
            delivery_id,
            record.queue_id,
            record.stream,
            now_rfc3339(),
            generation,
            reason=f"bypass requested by {requested_by}",
        )
        producer = bus.producer()
        try:
            key, value = event_record(event)
            producer.send(EVENTS, value, key=key)
            key, value, headers = received_record(envelope, message, Bypass(record.stream, generation))
            producer.send(RECEIVED, value, key=key, headers=headers)
            producer.flush()
        finally:
            producer.close()
    return generation


@contextlib.contextmanager
def _claimed(store: ActivityStore, records: list[ActivityRecord]) -> Iterator[Claimed]:
    """Claim the next generation of each of *records* for the block; released if the block fails.

    Released, the generation stays used: had the bus taken the records after all, the next
    action still sends a generation of its own.
    """
    now = time.time()
    seen = {record.delivery_id: record.generation for record in records}
    claimed = store.claim_generations(seen, now=rfc3339(now), hold_until=rfc3339(now + CLAIM_SECONDS))
    try:
        yield claimed
    except BaseException:
        if claimed.generations:
            store.release_claims(claimed.generations)
        raise


def _refuse(claimed: Claimed) -> None:
    """Refuse the whole action if any delivery could not be claimed."""
    if claimed.refused:
        raise ActionPending("; ".join(f"{did}: {why}" for did, why in sorted(claimed.refused.items())))


REPLAYABLE = {"failed": (Status.FAILED,), "delivered": (Status.DELIVERED,), "all": (Status.FAILED, Status.DELIVERED)}


def replay_window(
    store: ActivityStore,
    stream: str,
    since: str,
    until: str | None = None,
    status: str = "all",
    *,
    most: int = 10_000_000,
) -> list[ActivityRecord]:
    """The final messages of *stream* received in [since, until), oldest first; of each status, *most*.

    Those that failed before they were parsed are left out: they never had a payload to send.
    Those whose payload the store no longer has (past ``bus.retention`` when it was rebuilt) are
    in: :func:`replay` says it could not send them. Times are RFC 3339 UTC as the store keeps
    them (the store compares them as text).
    """
    chosen = [
        record
        for wanted in REPLAYABLE[status]
        for record in store.list(status=wanted, stream=stream, since=since, until=until, limit=most)
        if record.payload_type is not None or record.payload_made
    ]
    return sorted(chosen, key=lambda r: (r.received_at or "", r.delivery_id))


@dataclass(frozen=True, slots=True)
class Replayed:
    """What :func:`replay` did with each message of its window."""

    generations: dict[str, int] = field(default_factory=dict)  # delivery id -> the generation it was sent as
    not_sent: dict[str, str] = field(default_factory=dict)  # delivery id -> why not, in words


def replay(
    bus: Bus,
    store: ActivityStore,
    records: list[ActivityRecord],
    *,
    requested_by: str = "cli",
    to: str | None = None,
    sent: Callable[[int], object] = lambda count: None,
) -> Replayed:
    """Send *records* (from :func:`replay_window`) again, each with its own webhook-id.

    REPLAY_BATCH at a time, each read with its payload and flushed before the next (told to
    *sent*): a window's payloads all at once were hundreds of MB for a day of a busy stream.
    *to* sends them to that URL instead of their stream's webhook (checked by the caller as a
    webhook URL is; the deliverer's connection rules apply to it as to any other). A message
    with no payload stored (:func:`unsendable`), or that another action is sending (see
    :func:`_claimed`), is left out and said so in ``not_sent``: never a replay stopped half sent.
    """
    asked = f"replay requested by {requested_by}" + (f" to {to}" if to else "")
    done = Replayed()
    for first in range(0, len(records), REPLAY_BATCH):
        batch = records[first : first + REPLAY_BATCH]
        full = [find(store, record.delivery_id) for record in batch]  # list() leaves payloads out
        whys = {record.delivery_id: unsendable(record) for record in full}
        done.not_sent.update({did: why for did, why in whys.items() if why is not None})
        with _claimed(store, [record for record in full if whys[record.delivery_id] is None]) as claimed:
            chosen = [record for record in full if record.delivery_id in claimed.generations]
            resend(bus, chosen, claimed.generations, requested_by=asked, to=to)
        done.generations.update(claimed.generations)
        done.not_sent.update(claimed.refused)
        sent(len(batch))
    return done


def unsendable(record: ActivityRecord) -> str | None:
    """Why *record* (read with its payload, by :func:`find`) cannot be sent again, in words; None if it can."""
    if record.payload is not None and record.payload_type is not None:
        return None
    if record.payload_made:
        return (
            "its payload is not in the activity store (the messages topic no longer held it, past"
            " bus.retention, when the store was rebuilt; or it is not recorded yet)"
        )
    return "failed before it was parsed; there is no payload to send"


def resend(
    bus: Bus, records: list[ActivityRecord], generations: dict[str, int], *, requested_by: str, to: str | None = None
) -> list[int]:
    """Queue each record's stored payload (see :func:`unsendable`) again as the generation claimed for
    it, in one flush.

    The ``retry_requested`` events and the ``messages`` records go out together, so the
    activity log shows each request as soon as the deliverer can act on it.
    """
    at = now_rfc3339()
    producer = bus.producer()
    try:
        for record in records:
            assert record.payload is not None
            assert record.payload_type is not None
            generation = generations[record.delivery_id]
            event = Event(
                EventType.RETRY_REQUESTED,
                record.delivery_id,
                record.queue_id,
                record.stream,
                at,
                generation,
                reason=requested_by,
            )
            key, value = event_record(event)
            producer.send(EVENTS, value, key=key)
            message = MessageRecord(
                record.delivery_id, record.stream, generation, record.payload_type, record.payload, to
            )
            key, value, headers = message_record(message)
            producer.send(MESSAGES, value, key=key, headers=headers)
        producer.flush()
    finally:
        producer.close()
    return [generations[record.delivery_id] for record in records]

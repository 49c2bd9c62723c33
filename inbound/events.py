"""Activity events: what happened to one delivery (a message for one stream).

The ``events`` topic carries these (encoded by :mod:`inbound.records`, keyed
by ``delivery_id`` so each delivery's events stay in order). Together with the
``messages`` topic (whose records become ``processed`` events carrying the
opaque webhook body when they are recorded) they are the source of truth the
activity store is rebuilt from.

Statuses form a state machine whose transitions only move forward, ranked
within a *generation* (a manual ``inbound retry`` starts the next one)::

    queued ──> processed ──> retrying ──> delivered
       │            │            │
       │            └────────────┴──────> failed
       └──> blocked / failed (parse error)

Applying an event whose (generation, rank) is lower than the record's current
one never moves the status back; it may still fill in missing details.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .printable import cut


class Status(StrEnum):
    QUEUED = "queued"
    PROCESSED = "processed"
    RETRYING = "retrying"
    DELIVERED = "delivered"
    FAILED = "failed"
    BLOCKED = "blocked"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @property
    def is_final(self) -> bool:
        return self.rank == _RANK[Status.DELIVERED]


_RANK = {
    Status.QUEUED: 0,
    Status.PROCESSED: 1,
    Status.RETRYING: 2,
    Status.DELIVERED: 3,
    Status.FAILED: 3,
    Status.BLOCKED: 3,
}


class EventType(StrEnum):
    QUEUED = "queued"  # accepted and on the bus, not yet processed
    PROCESSED = "processed"  # parsed: the processor's carries the summary, a `messages` record's the payload
    BLOCKED = "blocked"  # sender matched block_senders; never posted
    ATTEMPT = "attempt"  # one POST to the webhook, whatever its outcome
    RETRYING = "retrying"  # an attempt failed; another is scheduled
    DELIVERED = "delivered"
    FAILED = "failed"  # parse error, 403, or retries exhausted
    RETRY_REQUESTED = "retry_requested"  # `inbound retry`: starts the next generation
    # About a stream, not a delivery (delivery_id and queue_id empty); the activity log keeps none.
    ENDPOINT_FAILING = "endpoint_failing"  # the endpoint has been down for webhooks.alert_after
    ENDPOINT_RECOVERED = "endpoint_recovered"  # ... and answers again
    STREAM_SILENT = "stream_silent"  # no mail for the stream's silence_alert_after


STREAM_EVENTS = frozenset({EventType.ENDPOINT_FAILING, EventType.ENDPOINT_RECOVERED, EventType.STREAM_SILENT})


# The status an event moves its delivery to (None: it only adds detail).
EVENT_STATUS: dict[EventType, Status | None] = {
    EventType.QUEUED: Status.QUEUED,
    EventType.PROCESSED: Status.PROCESSED,
    EventType.BLOCKED: Status.BLOCKED,
    EventType.ATTEMPT: None,
    EventType.RETRYING: Status.RETRYING,
    EventType.DELIVERED: Status.DELIVERED,
    EventType.FAILED: Status.FAILED,
    EventType.RETRY_REQUESTED: Status.QUEUED,
    EventType.ENDPOINT_FAILING: None,
    EventType.ENDPOINT_RECOVERED: None,
    EventType.STREAM_SILENT: None,
}


@dataclass(frozen=True, slots=True)
class Attempt:
    number: int  # 1 for the first POST of a generation
    at: str  # RFC 3339 UTC
    status_code: int | None  # HTTP status, None when no response came
    error: str | None  # why it did not count as delivered (None when it did)
    latency_ms: float


# Characters of a text a message wrote (a subject, a sender, a reason or a verdict quoting it) that
# the activity log keeps, RFC 5322's longest line: a stranger's 1 MiB Subject would otherwise go into
# every event, listing and page that shows the message. The webhook's payload has it whole.
SHOWN_LENGTH = 998


def shown(text: str) -> str:
    """*text* as the activity log keeps it."""
    return cut(text, SHOWN_LENGTH)


@dataclass(frozen=True, slots=True)
class Summary:
    """What the activity log shows of a message: from the envelope (queued), then the parse (processed)."""

    received_at: str
    mail_from: str
    to: tuple[str, ...]
    subject: str | None = None
    size: int | None = None  # bytes as received; known from processing on
    attachments: int | None = None  # how many; known from processing on
    # Who sent it, as the process stage judged (screen.py): {"auth": ..., "spam": ..., "flags": [...]},
    # each only when computed; None when the stream screens nothing or before processing.
    verdicts: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Event:
    type: EventType
    delivery_id: str  # "<queue_id>-<stream>", also the webhook-id
    queue_id: str
    stream: str
    at: str  # RFC 3339 UTC, when it happened
    generation: int = 0
    summary: Summary | None = None
    attempt: Attempt | None = None
    reason: str | None = None  # for failed / blocked
    next_attempt_at: str | None = None  # for retrying
    # The webhook body, opaque: only on the `stored` events the record stage makes from `messages`
    # records (see inbound.records), never on the events topic.
    payload: bytes | None = field(default=None, compare=False)
    payload_type: str | None = None  # its content type


def delivery_id(queue_id: str, stream: str) -> str:
    return f"{queue_id}-{stream}"

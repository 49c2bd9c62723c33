"""Activity events: what happened to one delivery (a message for one stream).

The ``events`` topic carries these as JSON (``schemas/activity-event.schema.json``),
keyed by ``delivery_id`` so each delivery's events stay in order. Together with
the ``messages`` topic (whose records become ``processed`` events when they are
recorded) they are the source of truth the activity store is rebuilt from.

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

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


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
    PROCESSED = "processed"  # parsed; carries the payload (made from a `messages` record)
    BLOCKED = "blocked"  # sender matched block_senders; never posted
    ATTEMPT = "attempt"  # one POST to the webhook, whatever its outcome
    RETRYING = "retrying"  # an attempt failed; another is scheduled
    DELIVERED = "delivered"
    FAILED = "failed"  # parse error, 403, or retries exhausted
    RETRY_REQUESTED = "retry_requested"  # `inbound retry`: starts the next generation


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
}


@dataclass(frozen=True, slots=True)
class Attempt:
    number: int  # 1 for the first POST of a generation
    at: str  # RFC 3339 UTC
    status_code: int | None  # HTTP status, None when no response came
    error: str | None  # why it did not count as delivered (None when it did)
    latency_ms: float

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "at": self.at,
            "status_code": self.status_code,
            "error": self.error,
            "latency_ms": self.latency_ms,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Attempt:
        return cls(
            int(data["number"]),
            str(data["at"]),
            data.get("status_code"),
            data.get("error"),
            float(data["latency_ms"]),
        )


@dataclass(frozen=True, slots=True)
class Summary:
    """The few fields the activity list shows, known from the envelope or the payload."""

    received_at: str
    mail_from: str
    to: tuple[str, ...]
    subject: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "received_at": self.received_at,
            "from": self.mail_from,
            "to": list(self.to),
            "subject": self.subject,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Summary:
        return cls(str(data["received_at"]), str(data["from"]), tuple(data["to"]), data.get("subject"))


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
    payload: dict[str, Any] | None = field(default=None, compare=False)  # processed only

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "type": self.type.value,
            "delivery_id": self.delivery_id,
            "queue_id": self.queue_id,
            "stream": self.stream,
            "at": self.at,
            "generation": self.generation,
        }
        if self.summary is not None:
            data["summary"] = self.summary.to_json()
        if self.attempt is not None:
            data["attempt"] = self.attempt.to_json()
        if self.reason is not None:
            data["reason"] = self.reason
        if self.next_attempt_at is not None:
            data["next_attempt_at"] = self.next_attempt_at
        if self.payload is not None:
            data["payload"] = self.payload
        return data

    def encode(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Event:
        return cls(
            type=EventType(data["type"]),
            delivery_id=str(data["delivery_id"]),
            queue_id=str(data["queue_id"]),
            stream=str(data["stream"]),
            at=str(data["at"]),
            generation=int(data.get("generation", 0)),
            summary=Summary.from_json(data["summary"]) if "summary" in data else None,
            attempt=Attempt.from_json(data["attempt"]) if "attempt" in data else None,
            reason=data.get("reason"),
            next_attempt_at=data.get("next_attempt_at"),
            payload=data.get("payload"),
        )

    @classmethod
    def decode(cls, raw: bytes) -> Event:
        return cls.from_json(json.loads(raw))


def delivery_id(queue_id: str, stream: str) -> str:
    return f"{queue_id}-{stream}"

"""The HTTP API's response bodies: what ``/openapi.json`` documents and every answer is checked against.

They mirror :meth:`inbound.activity.ActivityRecord.to_json` (the CLI's
``--json``), so the CLI and the API show a message the same way.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..activity import ActivityRecord
from ..events import Status
from ..records import JSON


class AttemptOut(BaseModel):
    generation: int
    number: int
    at: str
    status_code: int | None
    error: str | None
    latency_ms: float


class MessageOut(BaseModel):
    """One delivery (one message for one stream), as the activity list shows it."""

    model_config = ConfigDict(populate_by_name=True)

    delivery_id: str
    queue_id: str
    stream: str
    status: Status
    generation: int
    received_at: str | None
    mail_from: str | None = Field(alias="from")
    to: list[str]
    subject: str | None
    size: int | None
    attachments: int | None
    verdicts: dict[str, Any] | None  # auth (SPF, DKIM, DMARC, ARC), spam, flags: as the payload's auth and spam
    reason: str | None
    next_attempt_at: str | None
    updated_at: str
    attempts: list[AttemptOut]

    @classmethod
    def of(cls, record: ActivityRecord) -> MessageOut:
        return cls.model_validate(record.to_json())


class MessageDetail(MessageOut):
    """One delivery with its webhook body: ``payload`` when the body is JSON, else ``payload_base64``."""

    payload_type: str | None
    payload: Any = None
    payload_base64: str | None = None

    @classmethod
    def of(cls, record: ActivityRecord) -> MessageDetail:
        body: dict[str, Any] = {**record.to_json(), "payload_type": record.payload_type}
        if record.payload is not None:
            try:
                if record.payload_type != JSON:
                    raise ValueError("not JSON")
                body["payload"] = json.loads(record.payload)
            except ValueError:
                body["payload_base64"] = base64.b64encode(record.payload).decode()
        return cls.model_validate(body)


class QueuedMessage(BaseModel):
    """A queue id (from ``250 ... queued as``): the message's delivery to every stream it went to."""

    queue_id: str
    deliveries: list[MessageDetail]


class MessagePage(BaseModel):
    items: list[MessageOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class Accepted(BaseModel):
    delivery_id: str
    generation: int


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stream: str
    since: datetime = Field(description="Received at or after (RFC 3339 with a zone).")
    until: datetime | None = Field(default=None, description="Received before.")
    status: Literal["failed", "delivered", "all"] = "all"


class Replayed(BaseModel):
    count: int = Field(description="How many messages of the window were sent again.")
    delivery_ids: list[str] = Field(description="Those messages, oldest first.")
    not_sent: dict[str, str] = Field(description="The window's other messages: delivery id -> why not.")


class StreamPaused(BaseModel):
    stream: str
    paused: bool


class DayCounts(BaseModel):
    date: str
    counts: dict[Status, int]


class Stats(BaseModel):
    stream: str | None
    days: list[DayCounts]


# StreamBacklogOut and StatusOut are made from ops.status's own records, field by field: one they gain
# and these models lack is an error, not silently left out (held_for and spamd's outage were).
class StreamBacklogOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stream: str
    waiting: int
    oldest_age: float | None
    paused: bool
    held_for: float | None  # seconds its endpoint has been down (its deliveries held); null: up


class StatusOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backlog: int
    spool_entries: int
    spool_oldest_age: float | None
    lag: dict[str, int]
    streams: list[StreamBacklogOut]
    everything_paused: bool
    oldest_waiting_age: float | None
    counts: dict[Status, int]
    spamd_down_for: float | None  # seconds this host's processor has gone without spamd
    spamd_problem: str | None  # what it last got from spamd
    bus_error: str | None  # why the bus could not be read: lag and pauses unknown


class Health(BaseModel):
    status: str
    checks: dict[str, str] = {}

"""Every topic's wire format: the one place that encodes and decodes what travels on the bus.

A stage that writes a topic calls an ``encode_*`` / ``*_record`` function here;
a stage that reads one calls the matching ``decode_*``. Nothing else knows a
record's layout, so a change of format (a binary frame for ``received``, a
new payload format on ``messages``) is made here and checked by one test.
``schemas/`` holds the JSON Schema of each JSON value.

==========  =========  =================================================================
topic       key        value (and headers)
==========  =========  =================================================================
received    queue id   ``inbound-received/2\\n``, the envelope as one line of JSON
                       (received.schema.json), ``\\n``, the raw message; headers
                       ``bypass-stream`` and ``generation`` on a bypass
messages    stream     the webhook body, opaque bytes; headers ``delivery-id``,
                       ``generation``, ``content-type`` (and ``webhook-url`` for a
                       replay sent elsewhere)
events      delivery   one activity event (activity-event.schema.json)
control     pause/<s>  ``{"paused": bool, "stream": s, "at": ...}`` (control.schema.json)
==========  =========  =================================================================

The ``messages`` value is opaque after the processor built it: the deliverer
POSTs it as it is and the record stage keeps it as it is. What the activity log
shows about a message comes from the ``processed`` event's summary instead.

Decoders raise :class:`ValueError` (or ``KeyError`` / ``TypeError`` from a
malformed JSON value) for a record that is not what its topic promises; the
stage that reads it decides what that means (it is logged and skipped: a
record on the bus cannot be fixed by reading it again).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, replace
from typing import Any

from . import jsoncodec
from .bus import Headers, Record
from .envelope import Envelope, Recipient
from .events import Attempt, Event, EventType, Summary

RECEIVED, MESSAGES, EVENTS, CONTROL = "received", "messages", "events", "control"
JSON = "application/json"

# --- received ----------------------------------------------------------------------------


def encode_envelope(envelope: Envelope) -> dict[str, Any]:
    """The envelope as JSON types: in ``received`` records and in spool entry headers."""
    return {
        "queue_id": envelope.queue_id,
        "mail_from": envelope.mail_from,
        "recipients": [
            {"address": r.address, "stream": r.stream, "mailbox_hash": r.mailbox_hash} for r in envelope.recipients
        ],
        "client_address": envelope.client_address,
        "helo": envelope.helo,
        "tls": envelope.tls,
        "received_at": envelope.received_at,
        **({"tls_version": envelope.tls_version, "tls_cipher": envelope.tls_cipher} if envelope.tls else {}),
    }


def decode_envelope(data: dict[str, Any]) -> Envelope:
    return Envelope(
        queue_id=str(data["queue_id"]),
        mail_from=str(data["mail_from"]),
        recipients=tuple(
            Recipient(str(r["address"]), str(r["stream"]), r.get("mailbox_hash")) for r in data["recipients"]
        ),
        client_address=str(data["client_address"]),
        helo=str(data["helo"]),
        tls=bool(data["tls"]),
        received_at=str(data["received_at"]),
        tls_version=data.get("tls_version"),  # absent from records written before STARTTLS existed
        tls_cipher=data.get("tls_cipher"),
    )


# The raw message follows the envelope line as it is: no base64 (a third larger) and no JSON string
# to build and parse around the whole message, which a profile showed as a large share of each stage.
RECEIVED_FRAME = b"inbound-received/2\n"

#: A header on the ``received`` and ``messages`` records ``inbound recover`` publishes again for a
#: message already final: there to be read (its raw message, its payload for a rebuild of the
#: activity store, a bypass), never processed or delivered again.
SETTLED = "settled"


def settled(record: Record) -> Record:
    """*record* marked :data:`SETTLED`."""
    return replace(record, headers=(*record.headers, (SETTLED, b"final before a recover")))


def is_settled(record: Record) -> bool:
    return record.header(SETTLED) is not None


def encode_received(envelope: Envelope, message: bytes) -> bytes:
    return RECEIVED_FRAME + jsoncodec.dumps(encode_envelope(envelope)) + b"\n" + message


@dataclass(frozen=True, slots=True)
class Bypass:
    """An operator's ``inbound bypass``: process the message again for one stream, past its block rules."""

    stream: str
    generation: int  # the generation the bypass starts


def received_record(envelope: Envelope, message: bytes, bypass: Bypass | None = None) -> tuple[bytes, bytes, Headers]:
    """(key, value, headers) of the ``received`` record for an accepted message: its only writer."""
    headers: Headers = ()
    if bypass is not None:
        headers = (("bypass-stream", bypass.stream.encode()), ("generation", str(bypass.generation).encode()))
    return envelope.queue_id.encode(), encode_received(envelope, message), headers


def decode_bypass(record: Record) -> Bypass | None:
    """The bypass a ``received`` record asks for, or None for a message as it was accepted."""
    stream = record.header("bypass-stream")
    if stream is None:
        return None
    return Bypass(stream.decode(), int(record.header("generation") or b"1"))


def decode_received(value: bytes) -> tuple[Envelope, bytes]:
    if value.startswith(RECEIVED_FRAME):
        envelope, newline, message = value[len(RECEIVED_FRAME) :].partition(b"\n")
        if not newline:
            raise ValueError("a received record without the line that ends its envelope")
        return decode_envelope(jsoncodec.loads(envelope)), message
    # Written before the frame: still on a bus that was not drained before an upgrade, and what
    # ``inbound recover`` salvages from an old bus file is published again byte for byte.
    data = json.loads(value)
    return decode_envelope(data["envelope"]), base64.b64decode(data["message"], validate=True)


# --- messages ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """One webhook body for one delivery, as the ``messages`` topic carries it."""

    delivery_id: str
    stream: str
    generation: int  # 0, or the generation an operator's retry started
    content_type: str  # what the body is, sent as the POST's Content-Type
    body: bytes
    url: str | None = None  # where an operator's replay sends it instead of the stream's webhook

    @property
    def queue_id(self) -> str:
        return self.delivery_id.removesuffix(f"-{self.stream}")


def message_record(message: MessageRecord) -> tuple[bytes, bytes, Headers]:
    """(key, value, headers) of the ``messages`` record for *message*: its only writer."""
    headers: Headers = (
        ("delivery-id", message.delivery_id.encode()),
        ("generation", str(message.generation).encode()),
        ("content-type", message.content_type.encode()),
    )
    if message.url is not None:
        headers += (("webhook-url", message.url.encode()),)
    return message.stream.encode(), message.body, headers


def decode_message(record: Record) -> MessageRecord:
    """The ``messages`` record read back from its key and headers; the body is never parsed."""
    delivery_id, stream = (record.header("delivery-id") or b"").decode(), record.key.decode()
    if not stream or not delivery_id.endswith(f"-{stream}"):
        raise ValueError(f"a messages record without a delivery-id of its stream {stream!r}")
    return MessageRecord(
        delivery_id=delivery_id,
        stream=stream,
        generation=int(record.header("generation") or b"0"),
        content_type=(record.header("content-type") or JSON.encode()).decode(),
        body=record.value,
        url=url.decode() if (url := record.header("webhook-url")) is not None else None,
    )


# --- events ------------------------------------------------------------------------------


def encode_attempt(attempt: Attempt) -> dict[str, Any]:
    return {
        "number": attempt.number,
        "at": attempt.at,
        "status_code": attempt.status_code,
        "error": attempt.error,
        "latency_ms": attempt.latency_ms,
    }


def _decode_attempt(data: dict[str, Any]) -> Attempt:
    return Attempt(int(data["number"]), str(data["at"]), data.get("status_code"), data.get("error"), data["latency_ms"])


def encode_summary(summary: Summary) -> dict[str, Any]:
    data: dict[str, Any] = {
        "received_at": summary.received_at,
        "from": summary.mail_from,
        "to": list(summary.to),
        "subject": summary.subject,
    }
    if summary.size is not None:
        data["size"] = summary.size
    if summary.attachments is not None:
        data["attachments"] = summary.attachments
    if summary.verdicts is not None:
        data["verdicts"] = summary.verdicts
    return data


def _decode_summary(data: dict[str, Any]) -> Summary:
    return Summary(
        str(data["received_at"]),
        str(data["from"]),
        tuple(str(t) for t in data["to"]),
        data.get("subject"),
        data.get("size"),
        data.get("attachments"),
        data.get("verdicts"),
    )


def encode_event(event: Event) -> bytes:
    """The ``events`` value of *event*. A payload is never on this topic: it travels on ``messages``."""
    if event.payload is not None:
        raise ValueError("an event with a payload is made from a messages record, not sent as an event")
    data: dict[str, Any] = {
        "type": event.type.value,
        "delivery_id": event.delivery_id,
        "queue_id": event.queue_id,
        "stream": event.stream,
        "at": event.at,
        "generation": event.generation,
    }
    if event.summary is not None:
        data["summary"] = encode_summary(event.summary)
    if event.attempt is not None:
        data["attempt"] = encode_attempt(event.attempt)
    if event.reason is not None:
        data["reason"] = event.reason
    if event.next_attempt_at is not None:
        data["next_attempt_at"] = event.next_attempt_at
    return jsoncodec.dumps(data)


def decode_event(value: bytes) -> Event:
    data = jsoncodec.loads(value)
    return Event(
        type=EventType(data["type"]),
        delivery_id=str(data["delivery_id"]),
        queue_id=str(data["queue_id"]),
        stream=str(data["stream"]),
        at=str(data["at"]),
        generation=int(data.get("generation", 0)),
        summary=_decode_summary(data["summary"]) if "summary" in data else None,
        attempt=_decode_attempt(data["attempt"]) if "attempt" in data else None,
        reason=data.get("reason"),
        next_attempt_at=data.get("next_attempt_at"),
    )


def event_record(event: Event) -> tuple[bytes, bytes]:
    """(key, value) of the ``events`` record for *event*: keyed by delivery, so its events stay in order.

    An event about a whole stream (an alert) has no delivery: it is keyed by the stream.
    """
    return (event.delivery_id or f"stream/{event.stream}").encode(), encode_event(event)


# --- control -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pause:
    stream: str  # a stream name, or "*" for everything
    paused: bool
    at: str


def pause_record(pause: Pause) -> tuple[bytes, bytes]:
    """(key, value) of a ``control`` record; the last record of a key is the state."""
    value = {"paused": pause.paused, "stream": pause.stream, "at": pause.at}
    return f"pause/{pause.stream}".encode(), json.dumps(value).encode()


def decode_pause(value: bytes) -> Pause:
    data = json.loads(value)
    return Pause(str(data["stream"]), bool(data["paused"]), str(data["at"]))

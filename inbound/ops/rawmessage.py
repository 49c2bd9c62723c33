"""``inbound message raw ID``: a message exactly as received, read back from the bus.

Input: a delivery id (``<queue_id>-<stream>``) or a queue id. Output: the
bytes of the ``received`` record's message (our ``Received:`` header on top,
CRLF line endings), which is what ``include_raw`` puts in a payload.

The bus is the only place a message is kept whole after the spool hands it
over, so it can be fetched only while the bus still holds its ``received``
record: on Kafka for ``bus.retention``, on the embedded bus until the data
directory is deleted. A message past that is reported as such, from the time
in its queue id, rather than as an unknown id.

The whole topic is scanned (records are keyed by queue id, not indexed); an
operator's occasional look-up, not something to call per message.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from ..bus import Bus
from ..config import BusSettings
from ..durations import format_duration
from ..envelope import Envelope
from ..errors import InboundError
from ..ids import queue_id_time
from ..records import RECEIVED, decode_received


class RawMessageNotFound(InboundError):
    """The bus holds no ``received`` record for the id asked for; the message says why, when known."""


def queue_id_of(message_id: str) -> str:
    """The queue id in a delivery id or queue id; ValueError when it is neither."""
    queue_id = message_id.partition("-")[0]
    if queue_id_time(queue_id) is None:
        raise ValueError(f"{message_id!r} is not a delivery id (<queue_id>-<stream>) or a queue id")
    return queue_id


def retention_of(settings: BusSettings) -> float | None:
    """How long the bus keeps ``received`` records: ``bus.retention`` on Kafka; None (for ever) on the embedded bus."""
    return settings.retention if settings.backend == "kafka" else None


def find_received(bus: Bus, queue_id: str) -> tuple[Envelope, bytes] | None:
    """The envelope and message the bus holds for *queue_id*, read from the start of ``received``."""
    wanted = queue_id.encode()
    for record in bus.read_all(RECEIVED):
        if record.key == wanted:
            return decode_received(record.value)
    return None


def raw_message(bus: Bus, retention: float | None, message_id: str) -> bytes:
    """The message of *message_id* as received; RawMessageNotFound when the bus no longer (or never) held it."""
    queue_id = queue_id_of(message_id)
    found = find_received(bus, queue_id)
    if found is not None:
        return found[1]
    received = queue_id_time(queue_id) or 0.0
    age = time.time() - received
    if retention is not None and age > retention:
        at = datetime.fromtimestamp(received, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        raise RawMessageNotFound(
            f"{queue_id} was received at {at}, {format_duration(age)} ago: past bus.retention"
            f" ({format_duration(retention)}), so the bus no longer holds the message"
        )
    raise RawMessageNotFound(f"no message with queue id {queue_id} on the bus")

"""``inbound recover``: salvage every message still readable in quarantined files and re-ingest it.

What it reads, from ``quarantine/``:

* ``spool-<queue id>`` -- damaged spool files. Either copy of an entry's header
  (it has one at each end) is enough to find and check its message; the
  entries go back into the spool under their original queue ids, so their
  deliveries keep their ``webhook-id``.
* ``bus.db.<time>`` -- a damaged embedded bus. Every record still readable
  in its pages (:mod:`inbound.ops.salvage`) is published again, in its original
  order, those of a final message (below) marked settled, so that the stages
  pass them by; the offsets that could not be read are reported.
* ``outbox.db.<time>`` -- deliveries that were waiting: published again to
  ``messages`` with their generation.
* ``activity.db.<time>`` -- nothing to re-ingest: the store is a view, so it
  is rebuilt from the bus.

A message whose every delivery the activity store already shows as final is
not sent again. Records of the ``control`` topic are not replayed: a pause
from before the damage is not the operator's wish now. Finally, every delivery
the activity store shows as still on its way but that nothing salvaged brings
back is named in the report as lost. Each file handled moves to ``quarantine/recovered/``, so a
second run does not repeat the work; a file that could not be read at all
stays where it is. The report says exactly what was saved and what was not.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from ..activity import ActivityStore
from ..activity.rebuild import rebuild
from ..bus import Bus, Record
from ..edge.spool import MAGIC, CorruptEntry, Header, Spool, check_message, parse_header
from ..events import Status, delivery_id
from ..records import (
    CONTROL,
    JSON,
    MESSAGES,
    RECEIVED,
    MessageRecord,
    decode_bypass,
    decode_message,
    decode_received,
    is_settled,
    message_record,
    settled,
)
from .salvage import Value, salvage_rows


@dataclass
class Report:
    saved: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already final: nothing to do
    lost: list[str] = field(default_factory=list)


def _forwards(data: bytes, start: int) -> tuple[Header, bytes, int]:
    """The entry at *start* by its opening header (its closing copy may be gone); and where the next starts."""
    line_start = start + len(MAGIC)  # the magic line may be damaged: it has a fixed length
    line_end = data.find(b"\n", line_start)
    header = parse_header(data[line_start : max(line_end, line_start)])
    message = data[line_end + 1 : line_end + 1 + header.size]
    check_message(header, message)
    return header, message, line_end + 1 + header.size + (line_end - line_start) + 2


def _backwards(data: bytes, end: int) -> tuple[Header, bytes, int]:
    """The entry ending at *end* by its closing header (its opening copy may be gone); and where it starts."""
    line_end = end - 1
    line_start = data.rfind(b"\n", 0, line_end) + 1
    header = parse_header(data[line_start:line_end])
    message_end = line_start - 1
    message = data[max(0, message_end - header.size) : message_end]
    check_message(header, message)
    return header, message, message_end - header.size - 1 - (line_end - line_start) - len(MAGIC)


def salvage_spool_file(data: bytes) -> tuple[list[tuple[Header, bytes]], str | None]:
    """Every entry of a damaged spool file that is itself intact, in order, and what could not be read.

    The opening headers are followed from the start and the closing copies from the end (each entry
    says how long it is), until damage stops each walk; nothing is searched for, so a message whose
    bytes look like an entry is never taken for one.
    """
    found: dict[str, tuple[int, Header, bytes]] = {}
    reasons: list[str] = []
    start, end = 0, len(data.rstrip(b"\n")) + 1
    while start < end:
        try:
            header, message, after = _forwards(data, start)
        except CorruptEntry as exc:
            reasons.append(f"reading forwards from byte {start}: {exc}")
            break
        found[header.envelope.queue_id] = (start, header, message)
        start = after
    while start < end:
        try:
            header, message, before = _backwards(data, end)
        except CorruptEntry as exc:
            reasons.append(f"reading backwards from byte {end}: {exc}")
            break
        found.setdefault(header.envelope.queue_id, (before, header, message))
        end = before
    salvaged = [(header, message) for _, header, message in sorted(found.values(), key=lambda item: item[0])]
    return salvaged, ("; ".join(reasons) if start < end else None)


class Recovery:
    def __init__(self, quarantine: Path, spool: Spool, bus: Bus, store: ActivityStore) -> None:
        self.quarantine = quarantine
        self.done = quarantine / "recovered"
        self.spool = spool
        self.bus = bus
        self.producer = bus.producer()
        self.store = store
        self.report = Report()
        self.back: set[str] = set()  # queue ids salvaged and sent on again

    def final(self, queue_id: str, streams: list[str], generation: int = 0) -> bool:
        """Whether the activity store shows each delivery of *queue_id* to *streams* final, at *generation* or later."""
        records = [self.store.get(delivery_id(queue_id, s)) for s in streams]
        return bool(records) and all(
            r is not None and r.status.is_final and r.generation >= generation for r in records
        )

    def republished(self, record: Record) -> Record:
        """*record* as it goes on the bus again: :func:`settled` if its message is final.

        A ``received`` or ``messages`` record of a message already final would be parsed and
        POSTed again once the outbox has forgotten it (its done rows are kept for days, the bus's
        records for ever): it goes back settled, for its raw message, its payload and a bypass,
        and the stages pass it by. A ``received`` record is keyed by its queue id, as its only
        writer keys it, in case the damage fell on the key. A record that cannot be read is
        published as it is, for the stages to judge as they would have.
        """
        try:
            if record.topic == RECEIVED:
                envelope, _ = decode_received(record.value)
                bypass = decode_bypass(record)
                streams, generation = ([bypass.stream], bypass.generation) if bypass else (envelope.streams(), 0)
                record = dataclasses.replace(record, key=envelope.queue_id.encode())
                final = self.final(envelope.queue_id, streams, generation)
            elif record.topic == MESSAGES:
                message = decode_message(record)
                final = self.final(message.queue_id, [message.stream], message.generation)
            else:
                final = False
        except (ValueError, TypeError, KeyError):
            final = False
        return settled(record) if final else record

    def run(self) -> Report:
        self.done.mkdir(parents=True, exist_ok=True)
        activity_lost = False
        for path in sorted(self.quarantine.iterdir()):
            if path.name.startswith("spool-"):
                self.spool_entry(path)
            elif path.name.startswith("bus.db.") and not path.name.endswith(("-wal", "-shm")):
                self.bus_database(path)
            elif path.name.startswith("outbox.db.") and not path.name.endswith(("-wal", "-shm")):
                self.outbox_database(path)
            elif path.name.startswith("activity.db.") and not path.name.endswith(("-wal", "-shm")):
                activity_lost = True
                self.retire(path)
        if activity_lost:
            records = rebuild(self.bus, self.store)
            self.report.saved.append(f"activity store rebuilt from {records} bus records")
        self.name_the_lost()
        self.producer.close()
        return self.report

    def name_the_lost(self) -> None:
        """Deliveries still on their way in the activity store that no salvaged record brings back."""
        on_the_bus = {record.key.decode(errors="replace") for record in self.bus.read_all(RECEIVED)}
        for status in (Status.QUEUED, Status.PROCESSED, Status.RETRYING):
            for record in self.store.list(status=status, limit=1_000_000):
                if record.queue_id not in self.back | on_the_bus:
                    self.report.lost.append(
                        f"{record.delivery_id}: from {record.mail_from}, subject {record.subject!r}, "
                        f"received {record.received_at} -- {status.value}, and no readable copy remains"
                    )

    def retire(self, path: Path) -> None:
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{path}{suffix}")
            if source.exists():
                os.replace(source, self.done / source.name)

    def spool_entry(self, path: Path) -> None:
        try:
            salvaged, damage = salvage_spool_file(path.read_bytes())
        except OSError as exc:
            salvaged, damage = [], str(exc)
        if damage is not None:
            self.report.lost.append(f"{path}: {damage}")
        if not salvaged:
            return
        back = []
        for header, message in salvaged:
            envelope = header.envelope
            if self.final(envelope.queue_id, envelope.streams()):
                self.report.skipped.append(f"{path}: {envelope.queue_id} was already delivered or final")
            else:
                back.append((envelope, message))
                self.report.saved.append(f"{path}: {envelope.queue_id} back in the spool")
        if back:
            self.spool.put_many(back)
            self.back.update(envelope.queue_id for envelope, _ in back)
        self.retire(path)

    def bus_database(self, path: Path) -> None:
        rows = self.readable_rows(path, columns=(6,))  # offset, topic, key, value, headers, timestamp_ms
        if rows is None:
            return
        records = [(offset, row) for offset, row in sorted(rows.items()) if isinstance(row[1], str)]
        published = already_final = 0
        for offset, (_, topic_value, key, value, headers, _) in records:
            topic = str(topic_value)
            if topic == CONTROL:
                continue
            try:
                decoded = tuple((str(name), bytes.fromhex(v)) for name, v in json.loads(str(headers)))
                record = Record(topic, 0, offset, _blob(key), _blob(value), decoded, 0)
            except (ValueError, TypeError) as exc:  # a row whose damage its checks did not catch
                self.report.lost.append(f"{path}: the {topic} record at offset {offset} is unreadable ({exc})")
                continue
            again = self.republished(record)
            self.producer.send(topic, again.value, key=again.key, headers=again.headers)
            published += 1
            already_final += is_settled(again)
            if topic == RECEIVED:
                self.back.add(again.key.decode(errors="replace"))
        self.producer.flush()
        self.report.saved.append(f"{path}: {published} bus records published again")
        if already_final:
            self.report.skipped.append(
                f"{path}: {already_final} of them of messages already final: kept to be read, not processed again"
            )
        gaps = missing_ranges([offset for offset, _ in records])
        if gaps:
            self.report.lost.append(f"{path}: records at offsets {gaps} were unreadable")
        self.retire(path)

    def outbox_database(self, path: Path) -> None:
        # delivery_id, stream, queue_id, generation, payload, attempts, steps, due_at, added_at, done,
        # lease_owner, lease_until[, content_type[, url]]: rows keep the columns of their time, and
        # the payload, which later outboxes keep in ``payloads`` (delivery_id, generation, payload).
        rows = self.readable_rows(path, columns=(12, 13, 14))
        if rows is None:
            return
        # A pass of its own: salvaged rows are keyed by rowid, and the two tables number theirs apart.
        payloads = {(row[0], row[1]): row[2] for row in (self.readable_rows(path, columns=(3,)) or {}).values()}
        sent = 0
        for rowid, row in rows.items():
            did, stream, queue_id, generation, inline, done = *row[:5], row[9]
            payload = inline if inline is not None else payloads.get((did, generation))
            if done or payload is None:
                continue
            try:
                content_type = str(row[12]) if len(row) > 12 else JSON
                url = str(row[13]) if len(row) > 13 and row[13] is not None else None
                message = MessageRecord(str(did), str(stream), int(str(generation)), content_type, _blob(payload), url)
            except (ValueError, TypeError) as exc:  # a row whose damage its checks did not catch
                self.report.lost.append(f"{path}: the delivery in row {rowid} is unreadable ({exc})")
                continue
            if self.final(str(queue_id), [message.stream], message.generation):
                continue
            key, value, headers = message_record(message)
            self.producer.send(MESSAGES, value, key=key, headers=headers)
            sent += 1
        self.producer.flush()
        self.report.saved.append(f"{path}: {sent} waiting deliveries queued again")
        self.retire(path)

    def readable_rows(self, path: Path, columns: Collection[int]) -> dict[int, list[Value]] | None:
        try:
            return salvage_rows(path, columns)
        except OSError as exc:
            self.report.lost.append(f"{path}: cannot be read at all ({exc})")
            return None


def _blob(value: object) -> bytes:
    if not isinstance(value, bytes):
        raise TypeError(f"expected a BLOB column, found {type(value).__name__}")
    return value


def missing_ranges(offsets: list[int]) -> str:
    """'3-5, 9' for the holes in a sorted run of offsets that started at 1."""
    holes, expected = [], 1
    for offset in offsets:
        if offset > expected:
            holes.append(f"{expected}-{offset - 1}" if offset - 1 > expected else str(expected))
        expected = offset + 1
    return ", ".join(holes)

"""Publish: move spool entries onto the bus's ``received`` topic.

Input: files of entries in ``spool/new/``. Output: one ``received`` record per
entry (key: queue id; value: see :mod:`inbound.records`) and one ``queued``
activity event per stream. A file is removed from the spool only after
``flush()`` returned for all its entries, i.e. the bus holds them durably; if
the bus is down the entries wait and the spool grows -- the SMTP edge keeps
answering 250, an edge started during the outage too: nothing here needs the
bus before the first send (its producer and topics are made then, and retried
with the rest). Any other failure (a bug, the spool's filesystem) is logged
with its traceback and tried again the same way: the publisher never stops.

Only one publisher works a spool at a time (an ``flock`` on
``spool/publish.lock``), so two processes sharing a data directory do not
publish the same entry twice; a crash releases the lock with the process.
A crash between flush and removal publishes an entry twice: the processor and
everything after it are idempotent by queue id.

An entry whose record the bus would refuse every time (larger than Kafka's
record limit: a message near ``max_message_size`` under an envelope of long
recipients) is not sent: retried, it would hold every entry spooled after it
for ever. Its streams' activity shows it Failed, with the sizes, and the entry
is kept in ``quarantine/too-large-<queue id>`` for the operator.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading

from ..bus import Bus, Producer, record_size
from ..envelope import Envelope
from ..errors import InboundError
from ..events import Event, EventType, Summary, delivery_id
from ..records import EVENTS, RECEIVED, event_record, received_record
from .spool import Spool, SpoolEntry

log = logging.getLogger(__name__)

BATCH = 50
BATCH_BYTES = 16 * 1024 * 1024  # a batch this large goes out even if it holds fewer entries
RESCAN_SECONDS = 1.0  # how soon entries spooled by another process are noticed


def queued_events(
    envelope: Envelope, at: str, kind: EventType = EventType.QUEUED, reason: str | None = None
) -> list[Event]:
    """An event of *kind* for each of the envelope's streams: ``queued``, or what an entry came to here."""
    return [
        Event(
            kind,
            delivery_id(envelope.queue_id, stream),
            envelope.queue_id,
            stream,
            at,
            summary=Summary(
                envelope.received_at, envelope.mail_from, tuple(r.address for r in envelope.recipients_of(stream))
            ),
            reason=reason,
        )
        for stream in envelope.streams()
    ]


def publish_entries(producer: Producer, entries: list[SpoolEntry], record_limit: int | None = None) -> list[SpoolEntry]:
    """Send and flush; BusError if the bus did not take them all. The entries too large for any record
    (*record_limit*), not sent: their streams' events say they failed."""
    refused = []
    for entry in entries:
        key, value, headers = received_record(entry.envelope, entry.message)
        events = queued_events(entry.envelope, entry.envelope.received_at)
        if record_limit is not None and (size := record_size(key, value, headers)) > record_limit:
            refused.append(entry)
            reason = f"the message and its envelope ({size:,} bytes) are larger than the bus takes ({record_limit:,})"
            events += queued_events(entry.envelope, entry.envelope.received_at, EventType.FAILED, reason)
        else:
            producer.send(RECEIVED, value, key=key, headers=headers)
        for event in events:
            key, value = event_record(event)
            producer.send(EVENTS, value, key=key)
    producer.flush()
    return refused


class Publisher:
    def __init__(self, spool: Spool, bus: Bus, record_limit: int | None = None) -> None:
        self.spool = spool
        self.bus = bus
        self.record_limit = record_limit  # the bus's, for one record (None: no limit)
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="publish", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def notify(self) -> None:
        """Called by the SMTP handler after each spooled message: publish without waiting."""
        self.wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Publish what is spooled (if the bus takes it), then return."""
        self.stopping.set()
        self.wake.set()
        self.thread.join(timeout)

    def _run(self) -> None:
        lock = os.open(self.spool.publish_lock, os.O_RDWR | os.O_CREAT, 0o600)
        producer: Producer | None = None
        backoff = 0.2
        try:
            if not self._take_over(lock):
                return
            while True:
                stopping = self.stopping.is_set()
                self.wake.clear()  # before draining: a message spooled meanwhile wakes the next round
                try:
                    producer = producer or self.bus.producer()
                    published = self.drain(producer)
                    backoff = 0.2
                except Exception as exc:  # whatever failed, the spool keeps the mail: try again, never stop
                    if isinstance(exc, InboundError):
                        log.warning(
                            "stage=publish bus unavailable, spool keeps the mail; retry in %.1fs: %s", backoff, exc
                        )
                    else:  # a bug or the spool's filesystem, not an outage: loudly
                        log.exception("stage=publish unexpected error, spool keeps the mail; retry in %.1fs", backoff)
                    if producer is not None:
                        producer.close()
                        producer = None
                    if stopping or self.stopping.wait(backoff):
                        return
                    backoff = min(backoff * 2, 5.0)
                    continue
                if stopping:
                    return
                if not published:
                    self.wake.wait(RESCAN_SECONDS)
        finally:
            if producer is not None:
                producer.close()
            os.close(lock)

    def _take_over(self, lock: int) -> bool:
        """Wait for the spool's publish lock, then clear what a crash left half-written; False if stopped first."""
        while not self._lock(lock):
            if self.stopping.wait(RESCAN_SECONDS):
                return False
        try:
            self.spool.clean_tmp()
        except OSError as exc:  # the leftovers stay, harmless: never a reason not to publish
            log.warning("stage=publish cannot clean %s: %s", self.spool.tmp, exc)
        return True

    def _lock(self, fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def drain(self, producer: Producer) -> int:
        """Publish every pending file in batches of whole files; return how many entries went out."""
        published, batch_bytes = 0, 0
        batch: list[SpoolEntry] = []
        for entries in self.spool.files():
            batch += entries
            batch_bytes += sum(len(entry.message) for entry in entries)
            if len(batch) >= BATCH or batch_bytes > BATCH_BYTES:
                published += self._publish(producer, batch)
                batch, batch_bytes = [], 0
        if batch:
            published += self._publish(producer, batch)
        return published

    def _publish(self, producer: Producer, batch: list[SpoolEntry]) -> int:
        refused = publish_entries(producer, batch, self.record_limit)
        for entry in refused:
            log.error(
                "queue_id=%s stage=publish Failed: larger than the bus's record limit (%s bytes); kept as %s",
                entry.envelope.queue_id,
                f"{self.record_limit:,}",
                self.spool.set_aside(entry),
            )
        for path in dict.fromkeys(entry.path for entry in batch):  # a file's entries are all in one batch
            self.spool.remove(path)
        for entry in batch:
            if entry not in refused:
                log.info("queue_id=%s stage=publish published", entry.envelope.queue_id)
        return len(batch)

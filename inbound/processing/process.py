"""Process: turn accepted mail into one webhook payload per stream, or a Blocked/Failed record.

Input: ``received`` records. Output, per stream the message is addressed to:
a ``messages`` record (key: stream, so a stream's messages stay in arrival
order; value: the webhook body in the stream's ``payload_format``, with its
content type, see ``processing/formats/``) and a
``processed`` event with the summary the activity log shows (sender, subject,
size, attachment count: after this stage the body is opaque), or a ``blocked`` event when the sender (envelope or From:)
matches the stream's ``block_senders`` or the stream's policy on the sender
verdicts and spam score says block (screen.py; the verdicts are computed once
per message, not per stream), or a ``failed`` event when the message
cannot be parsed or its stream is not configured here. A bad message never
stops the worker or the messages behind it: parsing and building the bodies
(``job.py``) run in a parse worker process with a time and a memory limit
(``isolation.py``, ``[processing]``), and a message that exceeds them or kills
the worker is Failed with the reason.

A stream this host has never had, for a message accepted since this process
started, is most likely one whose configuration reaches this host later than
another host's edge (hosts sharing a Kafka cluster, rolled out one by one; or
the processes of one host, which each read the file at HUP): its batch is
retried, as after any temporary error, until ``processing.unknown_stream_grace``
has passed since this process first met the stream; then its messages are
Failed ("not configured on this host"). So a batch holds its partition for at
most that grace (and a back-off) per such stream; the hold starts again only
after no message for the stream came for a grace. A stream removed by a reload
here less than a grace ago is Failed at once ("no longer configured"): the
removal is rolling out, as an addition would; one removed longer ago is met
as one never had, as it may be coming back (a removal rolled back, a stream
renamed back). A stream missing for a message accepted before this process
started is Failed at once ("not configured on this host"): the configuration
the message was accepted under is older than this one.

A stream removed over a restart (a Kubernetes ConfigMap is applied so, or an
operator edits the file and restarts) is one this process never had either,
while another host's edge, not yet restarted, still accepts mail for it. So
that it is Failed at once too, not held for the grace, the names of the
streams this host's process stage has ever had are kept in the data directory
(``DataDir.configured_streams``), added to at start and at each reload that
brings a new one; those missing from the table at start are removed ones,
removed as this process starts.
Without a data directory (the process role alone on Kafka runs stateless) or
with a new one, a missing stream waits.

Idempotent: a record processed twice yields the same ``delivery_id`` twice,
which the deliverer's outbox and the activity store both keep once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections import deque
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from .. import metrics
from ..bus import Producer, Record, record_size
from ..clock import SYSTEM, Clock, now_rfc3339, rfc3339
from ..config import ProcessingSettings, StreamSettings
from ..datadir import replace_file
from ..envelope import Envelope
from ..errors import TemporaryError
from ..events import Event, EventType, Summary, delivery_id, shown
from ..records import (
    EVENTS,
    MESSAGES,
    Bypass,
    MessageRecord,
    decode_bypass,
    decode_received,
    event_record,
    is_settled,
    message_record,
)
from ..routing import RoutingTable
from .isolation import InProcessParser, Parser
from .job import Outcome, ParseJob, Rendered, RenderRequest
from .screen import Decision, Screener, decide

log = logging.getLogger(__name__)

# The stream names kept as ever configured here, at most: 63 characters each at most, so under 1 MB.
# Past it the oldest removed ones are forgotten, and their mail waits the grace again.
KEPT_STREAM_NAMES = 10_000


class _Prepared(NamedTuple):
    """A record made ready to parse, and what its outcome is routed with."""

    job: ParseJob  # the message and its envelope with it
    streams: list[str]
    decisions: dict[str, Decision | None]
    bypass: Bypass | None


class Processor:
    def __init__(
        self,
        routing: RoutingTable,
        producer: Producer,
        streams: Sequence[StreamSettings],
        screener: Screener | None = None,
        *,
        parser: Parser | None = None,
        limits: ProcessingSettings | None = None,
        record_limit: int | None = None,
        clock: Clock = SYSTEM,
        configured_streams: Path | None = None,
    ) -> None:
        """*configured_streams*: the file of the names of the streams ever configured here, read and
        added to (see the module's docstring); None: none kept, a stream missing at start waits."""
        self.producer = producer
        self.record_limit = record_limit  # the bus's, for one record (None: no limit)
        self.screener = screener
        self.parser: Parser = parser or InProcessParser()
        self.limits = limits or ProcessingSettings()
        self.clock = clock
        self.started = rfc3339(clock.time())  # as an envelope's received_at, whose text order is time order
        # Streams never configured here, met in messages: (first, last) met, on the monotonic clock.
        self.unconfigured: dict[str, tuple[float, float]] = {}
        self.configured_streams = configured_streams
        self.configured = _configured_before(configured_streams)
        table = {s.name: s for s in streams}
        started = clock.monotonic()
        removed = {name: started for name in self.configured if name not in table}  # over a restart
        self.latest = (routing, table, removed)
        self.routing, self.streams, self.removed = self.latest
        self._keep_configured(table)

    def use(self, routing: RoutingTable, streams: Sequence[StreamSettings]) -> None:
        """Route and render with these streams from the next batch on (HUP; any thread).

        One value, taken up by :meth:`handle` on the worker's thread: a batch is processed
        with one stream table from start to end, never half and half. It carries the streams
        removed so far (and not added back), with when (monotonic).
        """
        _, current, removed = self.latest
        table = {s.name: s for s in streams}
        now = self.clock.monotonic()
        gone = {name: when for name, when in removed.items() if name not in table}
        self.latest = (routing, table, gone | {name: now for name in current if name not in table})
        self._keep_configured(table)

    def _keep_configured(self, table: Collection[str]) -> None:
        """Add the streams of *table* new to the names ever configured here, and keep them in the file."""
        added = sorted(set(table).difference(self.configured))
        if not added:
            return
        names = self.configured + added  # oldest first
        excess = len(names) - KEPT_STREAM_NAMES
        if excess > 0:
            forgotten = set([name for name in names if name not in table][:excess])
            names = [name for name in names if name not in forgotten]
        self.configured = names
        if self.configured_streams is None:
            return
        try:
            replace_file(self.configured_streams, json.dumps(names).encode() + b"\n")
        except OSError as exc:  # the stream is served all the same; only a removal over a restart would wait
            log.warning(
                "stage=process cannot keep the configured stream names in %s (mail for a stream removed over"
                " a restart would wait processing.unknown_stream_grace): %s",
                self.configured_streams,
                exc,
            )

    def handle(self, records: list[Record]) -> None:
        self.routing, self.streams, self.removed = self.latest
        self.await_configuration(records)
        prepared: deque[_Prepared] = deque()

        def jobs() -> Iterator[ParseJob]:
            for record in records:
                if (item := self.prepare(record)) is not None:
                    prepared.append(item)
                    yield item.job

        # The parser asks for the next job before it answers this one: records are prepared one ahead.
        # Closed at once if routing fails, so the job it sent ahead is not left with its worker.
        with contextlib.closing(self.parser.run_all(jobs())) as outcomes:
            for outcome in outcomes:
                self.finish(prepared.popleft(), outcome)
        self.producer.flush()

    def await_configuration(self, records: list[Record]) -> None:
        """Raise TemporaryError, so the batch comes again after a back-off, if a record is for a
        stream whose configuration may be on its way here (see the module's docstring); checked
        before anything of the batch is parsed or sent, so a retry sends nothing twice (each
        envelope is read twice for it: microseconds, against the parse of its message)."""
        for record in records:
            if is_settled(record):
                continue
            try:
                envelope, _ = decode_received(record.value)
                bypass = decode_bypass(record)
            except (ValueError, KeyError, TypeError):
                continue  # prepare() logs it and skips it
            for stream in _streams(envelope, bypass):
                if stream not in self.streams and self._may_come(stream, envelope):
                    raise TemporaryError(
                        f"queue_id={envelope.queue_id} stream {stream!r} is not configured on this host: "
                        "its configuration behind?"
                    )

    def _may_come(self, stream: str, envelope: Envelope) -> bool:
        """Whether *stream*, missing from the table, may yet be configured here: not removed less than
        the grace ago, for a message accepted since this process started, and met first less than the
        grace ago."""
        grace = self.limits.unknown_stream_grace
        now = self.clock.monotonic()
        if now - self.removed.get(stream, -math.inf) < grace or envelope.received_at < self.started:
            return False
        first, last = self.unconfigured.get(stream, (now, now))
        if now - first >= grace and now - last > grace:  # given up on, then not met for a grace: a new rollout
            first = now
        self.unconfigured[stream] = (first, now)
        return now - first < grace

    def prepare(self, record: Record) -> _Prepared | None:
        """The parse job of a ``received`` record, with what routing its outcome needs; None if unreadable
        or settled (a message final before ``inbound recover`` put it back, to be read, not processed)."""
        if is_settled(record):
            return None
        try:
            envelope, message = decode_received(record.value)
            bypass = decode_bypass(record)
        except (ValueError, KeyError, TypeError) as exc:
            # Without an envelope there is no stream to record it under; it stays on the bus,
            # and `inbound recover` / the logs are where an operator finds it.
            log.error("stage=process skipping unreadable received record at offset %d: %s", record.offset, exc)
            return None
        streams = _streams(envelope, bypass)
        screening = self.screener.screen(envelope, message) if self.screener else None
        decisions: dict[str, Decision | None] = {}
        for stream in streams:
            settings = self.streams.get(stream)
            if settings is not None and screening is not None and self.screener is not None:
                decisions[stream] = decide(screening, settings, self.screener.hostname)
        job = ParseJob(
            message,
            envelope,
            tuple(
                RenderRequest(self.streams[s], delivery_id(envelope.queue_id, s), decisions.get(s))
                for s in streams
                if s in self.streams
            ),
            self.limits,
        )
        return _Prepared(job, streams, decisions, bypass)

    def finish(self, item: _Prepared, outcome: Outcome) -> None:
        job, streams, decisions, bypass = item
        envelope, message = job.envelope, job.raw
        if outcome.peak_rss:  # measured for big messages only (ParseJob.measures_peak)
            log.info(
                "queue_id=%s stage=process parsed %d bytes: parse worker peak RSS %d MiB (parse_memory_limit %d MiB)",
                envelope.queue_id,
                len(message),
                outcome.peak_rss >> 20,
                job.memory_limit >> 20,
            )
        for stream in streams:
            self.route(envelope, message, stream, outcome, decision=decisions.get(stream), bypass=bypass)

    def route(
        self,
        envelope: Envelope,
        raw: bytes,
        stream: str,
        outcome: Outcome,
        *,
        decision: Decision | None,
        bypass: Bypass | None,
    ) -> None:
        """One stream's outcome; a *bypass* (an operator's ``inbound bypass``) skips the block rules and policies."""
        did = delivery_id(envelope.queue_id, stream)
        generation = bypass.generation if bypass is not None else 0
        summary = Summary(
            envelope.received_at,
            shown(outcome.sender or envelope.mail_from),
            tuple(r.address for r in envelope.recipients_of(stream)),
            shown(outcome.subject) if outcome.subject is not None else None,
            len(raw),
            outcome.attachments,
            decision.verdicts() if decision is not None else None,
        )

        def event(kind: EventType, why: str | None = None) -> None:
            why = shown(why) if why else None  # a reason may quote the message (a parser's error, a sender)
            ev = Event(kind, did, envelope.queue_id, stream, now_rfc3339(), generation, summary=summary, reason=why)
            key, value = event_record(ev)
            self.producer.send(EVENTS, value, key=key)
            metrics.PROCESSED.labels(stream, kind.value).inc()
            log.info(
                "queue_id=%s stream=%s stage=process %s%s",
                envelope.queue_id,
                stream,
                kind.value,
                f": {why}" if why else "",
            )

        if outcome.failure is not None or outcome.bodies is None:
            event(EventType.FAILED, outcome.failure)
            return
        senders = [envelope.mail_from] + ([outcome.sender] if outcome.sender else [])
        blocked = next((s for s in senders if self.routing.is_blocked(stream, s)), None)
        if blocked is not None and bypass is None:
            event(EventType.BLOCKED, f"sender {blocked} is in block_senders")
            return
        body = outcome.bodies.get(stream)
        if body is None:  # not in the table; await_configuration() let it through
            if stream in self.removed:
                event(EventType.FAILED, f"stream {stream!r} is no longer configured")
            else:
                event(EventType.FAILED, f"stream {stream!r} is not configured on this host")
            return
        if decision is not None and decision.block_reason and bypass is None:
            event(EventType.BLOCKED, decision.block_reason)
            return
        if not isinstance(body, Rendered):
            event(EventType.FAILED, body)
            return
        key, value, headers = message_record(MessageRecord(did, stream, generation, body.content_type, body.body))
        if self.record_limit is not None and (size := record_size(key, value, headers)) > self.record_limit:
            # The broker refuses such a record every time it is sent: retried, it would hold this
            # stage on this message for ever, with a 250 answered for it.
            event(
                EventType.FAILED, f"its payload ({size:,} bytes) is larger than the bus takes ({self.record_limit:,})"
            )
            return
        self.producer.send(MESSAGES, value, key=key, headers=headers)
        event(EventType.PROCESSED)


def _streams(envelope: Envelope, bypass: Bypass | None) -> list[str]:
    """The streams a ``received`` record is processed for: an operator's bypass names its one."""
    return [bypass.stream] if bypass is not None else list(envelope.streams())


def _configured_before(path: Path | None) -> list[str]:
    """The names of the streams ever configured here, oldest first, as kept in *path*; none if
    there is no file (a new data directory) or it cannot be read (logged: such a stream waits)."""
    if path is None:
        return []
    try:
        names = json.loads(path.read_bytes())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        log.warning("stage=process cannot read the configured stream names in %s: %s", path, exc)
        return []
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        log.warning("stage=process %s is not a list of stream names: ignored", path)
        return []
    return names

"""The activity store interface, and the merge rules every backend shares.

The store is a *view* of the bus: ``inbound`` rebuilds it by re-applying every
event, and the record stage applies them at least once, from two topics with
no ordering between them. So the stored state must be a function of the *set*
of events applied -- not of their order, nor of how often each came.

That is achieved by making every stored field the maximum of a total order
(a join-semilattice), which is commutative, associative and idempotent:

* **status** (with its ``generation``, ``reason`` and ``next_attempt_at``)
  comes from the event with the greatest :func:`event_key`: generation first,
  then the status rank (queued < processed < retrying < delivered/failed/
  blocked), then a fixed priority per event type, then the event's time and
  text. A manual retry (``retry_requested``, generation g+1) therefore beats
  anything of generation g, and stale events never move a status back.
* **Conflict rule** for two different events of the same (generation, rank):
  ``delivered`` wins over ``failed``, which wins over ``blocked``. Delivered
  is the one fact the customer can observe (their endpoint has the message);
  failed still allows ``inbound retry``, blocked does not. At rank 0,
  ``retry_requested`` wins over ``queued``, which wins over the status an
  ``attempt`` implies (an attempt proves its generation was at least queued).
* **summary** (received_at, from, to, size, attachment count) comes from the
  greatest-keyed event that carries one, **subject** from the greatest-keyed event with a non-null
  subject, **payload** from the greatest-keyed event with a payload. So a
  lower event still fills in what is missing, and never replaces what a higher
  one said.
* **attempts** are keyed by (delivery_id, generation, number); a repeated
  attempt keeps the later one (by time, then content).
* ``updated_at`` is the latest ``at`` of any event applied -- never the wall
  clock at apply time, or a replay would change the state.

One thing a store keeps is not a view of the bus: the generations operator
actions have *claimed* (:meth:`ActivityStore.claim_generations`). An action
starts generation g+1 of a delivery it read at g, and writes it to the bus;
the store shows g+1 only once the record stage has applied it. Two actions
in that gap both took g+1, and the deliverer kept one of them. A claim is a
compare-and-set beside the merged state, which ``apply()`` never reads or
writes (so the merge stays order-free and idempotent) and ``reset()`` leaves
alone (a rebuild must not hand out again a generation already on the bus).

Ties beyond the semantic parts are broken by the canonical JSON of the value,
so even inconsistent duplicates (say, a payload built twice) settle on one
winner whatever the order.
"""

from __future__ import annotations

import builtins
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .. import jsoncodec
from ..events import EVENT_STATUS, Attempt, Event, EventType, Status
from ..records import encode_attempt, encode_summary

#: A precedence key: compared as a tuple, greater wins. JSON-encodable, so backends store it as text.
Key = tuple[int | str, ...]

#: Where a record stands in the newest-first order: (received_at or "", delivery_id). The paging cursor.
Position = tuple[str, str]

# Unique per type, consistent with Status.rank: it only decides between events of the same (generation, rank).
# Events about a whole stream (inbound.events.STREAM_EVENTS, the alerts) have no delivery: the record
# stage leaves them out, so they never reach a store and have no place here.
_PRIORITY = {
    EventType.ATTEMPT: 0,
    EventType.QUEUED: 1,
    EventType.RETRY_REQUESTED: 2,
    EventType.PROCESSED: 3,
    EventType.RETRYING: 4,
    EventType.BLOCKED: 5,
    EventType.FAILED: 6,
    EventType.DELIVERED: 7,
}


@dataclass(frozen=True, slots=True)
class RecordedAttempt(Attempt):
    """An :class:`Attempt` as stored: it also says which generation it belongs to."""

    generation: int = 0


@dataclass(frozen=True, slots=True)
class ActivityRecord:
    """What the activity log shows for one delivery (one message for one stream)."""

    delivery_id: str
    queue_id: str
    stream: str
    status: Status
    generation: int
    received_at: str | None  # None until an event with a summary has been applied
    mail_from: str | None
    to: tuple[str, ...]
    subject: str | None
    size: int | None  # bytes as received, once processed
    attachments: int | None  # how many, once processed
    verdicts: dict[str, Any] | None  # sender authentication, spam score, flags (events.Summary.verdicts)
    reason: str | None  # why it failed, was blocked, or is being retried
    next_attempt_at: str | None  # while retrying
    updated_at: str  # the latest `at` of any event applied
    payload: bytes | None  # the webhook body, opaque; always None in list(): it can be megabytes; use get()
    payload_type: str | None  # the body's content type
    attempts: tuple[RecordedAttempt, ...]  # ordered by generation then number
    # The process stage made a webhook body for it (see payload_made()): stored, or past bus.retention.
    payload_made: bool

    @property
    def position(self) -> Position:
        """The cursor for the page after this record (records without a summary sort last)."""
        return (self.received_at or "", self.delivery_id)

    def verdict_lines(self) -> list[tuple[str, str]]:
        """The verdicts in words, a (name, text) pair each, as the CLI and the web page show them."""
        verdicts = self.verdicts or {}
        auth, spam = verdicts.get("auth") or {}, verdicts.get("spam") or {}
        lines: list[tuple[str, str]] = []
        if auth:
            spf, dmarc = auth.get("spf") or {}, auth.get("dmarc") or {}
            signatures = auth.get("dkim") or []
            dkim = "; ".join(f"{d.get('result')} (d={d.get('domain')} s={d.get('selector')})" for d in signatures)
            policy = f", policy {dmarc['policy']}" if dmarc.get("policy") else ""
            lines += [
                ("SPF", f"{spf.get('result')} ({spf.get('domain') or 'no domain'})"),
                ("DKIM", dkim or "none (no signature)"),
                ("DMARC", f"{dmarc.get('result')} ({dmarc.get('domain') or 'no From domain'}{policy})"),
                ("ARC", str((auth.get("arc") or {}).get("result"))),
            ]
        if "score" in spam:
            judged = "spam" if spam.get("is_spam") else "not spam"
            rules = ", ".join(str(r) for r in spam.get("rules") or []) or "no rules"
            lines.append(("spam", f"{spam['score']} of {spam.get('threshold')} ({judged}): {rules}"))
        elif spam:
            lines.append(("spam", f"not scored ({spam.get('status')})"))
        if verdicts.get("flags"):
            lines.append(("flags", ", ".join(str(f) for f in verdicts["flags"])))
        return lines

    def to_json(self) -> dict[str, Any]:
        """The record as the CLI's ``--json`` and the API show it; the payload is left to the caller."""
        return {
            "delivery_id": self.delivery_id,
            "queue_id": self.queue_id,
            "stream": self.stream,
            "status": self.status.value,
            "generation": self.generation,
            "received_at": self.received_at,
            "from": self.mail_from,
            "to": list(self.to),
            "subject": self.subject,
            "size": self.size,
            "attachments": self.attachments,
            "verdicts": self.verdicts,
            "reason": self.reason,
            "next_attempt_at": self.next_attempt_at,
            "updated_at": self.updated_at,
            # whole milliseconds: the clock's fractions are noise to a reader
            "attempts": [
                {"generation": a.generation, **encode_attempt(a), "latency_ms": round(a.latency_ms)}
                for a in self.attempts
            ],
        }


@dataclass(frozen=True, slots=True)
class Claimed:
    """What :meth:`ActivityStore.claim_generations` reserved, and what it would not."""

    generations: dict[str, int]  # delivery id -> the generation now the caller's alone
    refused: dict[str, str]  # delivery id -> why not, in words


class ActivityStore(Protocol):
    """A queryable view of the ``events`` and ``messages`` topics.

    ``tests/test_activity_store.py`` is the contract every backend passes.
    Every failure to read or write is raised as :class:`inbound.errors.StoreError`
    (temporary: the record stage does not commit its offsets and tries again).
    """

    def apply(self, events: Sequence[Event]) -> None:
        """Merge *events* in one transaction: all or none. Idempotent and order-free (see module doc)."""

    def get(self, delivery_id: str) -> ActivityRecord | None:
        """The record with its attempts and payload, or None if no event for it was applied."""

    def list(
        self,
        *,
        status: Status | None = None,
        stream: str | None = None,
        queue_id: str | None = None,
        text: str | None = None,
        sender: str | None = None,
        recipient: str | None = None,
        since: str | None = None,
        until: str | None = None,
        after: Position | None = None,
        limit: int = 100,
    ) -> builtins.list[ActivityRecord]:
        """Records newest first (received_at, then delivery_id, descending), without payloads.

        Every criterion given must hold (see :class:`Criteria`); *after* is a cursor: the
        :attr:`ActivityRecord.position` of the last record of the previous page.
        """

    def count_by_day(self, *, since: str, stream: str | None = None) -> dict[tuple[str, Status], int]:
        """How many records received since *since* have each status, per UTC day (``YYYY-MM-DD``)."""

    def count_by_status(self) -> dict[Status, int]:
        """How many records have each status; every status is present, possibly with 0."""

    def oldest_waiting(self) -> str | None:
        """``received_at`` of the oldest delivery not yet final (queued, processed, retrying), or None."""

    def claim_generations(self, seen: Mapping[str, int], *, now: str, hold_until: str) -> Claimed:
        """Reserve for an operator action the next generation of each delivery in *seen* (its id -> the
        generation the action read it at), in one transaction.

        Each reserved generation is greater than any recorded or reserved before, so two actions
        never share one. A delivery is refused when it is no longer at the generation read (the
        action's checks are stale), or while an earlier claim is not recorded yet and held (until
        *hold_until*, or :meth:`release_claims`): a second action then would replace the first in
        the deliverer's queue. Times are RFC 3339 UTC, compared as text.
        """

    def release_claims(self, claimed: Mapping[str, int]) -> None:
        """Stop holding these claims (the action could not write them to the bus); their generations stay used."""

    def reset(self) -> None:
        """Forget every delivery, so that a rebuild can re-apply the whole bus (claims stay: see module doc)."""

    def close(self) -> None: ...


def status_of(event: Event) -> Status:
    """The status an event moves its delivery to; an attempt implies its generation is at least queued."""
    return EVENT_STATUS[event.type] or Status.QUEUED


def event_key(event: Event) -> Key:
    """How far *event* moves its delivery: the status of the greatest key wins."""
    status = status_of(event)
    return (
        event.generation,
        status.rank,
        _PRIORITY[event.type],
        event.at,
        event.reason or "",
        event.next_attempt_at or "",
    )


def payload_made(summary_key: Key | None) -> bool:
    """Whether the process stage made a webhook body for a delivery whose summary has *summary_key*.

    It sends a ``processed`` event, summary and all, only with the body's ``messages`` record, and
    every other event it sends (failed, blocked) outranks it: so the summary is a processed one
    exactly when a body was made. Known from ``events``, kept for ever, when a store rebuilt after
    ``bus.retention`` has no body: "past retention" is told from "never parsed".
    """
    return summary_key is not None and summary_key[1] == Status.PROCESSED.rank


def attempt_key(attempt: Attempt) -> Key:
    """Which of two versions of the same attempt (a POST repeated after a crash) is kept: the later."""
    return (attempt.at, canonical(encode_attempt(attempt)))


def canonical(value: Any) -> str:
    """One text per JSON value, whatever its key order: the last tie-breaker.

    ASCII-only, so that lone surrogates (undecodable header bytes) survive hashing and storage.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def encode_key(key: Key | None) -> str | None:
    return None if key is None else jsoncodec.dumps(list(key)).decode()


def decode_key(text: str | None) -> Key | None:
    return None if text is None else tuple(jsoncodec.loads(text))


@dataclass(slots=True)
class Merged:
    """One delivery's fields plus the keys that decided them: what a backend stores per delivery.

    Backends load it, :meth:`add` each event, and write it back; the payload
    itself stays in the backend (it can be large) and is replaced only when
    :meth:`add` says so.
    """

    delivery_id: str
    queue_id: str
    stream: str
    status: Status = Status.QUEUED
    generation: int = 0
    reason: str | None = None
    next_attempt_at: str | None = None
    status_key: Key = ()  # () is below every event's key
    received_at: str | None = None
    mail_from: str | None = None
    to: tuple[str, ...] = ()
    size: int | None = None
    attachments: int | None = None
    verdicts: dict[str, Any] | None = None
    summary_key: Key | None = None
    subject: str | None = None
    subject_key: Key | None = None
    payload_key: Key | None = None
    payload_type: str | None = None
    updated_at: str = ""

    @classmethod
    def start(cls, event: Event) -> Merged:
        """An empty state for *event*'s delivery (call :meth:`add` with the event next)."""
        return cls(event.delivery_id, event.queue_id, event.stream)

    def add(self, event: Event) -> bool:
        """Merge one event in; True when its payload replaces the stored one."""
        # Both are part of delivery_id, so they agree; min() keeps even a bad producer order-free.
        self.queue_id = min(self.queue_id, event.queue_id)
        self.stream = min(self.stream, event.stream)
        self.updated_at = max(self.updated_at, event.at)
        key = event_key(event)
        if key > self.status_key:
            self.status_key = key
            self.status = status_of(event)
            self.generation = event.generation
            self.reason = event.reason
            self.next_attempt_at = event.next_attempt_at
        summary = event.summary
        if summary is not None:
            summary_key = (*key, canonical(encode_summary(summary)))
            if self.summary_key is None or summary_key > self.summary_key:
                self.summary_key = summary_key
                self.received_at, self.mail_from, self.to = summary.received_at, summary.mail_from, summary.to
                self.size, self.attachments, self.verdicts = summary.size, summary.attachments, summary.verdicts
            if summary.subject is not None:
                subject_key = (*key, summary.subject)
                if self.subject_key is None or subject_key > self.subject_key:
                    self.subject_key, self.subject = subject_key, summary.subject
        if event.payload is not None:
            payload_key = (*key, event.payload_type or "", hashlib.sha256(event.payload).hexdigest())
            if self.payload_key is None or payload_key > self.payload_key:
                self.payload_key, self.payload_type = payload_key, event.payload_type
                return True
        return False

"""Backlog you can see: what waits at each stage, and for how long.

Read-only. The spool and the outbox are this host's (each SMTP edge and each
deliverer has its own); bus lag is the cluster's, per consumer group; the age
of the oldest waiting message comes from the spool and the activity store
(every message not yet final, whichever stage holds it). A spamd outage is
the one this host's processor noted (processing/spam.py).

A bus that cannot be read (a Kafka outage) leaves out what only it knows, the
lag and the pauses, and says why: the rest, the spool growing meanwhile first
of all, is what an operator watches during the outage.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ..activity import ActivityStore
from ..bus import Bus
from ..config import Settings
from ..control import read_pauses
from ..delivery.outbox import Outbox
from ..edge.spool import count_entries
from ..errors import BusError
from ..processing.spam import read_outage

# (consumer group, topic) pairs whose lag is the backlog of a stage.
GROUPS = (("process", "received"), ("deliver", "messages"), ("record", "messages"), ("record", "events"))


@dataclass(frozen=True, slots=True)
class StreamBacklog:
    stream: str
    waiting: int  # deliveries in the outbox: first attempt due, or waiting for a retry
    oldest_age: float | None  # seconds the longest-waiting one has waited
    paused: bool
    held_for: float | None = None  # seconds its endpoint has been down (its deliveries held); None: up


@dataclass(frozen=True, slots=True)
class Status:
    spool_entries: int
    spool_oldest_age: float | None
    lag: dict[str, int]  # "group/topic" -> records not yet committed
    streams: tuple[StreamBacklog, ...]
    everything_paused: bool
    oldest_waiting_age: float | None  # the oldest message not yet final, wherever it waits
    spamd_down_for: float | None = None  # seconds this host's processor has gone without spamd
    spamd_problem: str | None = None  # what it last got from spamd
    bus_error: str | None = None  # why the bus could not be read: lag and pauses unknown (empty, not paused)

    @property
    def backlog(self) -> int:
        """Everything still to go through some stage (what a progress bar counts down)."""
        return self.spool_entries + sum(self.lag.values()) + sum(s.waiting for s in self.streams)


def collect(settings: Settings, bus: Bus, store: ActivityStore | None = None) -> Status:
    now = time.time()

    def age(since: float) -> float:
        """Seconds since *since*: none for a time ahead, which only a step back of the clock makes."""
        return max(0.0, now - since)

    spool = settings.data.spool_new
    waiting_files = _modified(spool.iterdir()) if spool.is_dir() else {}
    mtimes = list(waiting_files.values())
    bus_error = None
    try:
        lag = {f"{group}/{topic}": bus.lag(group, topic) for group, topic in GROUPS}
        pauses = read_pauses(bus)
    except BusError as exc:
        lag, pauses, bus_error = {}, {}, str(exc)
    streams = []
    outbox_path = settings.data.outbox
    outbox = Outbox(outbox_path) if outbox_path.exists() else None
    try:
        for stream in settings.streams:
            waiting = outbox.waiting(stream.name) if outbox else None
            oldest = waiting.oldest_added_at if waiting else None
            held_since = outbox.held_since(stream.name) if outbox else None
            streams.append(
                StreamBacklog(
                    stream.name,
                    waiting.count if waiting else 0,
                    age(oldest) if oldest is not None else None,
                    pauses.get(stream.name, False),
                    age(held_since) if held_since is not None else None,
                )
            )
    finally:
        if outbox:
            outbox.close()
    oldest_record = store.oldest_waiting() if store is not None else None
    outage = read_outage(settings.data.spamd_outage)
    waiting_since = [age(m) for m in mtimes] + ([age(_epoch(oldest_record))] if oldest_record else [])
    return Status(
        oldest_waiting_age=max(waiting_since, default=None),
        spool_entries=sum(count_entries(path) for path in waiting_files),
        spool_oldest_age=age(min(mtimes)) if mtimes else None,
        lag=lag,
        streams=tuple(streams),
        everything_paused=pauses.get("*", False),
        spamd_down_for=age(outage[0]) if outage else None,
        spamd_problem=outage[1] if outage else None,
        bus_error=bus_error,
    )


def _epoch(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def _modified(paths: Iterable[Path]) -> dict[Path, float]:
    """When each file was last written; a file the publisher removed meanwhile is not there any more."""
    found = {}
    for path in paths:
        try:
            found[path] = path.stat().st_mtime
        except FileNotFoundError:
            continue
    return found

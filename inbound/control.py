"""Operator controls every process obeys: pause and resume (maintenance mode).

The state lives on the bus, in the ``control`` topic (one record per change,
keyed by stream: see :mod:`inbound.records`), so
every process of every role sees the same thing, a restarted process included,
and the last record of a key wins. ``inbound pause`` writes it; each process
reads what is new in the topic every ``REFRESH_SECONDS``.

What a pause holds: a pause of everything (``inbound pause``) stops the
processors and the deliverers -- accepted mail waits on the bus and shows as
*queued*. A pause of one stream (``--stream``) holds that stream's deliveries:
its messages are parsed and wait as *processed*. The SMTP edge keeps accepting
in both cases; ``inbound resume`` lets the backlog go.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from .bus import Bus, Follower, Record
from .clock import now_rfc3339
from .errors import InboundError
from .records import CONTROL, Pause, decode_pause, pause_record

log = logging.getLogger(__name__)

REFRESH_SECONDS = 1.0
ALL = "*"


def set_paused(bus: Bus, stream: str | None, paused: bool) -> None:
    key, value = pause_record(Pause(stream or ALL, paused, now_rfc3339()))
    producer = bus.producer()
    try:
        producer.send(CONTROL, value, key=key)
        producer.flush()
    finally:
        producer.close()


def read_pauses(bus: Bus) -> dict[str, bool]:
    """Stream name (or ``*``) -> paused, from the whole control topic (last record wins)."""
    state: dict[str, bool] = {}
    _apply(state, bus.read_all(CONTROL))
    return state


def _apply(state: dict[str, bool], records: Iterable[Record]) -> None:
    for record in records:
        try:
            pause = decode_pause(record.value)
        except (ValueError, KeyError, TypeError) as exc:
            log.error("ignoring unreadable control record at offset %d: %s", record.offset, exc)
            continue
        state[pause.stream] = pause.paused


class Control:
    """This process's view of the control topic, refreshed on a thread."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.pauses: dict[str, bool] = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="control", daemon=True)
        # Reads only what is new each time; after an error, a new one reads the topic again from the start.
        self.follower: Follower | None = None

    def refresh(self) -> None:
        # Changes are applied to a copy, then published whole: other threads read self.pauses meanwhile.
        if self.follower is None:
            self.follower, pauses = self.bus.follow(CONTROL), {}
        else:
            pauses = dict(self.pauses)
        try:
            _apply(pauses, self.follower.read_new())
        except InboundError:
            self._drop_follower()
            raise
        if pauses != self.pauses:
            log.info("control: paused=%s", sorted(k for k, v in pauses.items() if v) or "nothing")
        self.pauses = pauses

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.stopping.set()
        if self.thread.ident is not None:  # started
            self.thread.join(timeout)
        if not self.thread.is_alive():
            self._drop_follower()

    def _drop_follower(self) -> None:
        follower, self.follower = self.follower, None
        if follower is not None:
            follower.close()

    def _run(self) -> None:
        while not self.stopping.wait(REFRESH_SECONDS):
            try:
                self.refresh()
            except InboundError as exc:
                log.warning("control: cannot read the control topic, keeping the last state: %s", exc)
            except Exception:
                # A bug, not an outage: loudly, and the topic is read afresh next time (a dead thread
                # would keep this process's pauses as they are until a restart).
                log.exception("control: unexpected error reading the control topic, keeping the last state")
                self._drop_follower()

    def everything_paused(self) -> bool:
        return self.pauses.get(ALL, False)

    def stream_paused(self, stream: str) -> bool:
        return self.everything_paused() or self.pauses.get(stream, False)

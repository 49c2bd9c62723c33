"""The loop every bus-consuming stage shares: poll, handle, make durable, commit.

At-least-once: a batch's offsets are committed only after the stage's output
is durable (its producer flushed, its store written). If handling fails with a
temporary error, the consumer rewinds, so the same records come again after a
back-off; nothing is skipped. A stage's ``handle`` must therefore be
idempotent -- each stage says how it is.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from .bus import BATCH, Bus, Record
from .errors import InboundError

log = logging.getLogger(__name__)

BACKOFF_START = 0.2
BACKOFF_MAX = 5.0


class ConsumerWorker:
    """Runs ``handle(records)`` for each batch of *topics* in consumer group *group*, on a thread."""

    def __init__(
        self,
        name: str,
        bus: Bus,
        *,
        group: str,
        topics: Sequence[str],
        handle: Callable[[list[Record]], None],
        max_records: int = BATCH,
        linger: float = 0.0,
        hold: Callable[[], bool] = lambda: False,
    ) -> None:
        self.name = name
        self.bus = bus
        self.group = group
        self.topics = topics
        self.handle = handle
        self.max_records = max_records
        # Seconds to wait for more records after a batch that is not full (Kafka's fetch.max.wait.ms):
        # for a stage off the delivery path, fewer and larger batches, each one transaction.
        self.linger = linger
        self.hold = hold  # while true, consume nothing (a pause)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the batch in hand (and commit it), then return."""
        self.stopping.set()
        self.thread.join(timeout)

    def _run(self) -> None:
        backoff = BACKOFF_START
        consumer = None
        while not self.stopping.is_set():
            try:
                if self.hold():
                    self.stopping.wait(0.2)
                    continue
                if consumer is None:
                    consumer = self.bus.consumer(self.group, self.topics)
                records = consumer.poll(timeout=0.5, max_records=self.max_records)
                if records and self.linger and len(records) < self.max_records:
                    self.stopping.wait(self.linger)
                    records += consumer.poll(timeout=0, max_records=self.max_records - len(records))
                if records and self.hold():  # paused while we were waiting: they come again later
                    consumer.rewind()
                    continue
                if records:
                    self.handle(records)
                    consumer.commit()
                backoff = BACKOFF_START
            except InboundError as exc:
                log.warning("stage=%s will retry in %.1fs: %s", self.name, backoff, exc)
                if consumer is not None:
                    try:
                        consumer.rewind()
                    except InboundError:
                        consumer.close()
                        consumer = None
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
            except Exception:
                # A bug, not an outage: log loudly, drop the consumer (its uncommitted records come
                # again to the next one) and go on.
                log.exception("stage=%s unexpected error; the batch will be retried", self.name)
                if consumer is not None:
                    consumer.close()
                    consumer = None
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
        if consumer is not None:
            consumer.close()

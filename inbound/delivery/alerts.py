"""Alerts when delivery stops: nobody may lose mail silently.

Two conditions, checked by the deliverer on every dispatch pass (time comes
from its clock):

* a stream's endpoint has been **down** (:mod:`.health`) for
  ``webhooks.alert_after``: an ``endpoint_failing`` event naming the last
  error, then ``endpoint_recovered`` when it answers again;
* a stream with ``silence_alert_after`` has received **no mail** for that long:
  ``stream_silent`` (once per silence; the next message ends it).

How long is measured on the monotonic clock (the ``now`` the methods are given),
and only shown on the wall clock (``wall``): on the wall clock, a step back of an
hour sent ``endpoint_failing`` 75 minutes into an outage instead of 15.

Each alert is an event on the events topic (about the stream, not a delivery),
a log line (ERROR for the bad news), and, if ``webhooks.alert_url`` is set, a
Standard Webhooks-signed POST of the event to it (``alert_signing_secret``),
sent as a delivery is (:meth:`.webhook.WebhookClient.send`: one deadline, the
answer capped and never unpacked, no redirect, the guarded transport). An
alert that cannot be POSTed is logged and not retried: the event and the log
have it.

The log line is written at once; the event and the POST go out on a thread of
their own, in order, so that a slow alert endpoint or bus holds up neither the
dispatcher nor a stream's attempt. Its queue is bounded: an alert that finds
it full is logged as not sent, never dropped silently.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable

from ..clock import rfc3339
from ..config import Settings
from ..errors import InboundError
from ..events import Event, EventType
from ..records import EVENTS, encode_event, event_record
from .signing import signed_headers
from .webhook import WebhookClient

log = logging.getLogger(__name__)

Publish = Callable[[list[tuple[str, bytes, bytes]]], None]

# Alerts waiting for the sender. A few per stream and outage: only a sender stuck far longer than
# webhooks.timeout on each alert fills it.
ALERT_QUEUE = 1000


class Alerter:
    def __init__(
        self, settings: Settings, publish: Publish, poster: WebhookClient, now: float, capacity: int = ALERT_QUEUE
    ) -> None:
        self.settings = settings
        self.publish = publish
        self.poster = poster
        self.outgoing: queue.Queue[Event | None] = queue.Queue(capacity)  # None: the sender ends
        self.sender = threading.Thread(target=self._send_queued, name="deliver-alerts", daemon=True)
        self.failing: set[str] = set()  # streams an endpoint_failing went out for
        self.silent: set[str] = set()
        self.last_mail = {s.name: now for s in settings.streams}  # silence counts from start-up
        self.last_error: dict[str, str] = {}

    def use(self, settings: Settings, now: float) -> None:
        """The reloaded streams (HUP): a new stream's silence counts from now."""
        for stream in settings.streams:
            self.last_mail.setdefault(stream.name, now)
        self.settings = settings

    def mail(self, stream: str, now: float) -> None:
        self.last_mail[stream] = now
        self.silent.discard(stream)

    def failed(self, stream: str, error: str) -> None:
        self.last_error[stream] = error

    def check(self, down_since: dict[str, float | None], now: float, wall: float) -> list[Event]:
        """What is due: endpoints down for ``alert_after``, streams silent too long (send with :meth:`send`).

        *wall* is the wall clock at *now*: the alerts' times as they are shown.
        """
        due = []
        hooks = self.settings.webhooks
        for stream in self.settings.streams:
            since = down_since.get(stream.name)
            if since is not None and now - since >= hooks.alert_after and stream.name not in self.failing:
                self.failing.add(stream.name)
                last_error = self.last_error.get(stream.name, "-")
                reason = f"endpoint down since {rfc3339(wall - (now - since))}; last error: {last_error}"
                due.append(_alert(EventType.ENDPOINT_FAILING, stream.name, reason, wall))
            silence = stream.silence_alert_after
            quiet = now - self.last_mail.get(stream.name, now)
            if silence is not None and quiet >= silence and stream.name not in self.silent:
                self.silent.add(stream.name)
                due.append(_alert(EventType.STREAM_SILENT, stream.name, f"no mail for {quiet:.0f}s", wall))
        return due

    def recovered(self, stream: str, wall: float) -> list[Event]:
        if stream not in self.failing:
            return []
        self.failing.discard(stream)
        return [_alert(EventType.ENDPOINT_RECOVERED, stream, "the endpoint answers again", wall)]

    def start(self) -> None:
        self.sender.start()

    def stop(self, timeout: float) -> None:
        """Send what is queued, then end the sender; give up after *timeout* (the thread is a daemon)."""
        deadline = time.monotonic() + timeout
        with contextlib.suppress(queue.Full):  # the sender is stuck: joining it is all there is to do
            self.outgoing.put(None, timeout=timeout)
        self.sender.join(max(0.0, deadline - time.monotonic()))
        if self.sender.is_alive():
            left = self.outgoing.qsize()
            log.error("stage=deliver %d alerts not sent: the alert sender did not finish in time", left)

    def send(self, alerts: list[Event]) -> None:
        """Log *alerts* and queue them for the bus and ``alert_url``; called outside the deliverer's lock."""
        for event in alerts:
            kind, stream = event.type, event.stream
            level = logging.INFO if kind is EventType.ENDPOINT_RECOVERED else logging.ERROR
            log.log(level, "stream=%s stage=deliver alert=%s %s", stream, kind.value, event.reason)
            try:
                self.outgoing.put_nowait(event)
            except queue.Full:
                log.error(
                    "stream=%s stage=deliver alert=%s not sent to the bus nor alert_url: %d alerts wait already",
                    stream,
                    kind.value,
                    self.outgoing.qsize(),
                )

    def _send_queued(self) -> None:
        while (event := self.outgoing.get()) is not None:
            try:
                self._publish_and_post(event)
            except Exception:
                # A bug, not an outage (those are logged below): loudly, and the next alert goes out.
                log.exception("stream=%s stage=deliver alert=%s not sent", event.stream, event.type.value)

    def _publish_and_post(self, event: Event) -> None:
        kind, stream = event.type, event.stream
        try:
            self.publish([(EVENTS, *event_record(event))])
        except InboundError as exc:  # the bus is down: the log line stands; delivery goes on
            log.warning("stream=%s stage=deliver alert=%s not on the bus: %s", stream, kind.value, exc)
        url, secret = self.settings.webhooks.alert_url, self.settings.webhooks.alert_signing_secret
        if url is None or secret is None:
            return
        body = encode_event(event)
        headers = signed_headers((secret,), f"alert-{stream}-{kind.value}-{event.at}", body, "application/json")
        error = self.poster.send(url, body, headers).error
        if error is not None:
            log.warning("stream=%s stage=deliver alert=%s not posted to alert_url: %s", stream, kind.value, error)


def _alert(kind: EventType, stream: str, reason: str, wall: float) -> Event:
    return Event(kind, "", "", stream, rfc3339(wall), reason=reason)

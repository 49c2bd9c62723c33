"""Alerts when delivery stops: nobody may lose mail silently.

Two conditions, checked by the deliverer on every dispatch pass (time comes
from its clock):

* a stream's endpoint has been **down** (:mod:`.health`) for
  ``webhooks.alert_after``: an ``endpoint_failing`` event naming the last
  error, then ``endpoint_recovered`` when it answers again;
* a stream with ``silence_alert_after`` has received **no mail** for that long:
  ``stream_silent`` (once per silence; the next message ends it).

Each alert is an event on the events topic (about the stream, not a delivery),
a log line (ERROR for the bad news), and, if ``webhooks.alert_url`` is set, a
Standard Webhooks-signed POST of the event to it (``alert_signing_secret``)
over the same guarded client as deliveries. An alert that cannot be POSTed is
logged and not retried: the event and the log have it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx

from ..clock import rfc3339
from ..config import Settings
from ..errors import InboundError
from ..events import Event, EventType
from ..records import EVENTS, encode_event, event_record
from .signing import signed_headers

log = logging.getLogger(__name__)

Publish = Callable[[list[tuple[str, bytes, bytes]]], None]


class Alerter:
    def __init__(self, settings: Settings, publish: Publish, client: httpx.Client, now: float) -> None:
        self.settings = settings
        self.publish = publish
        self.client = client
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

    def check(self, down_since: dict[str, float | None], now: float) -> list[Event]:
        """What is due: endpoints down for ``alert_after``, streams silent too long (send with :meth:`send`)."""
        due = []
        hooks = self.settings.webhooks
        for stream in self.settings.streams:
            since = down_since.get(stream.name)
            if since is not None and now - since >= hooks.alert_after and stream.name not in self.failing:
                self.failing.add(stream.name)
                reason = f"endpoint down since {rfc3339(since)}; last error: {self.last_error.get(stream.name, '-')}"
                due.append(_alert(EventType.ENDPOINT_FAILING, stream.name, reason, now))
            silence = stream.silence_alert_after
            quiet = now - self.last_mail.get(stream.name, now)
            if silence is not None and quiet >= silence and stream.name not in self.silent:
                self.silent.add(stream.name)
                due.append(_alert(EventType.STREAM_SILENT, stream.name, f"no mail for {quiet:.0f}s", now))
        return due

    def recovered(self, stream: str, now: float) -> list[Event]:
        if stream not in self.failing:
            return []
        self.failing.discard(stream)
        return [_alert(EventType.ENDPOINT_RECOVERED, stream, "the endpoint answers again", now)]

    def send(self, alerts: list[Event]) -> None:
        """Log, publish and POST *alerts*; called outside the deliverer's lock (the POST takes time)."""
        for event in alerts:
            self._send(event)

    def _send(self, event: Event) -> None:
        kind, stream = event.type, event.stream
        level = logging.INFO if kind is EventType.ENDPOINT_RECOVERED else logging.ERROR
        log.log(level, "stream=%s stage=deliver alert=%s %s", stream, kind.value, event.reason)
        try:
            self.publish([(EVENTS, *event_record(event))])
        except InboundError as exc:  # the bus is down: the log line above stands; delivery goes on
            log.warning("stream=%s stage=deliver alert=%s not on the bus: %s", stream, kind.value, exc)
        url, secret = self.settings.webhooks.alert_url, self.settings.webhooks.alert_signing_secret
        if url is None or secret is None:
            return
        body = encode_event(event)
        headers = signed_headers((secret,), f"alert-{stream}-{kind.value}-{event.at}", body, "application/json")
        try:
            self.client.post(url, content=body, headers=headers).raise_for_status()
        except Exception as exc:  # noqa: BLE001 -- an alert endpoint's failure must not stop delivery
            log.warning("stream=%s stage=deliver alert=%s not posted to alert_url: %s", stream, kind.value, exc)


def _alert(kind: EventType, stream: str, reason: str, now: float) -> Event:
    return Event(kind, "", "", stream, rfc3339(now), reason=reason)

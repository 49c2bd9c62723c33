"""The deliverer in process: schedule, probes, release, 403, timeouts -- exact and instant.

Real parts where they are cheap (the SQLite outbox, the signing, the retry
policy, the health state machine); an httpx ``MockTransport`` for the
endpoint, a clock the test moves, and a pool that runs each attempt inline, so
every step is deterministic and no test waits. The subprocess tests in
``test_pipeline.py`` prove the same behaviour end to end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

import httpx
import pytest

from inbound.bus import Headers, Record
from inbound.config import Settings, StreamSettings, WebhookSettings
from inbound.delivery.deliver import Deliverer
from inbound.delivery.outbox import Outbox
from inbound.delivery.signing import verify
from inbound.events import Event, EventType
from inbound.records import JSON, MessageRecord, decode_event, message_record

from .harness import SECRET

URL = "https://hooks.example.test/inbound"
Responder = Callable[[httpx.Request], httpx.Response]


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Inline(Executor):
    """Runs each attempt at once, on the caller's thread."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_result(fn(*args, **kwargs))
        return future


class Bus:
    """A producer keeping what it was sent: the deliverer's only view of the bus."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    def send(self, topic: str, value: bytes, *, key: bytes, headers: Headers = ()) -> None:
        self.sent.append((topic, key, value))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def events(self) -> list[Event]:
        return [decode_event(value) for topic, _, value in self.sent if topic == "events"]


class Endpoint:
    """The webhook: answers each POST with what ``answer`` says, and keeps every request."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.answer: Responder = lambda request: httpx.Response(200)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)

    def ids(self) -> list[str]:
        return [r.headers["webhook-id"] for r in self.requests]


class Harness:
    def __init__(self, tmp_path: Path, **webhooks: Any) -> None:
        self.clock = Clock()
        self.bus = Bus()
        self.endpoint = Endpoint()
        settings = Settings(
            tmp_path / "inbound.toml",
            webhooks=WebhookSettings(**{"retry_schedule": (60.0, 300.0), "timeout": 5.0, **webhooks}),
            streams=(StreamSettings("support", ("*@in.test",), URL, SECRET),),
        )
        self.outbox = Outbox(tmp_path / "outbox.db", clock=self.clock)
        self.client = httpx.Client(transport=httpx.MockTransport(self.endpoint))
        self.deliverer = Deliverer(
            settings, self.outbox, self.bus, self.client, clock=self.clock, pool=lambda stream, n: Inline()
        )
        self.offset = 0

    def accept(self, *numbers: int) -> None:
        records = []
        for n in numbers:
            self.offset += 1
            key, value, headers = message_record(MessageRecord(did(n), "support", 0, JSON, b'{"n":%d}' % n))
            records.append(Record("messages", 0, self.offset, key, value, headers, 0))
        self.deliverer.handle(records)

    def at(self, seconds: float) -> None:
        """Move the clock *seconds* past the start and run whatever is due then."""
        self.clock.now = 1_800_000_000.0 + seconds
        self.deliverer.dispatch_due()

    def story(self, n: int) -> list[tuple[EventType, int | None]]:
        """The events of message *n*: type and, for attempts, the HTTP status."""
        return [
            (e.type, e.attempt.status_code if e.attempt else None) for e in self.bus.events() if e.delivery_id == did(n)
        ]

    def close(self) -> None:
        self.client.close()
        self.outbox.close()


def did(n: int) -> str:
    return f"01JD{n:022d}-support"


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def build(**webhooks: Any) -> Harness:
        home = tmp_path / f"deliverer{len(made)}"
        home.mkdir()
        made.append(Harness(home, **webhooks))
        return made[-1]

    yield build
    for harness in made:
        harness.close()


def test_a_signed_post_with_the_record_s_body_and_content_type(make: Callable[..., Harness]) -> None:
    h = make()
    h.accept(1)
    h.at(0)
    (request,) = h.endpoint.requests
    assert (request.headers["content-type"], request.content) == (JSON, b'{"n":1}')
    assert verify(SECRET, request.content, dict(request.headers))
    assert h.story(1) == [(EventType.ATTEMPT, 200), (EventType.DELIVERED, None)]


def test_the_schedule_then_failed_counting_every_attempt(make: Callable[..., Harness]) -> None:
    h = make(probe_interval=10_000.0)  # no probe in this story
    h.endpoint.answer = lambda request: httpx.Response(503)
    h.accept(1)
    for second in (0, 59, 60, 359, 360):
        h.at(second)
    assert len(h.endpoint.requests) == 3  # at 0, at 60, at 360: not before their time
    failed = h.bus.events()[-1]
    assert (failed.type, failed.reason) == (EventType.FAILED, "HTTP 503; gave up after 3 attempts")
    retrying = [e for e in h.bus.events() if e.type is EventType.RETRYING]
    assert [e.next_attempt_at for e in retrying] == ["2027-01-15T08:01:00.000Z", "2027-01-15T08:06:00.000Z"]


def test_probes_use_no_step_and_are_counted_as_attempts(make: Callable[..., Harness]) -> None:
    h = make(probe_interval=20.0)
    h.endpoint.answer = lambda request: httpx.Response(503)
    h.accept(1)
    for second in (0, 20, 40, 60, 80, 360):
        h.at(second)
    # 0: first try (step 1, due 60); 20, 40: probes; 60: due (step 2, due 360); 80: probe; 360: out of steps.
    assert len(h.endpoint.requests) == 6
    assert h.bus.events()[-1].reason == "HTTP 503; gave up after 6 attempts"


def test_recovery_releases_only_the_held_backlog_in_arrival_order(make: Callable[..., Harness]) -> None:
    h = make(probe_interval=30.0, concurrency_per_stream=1)
    up = False
    h.endpoint.answer = lambda request: httpx.Response(200 if up else 503)
    h.accept(1, 2, 3)
    h.at(0)  # message 1 fails: the endpoint is failing; 2 and 3 wait behind it
    assert h.endpoint.ids() == [did(1)]
    up = True
    h.at(29)
    assert h.endpoint.ids() == [did(1), did(2)]  # 2 was due: one attempt at a time while failing
    h.at(29)  # 2's 200 released the backlog: 1 (waiting for its 60 s retry) and 3 go now, oldest first
    h.at(29)
    assert h.endpoint.ids() == [did(1), did(2), did(1), did(3)]
    assert all(h.story(n)[-1] == (EventType.DELIVERED, None) for n in (1, 2, 3))


def test_a_probe_goes_before_its_time_and_its_success_releases_the_rest(make: Callable[..., Harness]) -> None:
    h = make(probe_interval=30.0)
    h.endpoint.answer = lambda request: httpx.Response(503)
    h.accept(1, 2)
    h.at(0)  # both fail; both due at 60
    h.at(29)
    assert len(h.endpoint.requests) == 2
    h.endpoint.answer = lambda request: httpx.Response(200)
    h.at(30)  # the probe: the oldest, before it is due
    assert h.endpoint.ids()[2] == did(1)
    h.at(30)
    assert h.endpoint.ids() == [did(1), did(2), did(1), did(2)]


def test_403_fails_the_message_at_once_and_leaves_the_endpoint_healthy(make: Callable[..., Harness]) -> None:
    h = make()
    h.endpoint.answer = lambda request: httpx.Response(403 if request.content == b'{"n":1}' else 200)
    h.accept(1, 2, 3)
    h.at(0)
    assert h.story(1) == [(EventType.ATTEMPT, 403), (EventType.FAILED, None)]
    assert h.bus.events()[1].reason == "HTTP 403: the endpoint refused the message"
    assert h.story(3)[-1] == (EventType.DELIVERED, None)
    assert len(h.endpoint.requests) == 3


def test_a_timeout_and_an_unforeseen_error_are_recorded_failures(make: Callable[..., Harness]) -> None:
    h = make(probe_interval=10_000.0)

    def misbehave(request: httpx.Request) -> httpx.Response:
        if request.content == b'{"n":1}':
            raise httpx.ReadTimeout("slow", request=request)
        raise ValueError("a library bug nobody foresaw")

    h.endpoint.answer = misbehave
    h.accept(1, 2)
    h.at(0)
    attempts = [e.attempt for e in h.bus.events() if e.attempt is not None]
    assert [(a.status_code, a.error) for a in attempts] == [
        (None, "timeout after 5s"),
        (None, "ValueError: a library bug nobody foresaw"),
    ]
    h.at(1)
    assert len(h.endpoint.requests) == 2  # each waits for its next step: no tight loop
    assert h.outbox.waiting("support").count == 2

"""The deliverer in process: schedule, probes, release, 403, timeouts -- exact and instant.

Real parts where they are cheap (the SQLite outbox, the signing, the retry
policy, the health state machine); an httpx ``MockTransport`` for the
endpoint, a clock the test moves, and a pool that runs each attempt inline, so
every step is deterministic and no test waits. The subprocess tests in
``test_pipeline.py`` prove the same behaviour end to end.
"""

from __future__ import annotations

import base64
import functools
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from inbound.bus import Headers, Record
from inbound.config import Settings, StreamSettings, WebhookSettings
from inbound.delivery.alerts import Alerter
from inbound.delivery.deliver import Deliverer, thread_pool
from inbound.delivery.outbox import Delivery, Outbox
from inbound.delivery.retry import Answer
from inbound.delivery.signing import verify
from inbound.delivery.webhook import WebhookClient
from inbound.events import Event, EventType
from inbound.records import JSON, MessageRecord, decode_event, message_record

from .harness import OTHER_SECRET, SECRET, wait_for

URL = "https://hooks.example.test/inbound"
Responder = Callable[[httpx.Request], httpx.Response]
Pool = Executor | Callable[[str, int], Executor]  # one executor for every stream, or how the deliverer makes its own


START = 1_800_000_000.0


class Clock:
    """Time as the test moves it: setting ``now`` (the wall clock) is time passing, and the
    monotonic clock moves with it; :meth:`step` sets the wall clock alone, as NTP does."""

    def __init__(self) -> None:
        self.elapsed = 0.0  # seconds since the start, as the monotonic clock counts them
        self.stepped = 0.0  # how far the wall clock was set off them
        self.boot_id = "a boot"

    @property
    def now(self) -> float:
        return START + self.elapsed + self.stepped

    @now.setter
    def now(self, wall: float) -> None:
        self.elapsed = wall - START - self.stepped

    def step(self, seconds: float) -> None:
        self.stepped += seconds

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return 5_000.0 + self.elapsed  # nothing like the wall clock: mixing the two shows

    def boot(self) -> str:
        return self.boot_id


class Inline(Executor):
    """Runs each attempt at once, on the caller's thread."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_result(fn(*args, **kwargs))
        return future


class Held(Executor):
    """Keeps each attempt until the test runs it, as workers still under way would."""

    def __init__(self) -> None:
        self.waiting: list[Callable[[], Any]] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.waiting.append(functools.partial(fn, *args, **kwargs))
        return Future()

    def run_all(self) -> None:
        while self.waiting:
            self.waiting.pop(0)()


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
    def __init__(self, tmp_path: Path, stream: dict[str, Any], pool: Pool | None = None, **webhooks: Any) -> None:
        self.clock = Clock()
        self.bus = Bus()
        self.endpoint = Endpoint()
        settings = Settings(
            tmp_path / "inbound.toml",
            webhooks=WebhookSettings(**{"retry_schedule": (60.0, 300.0), "timeout": 5.0, **webhooks}),
            streams=(StreamSettings("support", ("*@in.test",), URL, SECRET, **stream),),
        )
        self.outbox = Outbox(tmp_path / "outbox.db", clock=self.clock)
        self.transport = httpx.MockTransport(self.endpoint)
        self.deliverer = Deliverer(
            settings,
            self.outbox,
            self.bus,
            self.transport,
            clock=self.clock,
            pool=pool if callable(pool) else lambda stream, n: pool or Inline(),
        )
        self.offset = 0

    def accept(self, *numbers: int, generation: int = 0, url: str | None = None) -> None:
        """Messages *numbers* as the process stage sends them; a *url* as ``inbound replay --to`` does."""
        records = []
        for n in numbers:
            self.offset += 1
            record = MessageRecord(did(n), "support", generation, JSON, b'{"n":%d}' % n, url=url)
            key, value, headers = message_record(record)
            records.append(Record("messages", 0, self.offset, key, value, headers, 0))
        self.deliverer.handle(records)

    def at(self, seconds: float) -> None:
        """Move the clock *seconds* past the start and run whatever is due then."""
        self.clock.elapsed = seconds
        self.deliverer.dispatch_due()

    def story(self, n: int) -> list[tuple[EventType, int | None]]:
        """The events of message *n*: type and, for attempts, the HTTP status."""
        return [
            (e.type, e.attempt.status_code if e.attempt else None) for e in self.bus.events() if e.delivery_id == did(n)
        ]

    def alerts(self, kind: EventType, count: int) -> list[Event]:
        """The alerts of *kind* on the bus, once there are *count* (they go out on a thread of their own)."""

        def sent() -> list[Event] | None:
            found = [e for e in self.bus.events() if e.type is kind]
            return found if len(found) >= count else None

        return wait_for(sent, 5, f"{count} {kind.value} alerts")

    def close(self) -> None:
        if self.deliverer.alerter.sender.is_alive():  # a test that started it and did not stop the deliverer
            self.deliverer.alerter.stop(5)
        self.transport.close()
        self.outbox.close()


def did(n: int) -> str:
    return f"01JD{n:022d}-support"


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def build(stream: dict[str, Any] | None = None, pool: Pool | None = None, **webhooks: Any) -> Harness:
        home = tmp_path / f"deliverer{len(made)}"
        home.mkdir()
        made.append(Harness(home, stream or {}, pool, **webhooks))
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


def test_one_bad_message_follows_its_own_schedule_while_the_rest_flows(make: Callable[..., Harness]) -> None:
    # Issue 9, part 1: every 2xx for another message used to count as "the endpoint is back" and
    # send the bad one again at once -- Failed after 4 attempts in seconds, not 3 minutes.
    h = make(retry_schedule=(60.0, 60.0, 60.0), probe_interval=5.0)
    h.endpoint.answer = lambda request: httpx.Response(500 if request.content == b'{"n":1}' else 200)
    h.accept(1, 2)
    for second in range(0, 200, 5):
        h.accept(100 + second)  # a busy, healthy stream: new mail every 5 s
        h.at(second)
    tried_at = [e.at for e in h.bus.events() if e.delivery_id == did(1) and e.type is EventType.ATTEMPT]
    assert [t[14:19] for t in tried_at] == ["00:00", "01:00", "02:00", "03:00"]  # minute:second
    assert h.story(1)[-1] == (EventType.FAILED, None)
    assert h.bus.events()[-1].type is EventType.DELIVERED  # the stream never stopped
    assert h.outbox.held_since("support") is None


def test_an_outage_longer_than_the_schedule_fails_nothing(make: Callable[..., Harness]) -> None:
    # Issue 9, part 2: the whole schedule is 6 minutes; the endpoint is down for 3 hours.
    h = make(probe_interval=30.0, concurrency_per_stream=2)
    up = False
    h.endpoint.answer = lambda request: httpx.Response(200 if up else 503)
    h.accept(1, 2, 3, 4)
    h.at(0)  # 1 and 2 fail (a step each)
    h.at(0)  # 3 fails too: three distinct deliveries, no success -- the endpoint is down; 4 is held
    assert h.outbox.held_since("support") == h.clock.now
    for minute in range(2, 180):
        h.accept(100 + minute)  # mail keeps arriving during the outage
        h.at(minute * 60)
    probes = len(h.endpoint.requests) - 4
    assert 170 <= probes <= 180  # one at a time, every probe_interval (at most one per pass here)
    assert not [e for e in h.bus.events() if e.type is EventType.FAILED]
    up = True
    h.at(180 * 60)  # a probe succeeds: the endpoint is back
    sent = len(h.endpoint.requests)
    for _ in range(200):
        h.at(180 * 60)
    assert h.outbox.held_since("support") is None
    after = [r.headers["webhook-id"] for r in h.endpoint.requests[sent:]]
    assert after == sorted(after)  # the backlog in arrival order
    delivered = {e.delivery_id for e in h.bus.events() if e.type is EventType.DELIVERED}
    assert delivered == {did(n) for n in (1, 2, 3, 4, *range(102, 280))}
    assert not [e for e in h.bus.events() if e.type is EventType.FAILED]


def test_a_step_back_of_the_system_clock_holds_back_no_held_delivery(make: Callable[..., Harness]) -> None:
    # Due times are stored on the wall clock: after a step back of an hour, the held deliveries
    # were an hour from due, and the endpoint, back at the next probe, got nothing for an hour.
    h = make(probe_interval=30.0)
    up = False
    h.endpoint.answer = lambda request: httpx.Response(200 if up else 503)
    h.accept(1, 2, 3)
    h.at(0)  # three distinct failures: down
    up = True
    h.clock.step(-3600)
    h.at(30)  # the probe, on time: the endpoint answers
    h.at(30)
    assert {e.delivery_id for e in h.bus.events() if e.type is EventType.DELIVERED} == {did(1), did(2), did(3)}


def test_a_step_back_of_the_system_clock_delays_a_retry_by_no_more_than_the_longest_step(
    make: Callable[..., Harness],
) -> None:
    h = make()  # retry_schedule (60, 300)
    h.endpoint.answer = lambda request: httpx.Response(503 if len(h.endpoint.requests) == 1 else 200)
    h.accept(1)
    h.at(0)
    h.clock.step(-3600)  # its retry, due in 60 s, is now an hour and a minute ahead on the wall clock
    h.at(60)
    assert h.story(1)[-2:] == [(EventType.ATTEMPT, 200), (EventType.DELIVERED, None)]


def test_a_stream_that_cannot_be_reached_is_held_at_once_and_failed_after_max_hold(
    make: Callable[..., Harness],
) -> None:
    h = make(probe_interval=60.0, max_hold=3600.0)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    h.endpoint.answer = refuse
    h.accept(1)
    h.at(0)
    assert h.outbox.held_since("support") == h.clock.now  # no answer at all: the endpoint, not the message
    assert h.story(1) == [(EventType.ATTEMPT, None), (EventType.RETRYING, None)]
    assert h.bus.events()[-1].reason == "could not connect: connection refused; held: the endpoint is down"
    for minute in range(1, 60):
        h.at(minute * 60)
    assert h.story(1)[-1] == (EventType.RETRYING, None)  # 60 attempts, still waiting
    h.at(3601)
    assert h.story(1)[-1] == (EventType.FAILED, None)
    assert h.bus.events()[-1].reason == "held for 60m while the endpoint was down"
    assert h.outbox.waiting("support").count == 0  # done in the outbox too: it is not failed again


def test_a_retry_of_a_message_failed_by_max_hold_is_tried_again_not_expired(make: Callable[..., Harness]) -> None:
    h = make(probe_interval=60.0, max_hold=3600.0)
    up = False
    h.endpoint.answer = lambda request: httpx.Response(200 if up else 503)
    h.accept(1, 2, 3)
    for minute in range(62):
        h.at(minute * 60)
    assert [h.story(n)[-1] for n in (1, 2, 3)] == [(EventType.FAILED, None)] * 3
    up = True
    h.accept(1, generation=1)  # inbound retry: a new generation starts the delivery over, held for no time yet
    h.at(62 * 60)
    assert h.story(1)[-2:] == [(EventType.ATTEMPT, 200), (EventType.DELIVERED, None)]


def test_probes_take_the_held_deliveries_in_turn(make: Callable[..., Harness]) -> None:
    # One message the endpoint always refuses with a 500 must not keep a recovered endpoint looking down.
    h = make(probe_interval=30.0)
    up = False
    h.endpoint.answer = lambda request: httpx.Response(200 if up and request.content != b'{"n":1}' else 503)
    h.accept(1, 2, 3)
    h.at(0)  # three distinct failures: down
    up = True
    h.at(30)  # probe: 1, refused again
    h.at(60)  # probe: 2 -- the endpoint is back
    assert h.endpoint.ids()[3:] == [did(1), did(2)]
    h.at(60)
    assert h.story(3)[-1] == (EventType.DELIVERED, None)
    assert h.story(1)[-1] == (EventType.RETRYING, None)  # on its own schedule again, steps given back


def test_a_replay_to_an_unreachable_url_leaves_the_stream_s_own_endpoint_up(make: Callable[..., Harness]) -> None:
    # The stream's health is its webhook's: a replay target that refuses every connection is not it.
    h = make(probe_interval=30.0)

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.host == "staging.example.test":
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200)

    h.endpoint.answer = answer
    h.accept(*range(1, 6), generation=1, url="https://staging.example.test/hook")
    h.at(0)
    assert h.outbox.held_since("support") is None
    assert not h.deliverer.health["support"].down
    h.accept(100)
    h.at(1)
    assert h.story(100) == [(EventType.ATTEMPT, 200), (EventType.DELIVERED, None)]
    # Each replayed delivery follows its own schedule instead, and ends Failed with it.
    assert h.story(1) == [(EventType.ATTEMPT, None), (EventType.RETRYING, None)]
    h.at(61)
    h.at(61 + 301)
    assert h.story(1)[-1] == (EventType.FAILED, None)


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
    # An attempt ends by its one deadline (`timeout`, see test_egress.py); its lease lasts longer.
    assert h.deliverer.lease_seconds > 5.0 * 1.5
    assert h.outbox.waiting("support").count == 2


def test_a_draining_backlog_keeps_to_the_stream_s_rate(make: Callable[..., Harness]) -> None:
    h = make(stream={"max_requests_per_second": 2.0}, concurrency_per_stream=8)
    h.accept(*range(1, 21))
    sent = []
    for tenth in range(0, 51):  # five seconds, a pass every 0.1 s
        h.at(tenth / 10)
        sent.append(len(h.endpoint.requests))
    assert sent[0] == 2  # one second's worth at once, not the 8 workers' worth
    assert sent[10] == 4  # then two a second
    assert sent[50] == 12
    assert h.endpoint.ids() == [did(n) for n in range(1, 13)]  # still in arrival order


def test_a_step_back_of_the_system_clock_leaves_the_stream_s_rate_as_it_was(make: Callable[..., Harness]) -> None:
    # The bucket counted on the wall clock: an hour's step back made it 7,200 tokens short, and
    # the stream sent nothing for an hour.
    h = make(stream={"max_requests_per_second": 2.0})
    h.accept(1)
    h.at(0)
    h.clock.step(-3600)
    h.accept(2, 3, 4)
    h.at(1)
    assert h.endpoint.ids() == [did(1), did(2), did(3)]  # a second's worth, as without the step


def test_a_pass_that_leaves_every_worker_busy_does_not_read_when_the_next_is_due(make: Callable[..., Harness]) -> None:
    """The end of an attempt wakes the dispatcher anyway; under load that read was most passes' only one."""
    pool = Held()
    h = make(pool=pool, concurrency_per_stream=2)
    h.accept(1, 2, 3)
    reads: list[str] = []
    h.outbox.db.set_trace_callback(reads.append)
    assert h.deliverer.dispatch_due() is None  # 1 and 2 under way, 3 waits for either
    assert len(pool.waiting) == 2
    assert not any("ORDER BY due_at LIMIT 1" in sql for sql in reads)
    pool.run_all()
    assert h.deliverer.dispatch_due() is None  # 3 under way, one worker idle: now it looks
    assert any("ORDER BY due_at LIMIT 1" in sql for sql in reads)
    pool.run_all()
    assert h.endpoint.ids() == [did(1), did(2), did(3)]


ALERTS = "https://alerts.example.test/inbound"


def test_an_endpoint_down_for_alert_after_raises_an_alert_and_its_recovery_closes_it(
    make: Callable[..., Harness],
) -> None:
    h = make(probe_interval=30.0, alert_after=900.0, alert_url=ALERTS, alert_signing_secret=SECRET)
    h.deliverer.alerter.start()  # the alerts' own thread, which Deliverer.start starts
    up = False
    h.endpoint.answer = lambda request: httpx.Response(200 if up or str(request.url) == ALERTS else 503)
    alert_posts = lambda: [r for r in h.endpoint.requests if str(r.url) == ALERTS]  # noqa: E731
    h.accept(1, 2, 3)
    h.at(0)  # three distinct failures: down
    h.at(899)
    h.at(900)
    # Alerts go out in order on one thread: the first is the one due at 900 s, not earlier.
    (failing,) = h.alerts(EventType.ENDPOINT_FAILING, 1)
    assert (failing.stream, failing.delivery_id, failing.at) == ("support", "", "2027-01-15T08:15:00.000Z")
    assert failing.reason == "endpoint down since 2027-01-15T08:00:00.000Z; last error: HTTP 503"
    (posted,) = wait_for(alert_posts, 5, "the alert's POST")
    assert verify(SECRET, posted.content, dict(posted.headers))
    assert decode_event(posted.content) == failing
    h.at(1000)  # still down: one alert per outage
    up = True
    h.at(1030)  # the next probe succeeds
    recovered = h.alerts(EventType.ENDPOINT_RECOVERED, 1)
    assert [e.reason for e in recovered] == ["the endpoint answers again"]
    assert len(h.alerts(EventType.ENDPOINT_FAILING, 1)) == 1  # none queued at 1000 s, before the recovery
    wait_for(lambda: len(alert_posts()) == 2, 5, "the recovery's POST")


def test_a_stream_without_mail_for_silence_alert_after_is_reported_once(make: Callable[..., Harness]) -> None:
    h = make(stream={"silence_alert_after": 3600.0})
    h.deliverer.alerter.start()  # the alerts' own thread, which Deliverer.start starts
    h.at(3599)
    h.at(3600)
    h.at(5000)
    h.accept(1)  # mail again: the silence is over, and the next one is reported anew
    h.at(5000 + 3600)
    # In order, on one thread: one at 3600 s (none at 3599 s, none again at 5000 s), one after the mail.
    silent = h.alerts(EventType.STREAM_SILENT, 2)
    assert [(e.stream, e.at, e.reason) for e in silent] == [
        ("support", "2027-01-15T09:00:00.000Z", "no mail for 3600s"),
        ("support", "2027-01-15T10:23:20.000Z", "no mail for 3600s"),
    ]


def test_alerts_come_after_their_time_whatever_step_the_system_clock_takes(make: Callable[..., Harness]) -> None:
    # They were measured on the wall clock: after a step back of an hour, endpoint_failing came 75
    # minutes into the outage, not 15, and a stream's silence counted from minus an hour.
    h = make(stream={"silence_alert_after": 1800.0}, probe_interval=30.0, alert_after=900.0)
    h.deliverer.alerter.start()  # the alerts' own thread, which Deliverer.start starts
    h.endpoint.answer = lambda request: httpx.Response(503)
    h.accept(1, 2, 3)
    h.at(0)  # three distinct failures: down
    h.clock.step(-3600)
    for second in (899, 900, 1799, 1800):
        h.at(second)
    # Told on the wall clock as it reads now: the outage began 15 minutes before the alert.
    (failing,) = h.alerts(EventType.ENDPOINT_FAILING, 1)
    assert (failing.at, failing.reason) == (
        "2027-01-15T07:15:00.000Z",
        "endpoint down since 2027-01-15T07:00:00.000Z; last error: HTTP 503",
    )
    (silent,) = h.alerts(EventType.STREAM_SILENT, 1)
    assert (silent.at, silent.reason) == ("2027-01-15T07:30:00.000Z", "no mail for 1800s")


def test_an_alert_that_finds_the_sender_s_queue_full_is_logged_as_not_sent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(tmp_path / "inbound.toml", streams=(StreamSettings("support", ("*@in.test",), URL, SECRET),))
    published: list[tuple[str, bytes, bytes]] = []
    webhook = WebhookClient(httpx.MockTransport(lambda request: httpx.Response(200)), 5.0)
    alerter = Alerter(settings, published.extend, webhook, 0.0, capacity=1)
    failing, recovered = (
        Event(kind, "", "", "support", "2027-01-15T08:00:00.000Z", reason="-")
        for kind in (EventType.ENDPOINT_FAILING, EventType.ENDPOINT_RECOVERED)
    )
    alerter.send([failing, recovered])  # the sender has not started: its queue holds the first
    assert (
        "stream=support stage=deliver alert=endpoint_recovered not sent to the bus nor alert_url: 1 alerts wait already"
    ) in caplog.text
    alerter.start()
    alerter.stop(5)
    assert [decode_event(value) for _, _, value in published] == [failing]


def test_key_rotation_signs_each_post_once_per_secret() -> None:
    new = "whsec_" + base64.b64encode(b"the-new-secret-of-32-bytes-long!").decode()
    requests: list[httpx.Request] = []

    def endpoint(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(204)

    stream = StreamSettings("support", ("*@in.test",), URL, new, other_signing_secrets=(SECRET,))
    delivery = Delivery(did(1), "support", "01JD", 0, b'{"n":1}', 0, 0, 0.0)
    assert WebhookClient(httpx.MockTransport(endpoint), 5.0).post(stream, delivery).answer is Answer.ACCEPTED
    (request,) = requests
    headers = dict(request.headers)
    assert len(headers["webhook-signature"].split(" ")) == 2
    # A receiver holding only the new key, or only the old one, accepts the same POST.
    assert verify(new, request.content, headers)
    assert verify(SECRET, request.content, headers)
    wrong = "whsec_" + base64.b64encode(b"a-third-secret-nobody-was-given!").decode()
    assert not verify(wrong, request.content, headers)


# -- HUP: the stream table reloaded (inbound/reload.py) -------------------------------------------
NEW_URL = "https://new-hooks.example.test/inbound"


def test_after_a_reload_a_retry_goes_to_the_new_url_signed_with_the_new_secret(make: Callable[..., Harness]) -> None:
    h = make()
    h.endpoint.answer = lambda request: httpx.Response(200 if str(request.url) == NEW_URL else 503)
    h.accept(1)
    h.at(0)
    moved = StreamSettings("support", ("*@in.test",), NEW_URL, OTHER_SECRET)
    h.deliverer.use(replace(h.deliverer.settings, streams=(moved,)))
    h.at(60)
    assert [str(r.url) for r in h.endpoint.requests] == [URL, NEW_URL]
    assert verify(OTHER_SECRET, h.endpoint.requests[1].content, dict(h.endpoint.requests[1].headers))
    assert h.story(1) == [
        (EventType.ATTEMPT, 503),
        (EventType.RETRYING, None),
        (EventType.ATTEMPT, 200),
        (EventType.DELIVERED, None),
    ]


def test_a_stream_added_by_a_reload_is_delivered(make: Callable[..., Harness]) -> None:
    h = make()
    sales = StreamSettings("sales", ("*@sales.test",), NEW_URL, SECRET, max_requests_per_second=1.0)
    h.deliverer.use(replace(h.deliverer.settings, streams=(*h.deliverer.settings.streams, sales)))
    key, value, headers = message_record(MessageRecord("01JD0001-sales", "sales", 0, JSON, b"{}"))
    h.deliverer.handle(
        [Record("messages", 0, 1, key, value, headers, 0), Record("messages", 0, 2, key, value, headers, 0)]
    )
    h.at(0)
    assert [str(r.url) for r in h.endpoint.requests] == [NEW_URL]  # once, however often the record came
    assert h.deliverer.rates["sales"].per_second == 1.0


def test_a_stream_removed_by_a_reload_keeps_its_deliveries_until_it_comes_back(
    make: Callable[..., Harness], caplog: pytest.LogCaptureFixture
) -> None:
    h = make()
    h.endpoint.answer = lambda request: httpx.Response(503)
    h.accept(1)
    h.at(0)
    running = h.deliverer.settings
    h.deliverer.use(replace(running, streams=()))
    assert "stream=support stage=deliver removed from the configuration: 1 deliveries wait" in caplog.text
    h.endpoint.answer = lambda request: httpx.Response(200)
    h.at(3600)
    assert len(h.endpoint.requests) == 1  # not tried while the stream is gone
    h.deliverer.use(running)
    h.at(3601)
    assert h.story(1)[-2:] == [(EventType.ATTEMPT, 200), (EventType.DELIVERED, None)]
    assert len(h.endpoint.requests) == 2


class GatedBus(Bus):
    """A bus whose flushes wait until the test opens the gate: outcomes that cannot be recorded yet."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def flush(self) -> None:
        assert self.gate.wait(30), "the test never opened the gate"


def test_the_next_post_starts_while_outcomes_wait_for_their_flush_but_only_so_many(
    make: Callable[..., Harness],
) -> None:
    h = make(pool=thread_pool)  # the deliverer's own pools, sized as it sizes them
    h.bus = h.deliverer.outcomes.producer = GatedBus()
    health = h.deliverer.health["support"]
    h.accept(*range(1, 13))

    def waiting_unleased() -> int:
        (count,) = h.outbox.db.execute(
            "SELECT COUNT(*) FROM deliveries WHERE done = 0 AND lease_until < ?", (h.clock.monotonic(),)
        ).fetchone()
        return int(count)

    try:
        h.at(0)
        # Four POSTs answered and judged: their places are free while their outcomes wait for the flush.
        wait_for(lambda: len(h.endpoint.requests) == 4 and health.in_flight == 0, what="four outcomes waiting")
        h.at(0)
        # Four more answered; every place for an outcome is taken, so they keep their POST's place.
        wait_for(lambda: len(h.endpoint.requests) == 8, what="four more POSTs")
        h.at(0)
        assert health.in_flight == 4
        assert waiting_unleased() == 4  # nothing more claimed: no POST beyond what can be recorded
    finally:
        h.bus.gate.set()

    def all_delivered() -> bool:
        h.at(0)
        return sum(e.type is EventType.DELIVERED for e in h.bus.events()) == 12

    wait_for(all_delivered, what="every outcome recorded")
    assert sorted(h.endpoint.ids()) == [did(n) for n in range(1, 13)]  # each POSTed once
    for pool in h.deliverer.pools.values():
        pool.shutdown()


def test_an_outcome_whose_flush_outlasts_the_lease_is_not_posted_again_meanwhile(make: Callable[..., Harness]) -> None:
    h = make(pool=thread_pool)
    h.bus = h.deliverer.outcomes.producer = GatedBus()
    h.accept(1)
    try:
        h.at(0)
        wait_for(lambda: h.endpoint.requests and h.deliverer.health["support"].in_flight == 0, what="outcome waiting")
        h.at(h.deliverer.lease_seconds + 1)  # the flush is slow (a Kafka leader election): the lease has run out
    finally:
        h.bus.gate.set()
    for pool in h.deliverer.pools.values():
        pool.shutdown()  # every attempt started has ended
    assert h.endpoint.ids() == [did(1)]
    assert h.story(1) == [(EventType.ATTEMPT, 200), (EventType.DELIVERED, None)]


def test_the_outcomes_flush_is_told_more_are_coming_while_a_post_is_under_way(make: Callable[..., Harness]) -> None:
    h = make(pool=thread_pool)
    answering = threading.Event()
    h.endpoint.answer = lambda request: httpx.Response(200 if answering.wait(30) else 599)
    h.accept(1)
    assert not h.deliverer.outcomes.more_coming()
    h.at(0)
    try:
        wait_for(lambda: h.endpoint.requests, what="the POST under way")
        assert h.deliverer.outcomes.more_coming()
    finally:
        answering.set()
    wait_for(lambda: h.story(1)[-1:] == [(EventType.DELIVERED, None)], what="the outcome recorded")
    assert not h.deliverer.outcomes.more_coming()
    for pool in h.deliverer.pools.values():
        pool.shutdown()


def test_an_unexpected_error_in_the_dispatcher_is_logged_and_the_next_pass_delivers(
    make: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    h = make()
    claiming = h.outbox.claim
    failures = [RuntimeError("injected")]

    def claim(*args: Any, **kwargs: Any) -> list[Delivery]:
        if failures:
            raise failures.pop()
        return claiming(*args, **kwargs)

    monkeypatch.setattr(h.outbox, "claim", claim)
    h.accept(1)
    h.deliverer.start()  # its own thread, as in service
    try:
        wait_for(lambda: h.story(1)[-1:] == [(EventType.DELIVERED, None)], what="the delivery, after the failed pass")
    finally:
        h.deliverer.stop()
    assert "stage=deliver unexpected error in the dispatcher" in caplog.text

"""Chaos under load: ``inbound serve`` crashed (SIGKILL) or stopped (SIGTERM) at random moments while
two clients keep sending mail -- on every bus backend.

Afterwards every message that got a 250 has reached the webhook (repeats carry the same
``webhook-id``) and has exactly one activity record, ``delivered``. A message whose DATA got no
answer (the server died under it) is *in doubt*: it may or may not have been spooled, so it may
show up, but only as the message it was (same subject), and never counts as accepted.
"""

from __future__ import annotations

import contextlib
import random
import smtplib
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from .fixtures import Pipeline
from .harness import activity, send_on, simple_message, smtp_port_of, wait_for

SEED = 20261122
CLIENTS = 2
# Seconds between messages, per client: 20 a second together, the rate bench/chaos.py measured its
# catch-ups at. Unpaced, the backlog a kill leaves can outgrow the settle deadlines on a busy box.
PAUSE = 0.1


class Traffic:
    """Clients sending mail continuously on their own threads; every outcome is classified.

    Also used by bench/chaos.py. Each message has a unique subject; *limit* bounds how many are sent,
    and *pause* (seconds between messages, per client) how fast.
    """

    def __init__(
        self, config: Path, clients: int = CLIENTS, seed: int = SEED, limit: int = 1_000_000, pause: float = 0.0
    ) -> None:
        self.port = smtp_port_of(config)
        self.limit = limit
        self.pause = pause
        self.lock = threading.Lock()
        self.sent: dict[str, float] = {}  # subject -> when sending it began
        self.accepted: dict[str, str] = {}  # queue id -> subject: these got a 250
        self.in_doubt: set[str] = set()  # subjects sent when the connection broke: spooled or not
        self.refused = 0  # 421 at connect, or no connection at all
        self.unexpected: list[str] = []  # any other answer; there should be none
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._client, args=(n, random.Random(seed + n)), daemon=True)
            for n in range(clients)
        ]

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(60)
            assert not thread.is_alive(), "a client thread hung"

    def count(self) -> int:
        with self.lock:
            return len(self.accepted)

    def _client(self, number: int, rng: random.Random) -> None:
        sent = 0
        while not self.stopping.is_set():
            subject = ""
            try:
                # Connected inside the block: smtplib leaves the socket open when the greeting never comes
                # (a server killed mid-handshake), and a leaked socket fails the run as a ResourceWarning.
                with contextlib.closing(smtplib.SMTP(timeout=30)) as smtp:
                    code, greeting = smtp.connect("127.0.0.1", self.port)
                    if code != 220:
                        raise smtplib.SMTPConnectError(code, greeting)
                    smtp.ehlo("client.test")
                    for _ in range(rng.randint(1, 5)):  # one to five messages per connection
                        subject, sent = f"chaos-{number}-{sent}", sent + 1
                        with self.lock:
                            if self.stopping.is_set() or len(self.sent) >= self.limit:
                                return
                            self.sent[subject] = time.time()
                        queue_id = send_on(smtp, "a@sender.test", ["x@in.test"], simple_message(subject=subject))
                        with self.lock:
                            self.accepted[queue_id] = subject
                        subject = ""
                        if self.pause and self.stopping.wait(self.pause):  # pacing, not a synchronisation
                            return
            except smtplib.SMTPConnectError as exc:
                self._refused(exc.smtp_code == 421, f"connect: {exc.smtp_code} {exc.smtp_error!r}")
            except smtplib.SMTPResponseException as exc:  # e.g. DATA answered with something but 354
                self._refused(exc.smtp_code == 421, f"{subject}: {exc.smtp_code} {exc.smtp_error!r}")
            except AssertionError as exc:  # send_on: an answer other than 250
                self._refused(False, f"{subject}: {exc}")
            except OSError:  # refused, reset, or SMTPServerDisconnected: a connection error
                with self.lock:
                    self.refused += 1
                    if subject:
                        self.in_doubt.add(subject)
            else:
                continue
            self.stopping.wait(0.05)  # pacing while the server is down or refusing, not a synchronisation

    def _refused(self, ok: bool, what: str) -> None:
        with self.lock:
            if ok:
                self.refused += 1
            else:
                self.unexpected.append(what)


def wait_for_more_mail(traffic: Traffic, than: int) -> None:
    wait_for(lambda: traffic.count() > than, 60, "a 250 from this server incarnation")


def settle(condition: Callable[[], bool], timeout: float) -> None:
    """Wait up to *timeout* for *condition*; the assertions after it say what is missing, if anything."""
    with contextlib.suppress(AssertionError):
        wait_for(condition, timeout)


def check_every_accepted_message_delivered_once(pipeline: Pipeline, traffic: Traffic) -> None:
    config = pipeline.config
    accepted = dict(traffic.accepted)
    assert len(accepted) >= 20, f"too little traffic to mean anything: {len(accepted)} accepted"
    wanted = {f"{queue_id}-support" for queue_id in accepted}
    settle(lambda: set(pipeline.receiver.by_queue_id()) >= set(accepted), 120)
    unposted = sorted(set(accepted) - set(pipeline.receiver.by_queue_id()))
    assert unposted == [], f"{len(unposted)} of {len(accepted)} accepted never reached the webhook, e.g. {unposted[:5]}"

    def recorded() -> bool:  # every accepted message delivered, and every record processed (it has a subject)
        records = activity(config)
        delivered = {r["delivery_id"] for r in records if r["status"] == "delivered"}
        return delivered >= wanted and all(r["subject"] for r in records)

    settle(recorded, 90)
    records = activity(config)
    twice = [d for d, n in Counter(r["delivery_id"] for r in records).items() if n > 1]
    assert twice == [], f"{len(twice)} delivery ids with more than one activity record, e.g. {twice[:5]}"
    by_id = {r["delivery_id"]: r for r in records}
    assert sorted(wanted - set(by_id)) == [], "accepted messages without an activity record"
    assert {d: by_id[d]["status"] for d in wanted if by_id[d]["status"] != "delivered"} == {}
    assert {d: by_id[d]["subject"] for d in wanted if by_id[d]["subject"] != accepted[d.removesuffix("-support")]} == {}
    # The only other records allowed: messages whose DATA got no answer, each under its own subject.
    extra = {r["delivery_id"]: r["subject"] for r in records if r["delivery_id"] not in wanted}
    assert {d: s for d, s in extra.items() if s not in traffic.in_doubt} == {}

    for queue_id, posts in pipeline.receiver.by_queue_id().items():
        # At least once: repeats are allowed, and all carry the delivery's one webhook-id.
        assert {h.headers["webhook-id"] for h in posts} == {f"{queue_id}-support"}, queue_id
        subjects = {h.json["subject"] for h in posts}
        assert subjects == {accepted[queue_id]} if queue_id in accepted else subjects <= traffic.in_doubt, queue_id


def test_crash_under_load(pipeline: Pipeline) -> None:
    rng = random.Random(SEED)
    config = pipeline.configure()
    process = pipeline.start()
    with Traffic(config, pause=PAUSE) as traffic:
        for _cycle in range(5):
            wait_for_more_mail(traffic, traffic.count())
            # A random moment: SMTP sessions, the publisher, the stages and POSTs are all under way.
            time.sleep(rng.uniform(0.0, 3.0))  # a bounded random kill delay
            process.kill()
            process = pipeline.start()
        wait_for_more_mail(traffic, traffic.count())
    assert traffic.unexpected == []
    check_every_accepted_message_delivered_once(pipeline, traffic)


def test_sigterm_under_load_loses_nothing(pipeline: Pipeline) -> None:
    rng = random.Random(SEED + 1)
    config = pipeline.configure()
    process = pipeline.start()
    with Traffic(config, pause=PAUSE) as traffic:
        for _cycle in range(3):
            wait_for_more_mail(traffic, traffic.count())
            time.sleep(rng.uniform(0.0, 2.0))  # a bounded random delay
            assert process.terminate() == 0, process.log()[-3000:]
            assert "inbound stopped" in process.log()
            process = pipeline.start()
        wait_for_more_mail(traffic, traffic.count())
    # 250, or a refusal (421 or a connection error): nothing in between.
    assert traffic.unexpected == []
    check_every_accepted_message_delivered_once(pipeline, traffic)

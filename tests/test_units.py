"""Unit tests of the pure parts: routing, retry policy, durations, queue ids, spool entries."""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from inbound.config import StreamSettings
from inbound.delivery.health import Change, EndpointHealth, Slots
from inbound.delivery.retry import Answer, Outcome, answer_of, decide, describe
from inbound.durations import format_duration, parse_duration
from inbound.edge.spool import CorruptEntry, decode_entries, encode_entry
from inbound.envelope import Envelope, Recipient
from inbound.ids import new_queue_id
from inbound.ops.recover import salvage_spool_file
from inbound.records import decode_received, encode_envelope, encode_received
from inbound.routing import RoutingTable, Verdict

from .harness import SECRET


def table() -> RoutingTable:
    return RoutingTable.from_streams(
        [
            StreamSettings("support", ("*@in.test", "help@example.org"), "https://a.test/", SECRET, ("*@spam.test",)),
            StreamSettings("sales", ("Sales@Example.org",), "https://b.test/", SECRET, ("bad@x.test",)),
        ]
    )


@pytest.mark.parametrize(
    ("address", "verdict", "stream", "mailbox_hash"),
    [
        ("anyone@in.test", Verdict.ACCEPT, "support", None),
        ("anyone+t1@IN.test", Verdict.ACCEPT, "support", "t1"),
        ("help@example.org", Verdict.ACCEPT, "support", None),
        ("help+ticket-9@example.org", Verdict.ACCEPT, "support", "ticket-9"),
        ("SALES@example.ORG", Verdict.ACCEPT, "sales", None),
        ("<sales+Q3@example.org>", Verdict.ACCEPT, "sales", "Q3"),
        ("nobody@example.org", Verdict.UNKNOWN_MAILBOX, None, None),
        ("help@elsewhere.test", Verdict.NOT_OUR_DOMAIN, None, None),
        ("help", Verdict.NOT_OUR_DOMAIN, None, None),
    ],
)
def test_routing(address: str, verdict: Verdict, stream: str | None, mailbox_hash: str | None) -> None:
    route = table().route(address)
    assert (route.verdict, route.stream, route.mailbox_hash) == (verdict, stream, mailbox_hash)


def test_exact_address_with_plus_wins_over_base() -> None:
    routing = RoutingTable.from_streams(
        [
            StreamSettings("a", ("x@d.test",), "https://a.test/", SECRET),
            StreamSettings("b", ("x+vip@d.test",), "https://a.test/", SECRET),
        ]
    )
    assert routing.route("x+vip@d.test").stream == "b"
    assert routing.route("x+other@d.test").stream == "a"


def test_block_senders() -> None:
    routing = table()
    assert routing.is_blocked("support", "Someone@SPAM.test")
    assert not routing.is_blocked("support", "someone@notspam.test")
    assert routing.is_blocked("sales", "<bad@x.test>")
    assert not routing.is_blocked("sales", "")  # the null sender is never blocked by a pattern
    assert not routing.is_blocked("support", "bad@x.test")  # each stream has its own list


@pytest.mark.parametrize("listed", ["*@bücher.example", "*@xn--bcher-kva.example"])
@pytest.mark.parametrize(
    "sender",
    ["spam@bücher.example", "spam@xn--bcher-kva.example", "spam@BÜCHER.example", "spam@bu\u0308cher.example"],
    ids=["u-label", "a-label", "upper-case", "decomposed"],
)
def test_a_blocked_domain_is_blocked_however_it_is_spelled(listed: str, sender: str) -> None:
    """The edge keeps a sender as it was typed; the comparison was of lower-cased text."""
    stream = StreamSettings("support", ("*@in.test",), "https://a.test/", SECRET, block_senders=(listed,))
    assert RoutingTable.from_streams([stream]).is_blocked("support", sender)


@pytest.mark.parametrize(
    ("steps_used", "status", "error", "outcome", "delay"),
    [
        (0, 200, None, Outcome.DELIVERED, None),
        (0, 204, None, Outcome.DELIVERED, None),
        (0, 403, None, Outcome.FAILED, None),
        (0, 500, None, Outcome.RETRY, 60.0),
        (1, 301, None, Outcome.RETRY, 300.0),
        (0, None, "timeout after 30s", Outcome.RETRY, 60.0),
        (2, 500, None, Outcome.FAILED, None),
        (2, 403, None, Outcome.FAILED, None),
    ],
)
def test_retry_decisions(
    steps_used: int, status: int | None, error: str | None, outcome: Outcome, delay: float | None
) -> None:
    answer = answer_of(status)
    decision = decide(
        answer, describe(status, error), attempt=steps_used + 1, steps_used=steps_used, schedule=[60.0, 300.0]
    )
    assert decision.outcome is outcome
    assert decision.delay == delay


def test_retry_reasons_say_why_and_count_every_attempt() -> None:
    assert "refused" in (decide(Answer.REFUSED, "HTTP 403", attempt=1, steps_used=0, schedule=[1.0]).reason or "")
    # Two probes ran besides the two scheduled attempts: the count says four.
    gave_up = decide(Answer.FAILED, "timeout after 5s", attempt=4, steps_used=1, schedule=[1.0])
    assert gave_up.reason == "timeout after 5s; gave up after 4 attempts"


def test_a_failure_while_the_endpoint_is_down_is_held_and_never_fails_a_message() -> None:
    held = decide(Answer.UNREACHABLE, "could not connect", attempt=50, steps_used=9, schedule=[1.0], held=True)
    assert (held.outcome, held.delay) == (Outcome.RETRY, None)
    assert held.reason == "could not connect; held: the endpoint is down"
    refused = decide(Answer.REFUSED, "HTTP 403", attempt=1, steps_used=0, schedule=[1.0], held=True)
    assert refused.outcome is Outcome.FAILED


def test_answers_are_classified_in_one_place() -> None:
    assert [answer_of(s) for s in (200, 299, 403, 404, 500, None)] == [
        Answer.ACCEPTED,
        Answer.ACCEPTED,
        Answer.REFUSED,
        Answer.FAILED,
        Answer.FAILED,
        Answer.FAILED,
    ]
    assert answer_of(None, connected=False) is Answer.UNREACHABLE


def test_one_message_failing_again_and_again_never_takes_the_endpoint_down() -> None:
    health = EndpointHealth(concurrency=4, probe_interval=30.0)
    for second in range(10):
        assert health.judge("poison", Answer.FAILED, now=second) is Change.NONE
    assert health.slots(now=10.0) == Slots(4, probe=False)


def test_endpoint_health_goes_down_on_distinct_failures_probes_and_comes_back() -> None:
    health = EndpointHealth(concurrency=4, probe_interval=30.0)
    assert health.slots(now=0.0) == Slots(4, probe=False)
    health.started(4)
    assert health.slots(now=0.0).free == 0
    assert health.judge("a", Answer.FAILED, now=1.0) is Change.NONE
    assert health.judge("b", Answer.FAILED, now=2.0) is Change.NONE
    assert health.judge("a", Answer.FAILED, now=3.0) is Change.NONE  # still two distinct
    assert health.judge("c", Answer.FAILED, now=10.0) is Change.WENT_DOWN
    assert (health.down_since, health.failing) == (10.0, {"a", "b", "c"})
    for _ in range(4):
        health.ended()
    assert health.slots(now=20.0) == Slots(0, probe=False)  # the first probe is due at 40
    assert health.slots(now=40.0) == Slots(1, probe=True)
    health.started()
    assert health.slots(now=41.0) == Slots(0, probe=False)  # one probe at a time
    assert health.judge("d", Answer.REFUSED, now=42.0) is Change.CAME_BACK  # refused on purpose: it is up
    health.ended()
    assert (health.down, health.failing, health.slots(now=42.0)) == (False, set(), Slots(4, probe=False))


def test_an_endpoint_that_cannot_be_reached_is_down_at_once() -> None:
    health = EndpointHealth(concurrency=4, probe_interval=30.0)
    assert health.judge("a", Answer.UNREACHABLE, now=5.0) is Change.WENT_DOWN
    assert health.judge("b", Answer.UNREACHABLE, now=6.0) is Change.NONE  # down already
    assert health.judge("b", Answer.ACCEPTED, now=7.0) is Change.CAME_BACK


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("5m", 300), ("1h30m", 5400), ("250ms", 0.25), ("2d", 172800)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "m", "5 m", "5x", "1h-3m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


def test_format_duration() -> None:
    assert [format_duration(s) for s in (0.2, 42, 600, 36000)] == ["200ms", "42s", "10m", "10.0h"]


def test_queue_ids_sort_by_time_and_are_unique() -> None:
    ids = [new_queue_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 26 and i.isalnum() for i in ids)
    assert ids[0] <= ids[-1]


def envelope() -> Envelope:
    return Envelope("01ABC", "a@b.test", (Recipient("x@in.test", "support", "h"),), "127.0.0.1:1", "h", False, "t")


def test_spool_entry_round_trip() -> None:
    data = encode_entry(envelope(), b"Subject: hi\r\n\r\nbody\r\n")
    (entry,) = decode_entries(Path("x"), data)
    assert entry.envelope == envelope()
    assert entry.message == b"Subject: hi\r\n\r\nbody\r\n"


def test_a_spool_file_holds_its_entries_in_order() -> None:
    second = dataclasses.replace(envelope(), queue_id="01ABD")
    data = encode_entry(envelope(), b"one\r\n") + encode_entry(second, b"two\r\n")
    entries = decode_entries(Path("x"), data)
    assert [(e.envelope.queue_id, e.message) for e in entries] == [("01ABC", b"one\r\n"), ("01ABD", b"two\r\n")]
    with pytest.raises(CorruptEntry, match="closing copy"):
        decode_entries(Path("x"), data[:-1])


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda d: d[:-3], "closing copy of the header"),
        (lambda d: d[: d.index(b"body") + 2], "bytes, the header says"),
        (lambda d: d.replace(b"body", b"bodY"), "checksum"),
        (lambda d: d.replace(b'"01ABC"', b'"01ABD"'), "checksum"),
        (lambda d: d[:30], "header"),
        (lambda d: b"garbage" + d, "magic"),
    ],
)
def test_spool_entry_damage_is_detected(damage: Callable[[bytes], bytes], why: str) -> None:
    data = encode_entry(envelope(), b"Subject: hi\r\n\r\nbody\r\n")
    with pytest.raises(CorruptEntry, match=why):
        decode_entries(Path("x"), damage(data))


def three_entry_file() -> bytes:
    return b"".join(
        encode_entry(dataclasses.replace(envelope(), queue_id=f"01AB{n}"), f"Subject: {n}\r\n\r\nbody\r\n".encode())
        for n in range(3)
    )


@pytest.mark.parametrize(
    ("damaged", "saved", "lost"),
    [
        (b"Subject: 1", ["01AB0", "01AB2"], True),  # the middle message: read forwards to it, backwards to it
        (b'"01AB0"', ["01AB0", "01AB1", "01AB2"], False),  # the first opening header: its closing copy serves
        (b"Subject: 2", ["01AB0", "01AB1"], True),
    ],
)
def test_a_damaged_spool_file_gives_up_every_intact_entry(damaged: bytes, saved: list[str], lost: bool) -> None:
    data = three_entry_file()
    at = data.index(damaged) + len(damaged) - 1
    salvaged, damage = salvage_spool_file(data[:at] + b"X" + data[at + 1 :])
    assert [header.envelope.queue_id for header, _ in salvaged] == saved
    assert all(message.startswith(b"Subject: ") for _, message in salvaged)
    assert (damage is not None) == lost


def test_a_received_record_carries_the_raw_bytes_and_the_old_json_form_is_still_read() -> None:
    raw = b"Subject: \xff\x00 binary\r\n\r\nline\nwith bare LF and {json} and \\n\r\n"
    value = encode_received(envelope(), raw)
    assert value.startswith(b"inbound-received/2\n")
    assert value.endswith(raw)  # as received: no base64
    assert decode_received(value) == (envelope(), raw)
    old = json.dumps({"envelope": encode_envelope(envelope()), "message": base64.b64encode(raw).decode()}).encode()
    assert decode_received(old) == (envelope(), raw)
    with pytest.raises(ValueError, match="ends its envelope"):
        decode_received(b"inbound-received/2\n{}")

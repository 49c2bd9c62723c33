"""Verdict policies, trace headers, the spamd protocol and outage note, and their config keys: no servers."""

from __future__ import annotations

import io
import json
import logging
import socket
import time
from dataclasses import replace
from email import message_from_bytes
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from rich.console import Console

from inbound.bus import Record
from inbound.bus.embedded import EmbeddedBus
from inbound.config import SpamSettings, StreamSettings, load_settings
from inbound.envelope import Envelope, Recipient
from inbound.errors import ConfigError
from inbound.events import SHOWN_LENGTH
from inbound.ids import new_queue_id
from inbound.ops.status import Status, collect
from inbound.ops.statusview import render_status
from inbound.processing.process import Processor
from inbound.processing.resolver import Resolver
from inbound.processing.screen import Screener, Screening, decide
from inbound.processing.spam import Spamd, SpamdError, SpamScore, parse_response, read_outage
from inbound.processing.verdicts import DkimVerdict, DmarcVerdict, SpfVerdict, Verdicts
from inbound.records import EVENTS, MESSAGES, RECEIVED, decode_event, encode_received
from inbound.routing import RoutingTable

from .harness import SECRET, RecordingProducer, config_problems

HOST = "mx.in.test"
STREAM = StreamSettings("support", ("*@in.test",), "https://a.test/", SECRET)
SPOOFED = Verdicts(
    SpfVerdict("fail", "bank.example"),
    (),
    DmarcVerdict("fail", "reject", "bank.example"),
    "none",
)
GENUINE = Verdicts(
    SpfVerdict("pass", "bank.example"),
    (DkimVerdict("pass", "bank.example", "s1"),),
    DmarcVerdict("pass", "reject", "bank.example"),
    "none",
)
NOW = "2026-11-23T05:00:00.000Z"
SPAMMY = SpamScore(6.5, 5.0, ("GTUBE", "NO_RELAYS"))


@pytest.mark.parametrize(
    ("policy", "blocked", "flags"),
    [
        ({}, None, ()),
        ({"on_dmarc_fail": "flag"}, None, ("dmarc_fail",)),
        ({"on_dmarc_fail": "block"}, "DMARC fail for bank.example (policy reject); on_dmarc_fail = block", ()),
        ({"reject_dmarc_reject": True}, "DMARC fail for bank.example (policy reject); reject_dmarc_reject = true", ()),
        ({"spf_fail": "reject"}, "SPF fail for bank.example; spf_fail = reject", ()),
    ],
)
def test_dmarc_and_spf_policies(policy: dict[str, object], blocked: str | None, flags: tuple[str, ...]) -> None:
    decision = decide(Screening(SPOOFED, None, None), replace(STREAM, **policy), HOST)  # type: ignore[arg-type]
    assert (decision.block_reason, decision.flags) == (blocked, flags)
    assert decision.auth == SPOOFED.as_json()
    genuine = decide(Screening(GENUINE, None, None), replace(STREAM, **policy), HOST)  # type: ignore[arg-type]
    assert (genuine.block_reason, genuine.flags) == (None, ())


def test_temperror_never_blocks() -> None:
    unsure = replace(
        SPOOFED, dmarc=DmarcVerdict("temperror", "reject", "bank.example"), spf=SpfVerdict("temperror", "")
    )
    stream = replace(STREAM, on_dmarc_fail="block", reject_dmarc_reject=True, spf_fail="reject")
    assert decide(Screening(unsure, None, None), stream, HOST).block_reason is None


@pytest.mark.parametrize(
    ("threshold", "on_spam", "is_spam", "blocked", "flags"),
    [
        (None, "flag", True, None, ("spam",)),  # spamd's own required score, 5.0
        (8.0, "flag", False, None, ()),
        (8.0, "block", False, None, ()),
        (6.5, "block", True, "spam score 6.5 >= 6.5; on_spam = block", ()),
        (None, "deliver", True, None, ()),
    ],
)
def test_spam_policies(
    threshold: float | None, on_spam: str, is_spam: bool, blocked: str | None, flags: tuple[str, ...]
) -> None:
    stream = replace(STREAM, spam_threshold=threshold, on_spam=on_spam)
    decision = decide(Screening(None, SPAMMY, None), stream, HOST)
    assert decision.spam == {
        "score": 6.5,
        "threshold": threshold or 5.0,
        "is_spam": is_spam,
        "rules": ["GTUBE", "NO_RELAYS"],
    }
    assert (decision.block_reason, decision.flags) == (blocked, flags)
    assert dict(decision.headers)["X-Spam-Status"].startswith(f"{'Yes' if is_spam else 'No'}, score=6.5 required=")


def test_our_authentication_results_comes_first_and_forged_ones_go() -> None:
    received = (
        ("Authentication-Results", "mx.in.test; spf=pass smtp.mailfrom=bank.example; dmarc=pass"),  # forged
        ("Authentication-Results", "MX.IN.TEST; dkim=pass"),  # forged, other case
        ("Authentication-Results", "relay.bank.example; spf=pass smtp.mailfrom=bank.example"),  # upstream: kept
        ("Authentication-Results", "mx.in.test ;;; not even valid"),  # forged and malformed
        ("X-Spam-Status", "No, score=-100"),  # the sender's own claim
        ("From", "ceo@bank.example"),
    )
    decision = decide(Screening(SPOOFED, SPAMMY, None), STREAM, HOST)
    headers = decision.trace_headers(received)
    assert [n for n, _ in headers] == ["Authentication-Results", "X-Spam-Status", "Authentication-Results", "From"]
    assert headers[0][1].startswith("mx.in.test; spf=fail smtp.mailfrom=bank.example; dkim=none; dmarc=fail")
    assert headers[1][1].startswith("Yes, score=6.5")
    assert headers[2][1].startswith("relay.bank.example;")


@pytest.mark.parametrize(
    "forged",
    [
        "mx.in.test 1; dkim=pass header.d=bank.example; dmarc=pass header.from=bank.example; x=(",  # a version
        "(ours) mx.in.test; dmarc=pass header.from=bank.example; x=(",  # a comment before the id
        "(a (nested \\) one)) MX.in.test (ours); dmarc=pass header.from=bank.example; x=(",
        '"mx.in.test"; dmarc=pass header.from=bank.example',  # the id as a quoted-string
        '"mx.in.\\test"(ours); dmarc=pass header.from=bank.example; x=(',
    ],
)
def test_a_forged_authentication_results_goes_however_little_of_it_parses(forged: str) -> None:
    """authres refused these, and the id read by hand was all the text before ";": they were kept, dmarc=pass."""
    decision = decide(Screening(SPOOFED, None, None), STREAM, HOST)
    assert decision.trace_headers([("Authentication-Results", forged), ("Subject", "pay")]) == [
        *decision.headers,
        ("Subject", "pay"),
    ]
    raw = f"Authentication-Results: {forged}\r\nSubject: pay\r\n\r\nhi\r\n".encode()
    assert decision.trace_raw(raw).count(b"Authentication-Results:") == 1  # ours


@pytest.mark.parametrize(
    "upstream",
    [
        "relay.bank.example 1; dmarc=pass x=(",
        "(mx.in.test) relay.bank.example; dmarc=pass (",
        '"mx.in.test.relay"; dmarc=pass',
        "mx.in.test.relay; dmarc=pass (",
        "(" + "(" * 100_000 + "mx.in.test; dmarc=pass",  # a comment never closed: nothing is the id
    ],
)
def test_an_unparseable_authentication_results_of_another_host_is_kept(upstream: str) -> None:
    decision = decide(Screening(SPOOFED, None, None), STREAM, HOST)
    assert decision.trace_headers([("Authentication-Results", upstream)])[-1] == ("Authentication-Results", upstream)


def test_a_sender_s_authentication_results_is_read_for_its_id_in_linear_time() -> None:
    """authres parsed the whole value first: 900 KB of an escaped comment took 6.5 s, a message."""
    decision = decide(Screening(SPOOFED, None, None), STREAM, HOST)
    nested = "(\\" * 450_000
    started = time.monotonic()
    assert decision.trace_headers([("Authentication-Results", nested)]) == [
        *decision.headers,
        ("Authentication-Results", nested),
    ]
    assert time.monotonic() - started < 1


def test_without_verdicts_or_score_nothing_is_added_but_forgeries_still_go() -> None:
    decision = decide(Screening(None, None, {"status": "unavailable"}), STREAM, HOST)
    received = (
        ("Authentication-Results", "mx.in.test; spf=pass"),
        ("X-Spam-Status", "No, score=-100"),
        ("Subject", "hi"),
    )
    assert decision.trace_headers(received) == [("Subject", "hi")]
    assert (decision.auth, decision.spam, decision.flags) == (None, {"status": "unavailable"}, ())


def test_spamd_response_is_parsed_and_nonsense_refused() -> None:
    score = parse_response(
        b"SPAMD/1.1 0 EX_OK\r\nContent-length: 12\r\nSpam: True ; 1000.3 / 5.0\r\n\r\nGTUBE,NO_RELAYS"
    )
    assert score == SpamScore(1000.3, 5.0, ("GTUBE", "NO_RELAYS"))
    for nonsense in (
        b"HTTP/1.1 200 OK\r\n\r\n",
        b"SPAMD/1.1 76 EX_PROTOCOL\r\n\r\n",
        b"SPAMD/1.1 0 EX_OK\r\n\r\nX",
        b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1.2.3 / 5.0\r\n\r\n",
        b"",
    ):
        with pytest.raises(SpamdError):
            parse_response(nonsense)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_spamd_down_is_logged_once_noted_for_status_and_holds_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spamd = Spamd(SpamSettings(("127.0.0.1", closed_port()), 2.0), tmp_path / "outage.json")
    with caplog.at_level(logging.ERROR, logger="inbound.processing.spam"):
        assert [spamd.score(b"Subject: x\r\n\r\nhi\r\n") for _ in range(3)] == [None, None, None]
    assert len([r for r in caplog.records if "unavailable" in r.getMessage()]) == 1
    outage = read_outage(tmp_path / "outage.json")
    assert outage is not None
    assert "Connection refused" in outage[1]


def test_inbound_status_shows_the_spamd_outage(tmp_path: Path) -> None:
    config = tmp_path / "inbound.toml"
    config.write_text(f'[storage]\ndata_dir = "data"\n[spam]\nspamd = "127.0.0.1:{closed_port()}"\n' + STREAM_TOML)
    settings = load_settings(config)
    Spamd(settings.spam, settings.data.spamd_outage).score(b"\r\nhi\r\n")
    bus = EmbeddedBus(tmp_path / "bus.db")
    try:
        report = collect(settings, bus)
    finally:
        bus.close()
    assert report.spamd_down_for is not None
    assert report.spamd_down_for >= 0
    assert "refused" in (report.spamd_problem or "")


STREAM_TOML = f"""
[[streams]]
name = "support"
addresses = ["*@in.test"]
webhook_url = "https://a.example/"
signing_secret = "{SECRET}"
"""


def test_auth_and_spam_config_is_read(tmp_path: Path) -> None:
    config = tmp_path / "inbound.toml"
    config.write_text(
        '[auth]\nenabled = true\nresolvers = ["127.0.0.1:5353", "[::1]:53"]\ntimeout = "2s"\n'
        '[spam]\nspamd = "127.0.0.1:783"\ntimeout = "3s"\n'
        + STREAM_TOML
        + 'on_dmarc_fail = "flag"\nreject_dmarc_reject = true\nspf_fail = "reject"\n'
        + 'spam_threshold = 7\non_spam = "block"\n'
    )
    settings = load_settings(config)
    assert (settings.auth.enabled, settings.auth.resolvers, settings.auth.timeout) == (
        True,
        (("127.0.0.1", 5353), ("::1", 53)),
        2.0,
    )
    assert (settings.spam.spamd, settings.spam.timeout) == (("127.0.0.1", 783), 3.0)
    stream = settings.stream("support")
    assert (stream.on_dmarc_fail, stream.reject_dmarc_reject, stream.spf_fail) == ("flag", True, "reject")
    assert (stream.spam_threshold, stream.on_spam) == (7.0, "block")


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ('[auth]\nresolvers = ["dns.example:53"]\n', "auth.resolvers", "is not ip:port"),
        ('[auth]\ntimeout = "0s"\n', "auth.timeout", "longer than 0s"),
        ("[auth]\nenable = true\n", "auth.enable", "unknown key"),
        ('[spam]\nspamd = "localhost"\n', "spam.spamd", "is not host:port"),
        (
            "[auth]\nenabled = true\n" + STREAM_TOML + 'on_dmarc_fail = "drop"\n',
            "streams.support.on_dmarc_fail",
            "one of",
        ),
        ("[auth]\nenabled = true\n" + STREAM_TOML + 'spf_fail = "block"\n', "streams.support.spf_fail", '"accept" or'),
        (STREAM_TOML + "reject_dmarc_reject = true\n", "streams.support.reject_dmarc_reject", "[auth] enabled = true"),
        (STREAM_TOML + 'on_spam = "flag"\n', "streams.support.on_spam", "needs [spam] spamd"),
        (
            '[spam]\nspamd = "127.0.0.1:783"\n' + STREAM_TOML + 'spam_threshold = "high"\n',
            "streams.support.spam_threshold",
            "number",
        ),
    ],
)
def test_config_mistakes_name_the_key(tmp_path: Path, text: str, key: str, problem: str) -> None:
    config = tmp_path / "inbound.toml"
    config.write_text(text)
    message = config_problems(config)
    assert key in message
    assert problem in message


def test_processor_with_spamd_down_delivers_unscored_and_valid(
    tmp_path: Path, message_schema: Draft202012Validator
) -> None:
    streams = [replace(STREAM, on_spam="block", spam_threshold=1.0)]
    spamd = Spamd(SpamSettings(("127.0.0.1", closed_port()), 2.0), tmp_path / "outage.json")
    producer = RecordingProducer()
    processor = Processor(RoutingTable.from_streams(streams), producer, streams, Screener(HOST, None, spamd))
    envelope = Envelope(
        new_queue_id(), "a@b.example", (Recipient("help@in.test", "support", None),), "192.0.2.1:4000", "b", False, NOW
    )
    raw = b"Authentication-Results: mx.in.test; dmarc=pass\r\nFrom: a@b.example\r\nSubject: hi\r\n\r\nhello\r\n"
    record = Record(RECEIVED, 0, 0, b"", encode_received(envelope, raw), (), 0)
    processor.handle([record])
    (payload,) = [json.loads(v) for topic, v in producer.sent if topic == MESSAGES]
    message_schema.validate(payload)
    assert (payload["spam"], payload["auth"], payload["flags"]) == ({"status": "unavailable"}, None, [])
    assert [h["name"] for h in payload["headers"]] == ["From", "Subject"]  # the forged verdict is gone


def test_the_activity_log_keeps_a_subject_and_sender_as_long_as_a_line_and_the_payload_keeps_them_whole() -> None:
    producer = RecordingProducer()
    processor = Processor(RoutingTable.from_streams([STREAM]), producer, [STREAM], Screener(HOST, None, None))
    envelope = Envelope(
        new_queue_id(), "a@b.example", (Recipient("help@in.test", "support", None),), "192.0.2.1:4000", "b", False, NOW
    )
    subject, sender = "s" * 100_000, "x" * 2000 + "@b.example"
    raw = f"From: {sender}\r\nSubject: {subject}\r\n\r\nhello\r\n".encode()
    processor.handle([Record(RECEIVED, 0, 0, b"", encode_received(envelope, raw), (), 0)])
    (payload,) = [json.loads(v) for topic, v in producer.sent if topic == MESSAGES]
    assert payload["subject"] == subject
    (summary,) = [e.summary for e in map(decode_event, (v for t, v in producer.sent if t == EVENTS)) if e.summary]
    assert summary.subject == "s" * (SHOWN_LENGTH - 1) + "…"
    assert summary.mail_from == "x" * (SHOWN_LENGTH - 1) + "…"


def test_a_reason_quoting_the_message_is_kept_as_long_as_a_line() -> None:
    stream = replace(STREAM, block_senders=("*@b.example",))
    producer = RecordingProducer()
    processor = Processor(RoutingTable.from_streams([stream]), producer, [stream], Screener(HOST, None, None))
    envelope = Envelope(
        new_queue_id(), "a@c.example", (Recipient("help@in.test", "support", None),), "192.0.2.1:4000", "b", False, NOW
    )
    raw = f"From: {'x' * 2000}@b.example\r\nSubject: hi\r\n\r\nhello\r\n".encode()
    processor.handle([Record(RECEIVED, 0, 0, b"", encode_received(envelope, raw), (), 0)])
    (blocked,) = [e for e in map(decode_event, (v for t, v in producer.sent if t == EVENTS)) if e.reason]
    assert blocked.reason is not None
    assert blocked.reason.startswith("sender xxx")
    assert len(blocked.reason) == SHOWN_LENGTH


def test_a_spamd_that_never_answers_is_unavailable_within_its_timeout(tmp_path: Path) -> None:
    with socket.socket() as silent:  # listens, so connecting works, but never reads or answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        spamd = Spamd(SpamSettings(("127.0.0.1", silent.getsockname()[1]), 0.5), tmp_path / "outage.json")
        started = time.monotonic()
        assert spamd.score(b"Subject: x\r\n\r\nhi\r\n") is None
        assert time.monotonic() - started < 10  # generous: bounded by the 0.5 s timeout
    outage = read_outage(tmp_path / "outage.json")
    assert outage is not None
    assert "timed out" in outage[1]


def test_no_resolvers_configured_and_none_in_the_system_is_a_config_error(tmp_path: Path) -> None:
    empty = tmp_path / "resolv.conf"
    empty.write_text("# no nameserver lines\n")
    with pytest.raises(ConfigError) as caught:
        Resolver((), 1.0, system_config=str(empty))
    assert "auth.resolvers" in str(caught.value)
    assert Resolver((("127.0.0.1", 53),), 1.0, system_config=str(empty))  # configured servers need no system's


def test_status_table_names_the_spamd_outage() -> None:
    report = Status(0, None, {}, (), False, None, spamd_down_for=90.0, spamd_problem="spamd at 127.0.0.1:783: refused")
    output = io.StringIO()
    render_status(report, Console(file=output, width=200))
    shown = output.getvalue()
    assert "spam scoring unavailable for 90s" in shown
    assert "spamd at 127.0.0.1:783: refused" in shown


@pytest.mark.parametrize("newline", [b"\r\n", b"\n"])
def test_trace_headers_go_on_top_of_the_raw_message_and_the_body_is_untouched(newline: bytes) -> None:
    raw = newline.join(
        [
            b"Received: from x",
            b"Authentication-Results: mx.in.test;",  # forged, folded over two lines
            b"\tdmarc=pass",
            b"Subject: hi",
            b"",
            b"Authentication-Results: mx.in.test; this line is body text",
            b"",
        ]
    )
    decision = decide(Screening(SPOOFED, None, None), STREAM, HOST)
    delivered = decision.trace_raw(raw)
    ours, _, rest = delivered.partition(b"\r\n")
    assert ours.startswith(b"Authentication-Results: mx.in.test; spf=fail")
    assert rest == newline.join([b"Received: from x", b"Subject: hi", b"", raw.split(newline * 2, 1)[1]])


def test_no_text_in_the_verdicts_or_the_score_can_break_a_line_of_our_trace_headers() -> None:
    """Our header values carry text that senders and spamd write: a line break there would start a header."""
    planted = "x\rX-Spam-Status: No, score=-9.0\nX-Planted: 1\x00"
    verdicts = Verdicts(
        SpfVerdict("pass", planted),
        (DkimVerdict("fail", planted, planted),),
        DmarcVerdict("fail", "reject", planted),
        "none",
    )
    decision = decide(Screening(verdicts, SpamScore(12.0, 5.0, (planted,)), None), STREAM, HOST)
    assert not [value for _, value in decision.headers if {"\r", "\n", "\0"} & set(value)]
    delivered = message_from_bytes(decision.trace_raw(b"Subject: hi\r\n\r\nbody\r\n"))
    assert delivered.keys() == ["Authentication-Results", "X-Spam-Status", "Subject"]
    assert delivered["X-Spam-Status"].startswith("Yes, score=12.0")

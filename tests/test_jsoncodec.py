"""The hot-path JSON codec: the stdlib's compact output, and nothing a sender writes breaks it."""

from __future__ import annotations

import json

import pytest

from inbound import jsoncodec
from inbound.events import Event, EventType, Summary
from inbound.records import decode_event, encode_event


def test_output_is_the_stdlib_s_compact_utf8_json() -> None:
    value = {"subject": "Grüße ✉", "to": ["a@b.test"], "size": 10240, "score": 2.5, "none": None, "ok": True}
    assert jsoncodec.dumps(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    assert jsoncodec.loads(jsoncodec.dumps(value)) == value


def test_a_lone_surrogate_is_written_escaped_and_read_back() -> None:
    """Undecodable header bytes can become lone surrogates; orjson alone refuses them both ways."""
    value = {"subject": "bad \udc80 byte"}
    assert jsoncodec.dumps(value) == b'{"subject":"bad \\udc80 byte"}'
    assert jsoncodec.loads(jsoncodec.dumps(value)) == value


def test_an_event_with_a_lone_surrogate_survives_the_bus() -> None:
    summary = Summary("2026-11-23T00:00:00Z", "a@b.test", ("x@in.test",), "\udcff subject")
    event = Event(EventType.PROCESSED, "Q1-s", "Q1", "s", "2026-11-23T00:00:00Z", summary=summary)
    assert decode_event(encode_event(event)) == event


@pytest.mark.parametrize("text", [b"{", b"\xff", "[1,]"])
def test_invalid_json_raises_what_the_stdlib_raises(text: bytes | str) -> None:
    with pytest.raises((json.JSONDecodeError, UnicodeDecodeError)):  # both ValueErrors, as callers expect
        jsoncodec.loads(text)

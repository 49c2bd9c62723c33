"""Verdicts in every payload format: our trace headers everywhere, the provider's own fields where it has one.

Uses the format tests' message (tests/test_formats.py), with a forged
Authentication-Results and X-Spam-Status added, and reads the provider formats
back with django-anymail where it understands spam fields.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from inbound.processing.formats import Rendered, Source, render
from inbound.processing.parse import parse_message
from inbound.processing.screen import Screening, decide
from inbound.processing.spam import SpamScore
from inbound.processing.verdicts import DkimVerdict, DmarcVerdict, SpfVerdict, Verdicts

from .anymail_check import anymail_message
from .fixtures import validator
from .test_formats import DELIVERY_ID, ENVELOPE, MESSAGE, field, form_fields, stream

HOST = "mx.in.test"
FORGED = (
    b"Authentication-Results: mx.in.test; spf=pass; dkim=pass;\r\n\tdmarc=pass\r\nX-Spam-Status: No, score=-99\r\n"
    b"X-Spam-Score: -99.0\r\nX-Spam-Tests: ALL_TRUSTED\r\nReceived-SPF: pass (domain of example.org)\r\n"
)
RAW = FORGED + MESSAGE
VERDICTS = Verdicts(
    SpfVerdict("softfail", "example.org"),
    (DkimVerdict("pass", "example.org", "s1"), DkimVerdict("fail", "list.example", "k")),
    DmarcVerdict("pass", "none", "example.org"),
    "none",
)
SCORE = SpamScore(6.5, 5.0, ("BAYES_99", "HTML_MESSAGE"))


def rendered(payload_format: str, **options: Any) -> Rendered:
    settings = stream(payload_format, **options)
    decision = decide(Screening(VERDICTS, SCORE, None), settings, HOST)
    return render(Source(parse_message(RAW), ENVELOPE, settings, DELIVERY_ID, RAW, decision))


def assert_trace_on_top(section: bytes) -> None:
    """Ours first (AR, then X-Spam-Status), then the message's own, without the forged two."""
    assert section.startswith(b"Authentication-Results: mx.in.test; spf=softfail smtp.mailfrom=example.org;")
    assert section.count(b"Authentication-Results:") == 1
    assert section.count(b"X-Spam-Status:") == 1
    assert b"\r\nX-Spam-Status: Yes, score=6.5 required=5.0 tests=BAYES_99,HTML_MESSAGE\r\n" in section
    assert b"score=-99" not in section
    assert b"-99.0" not in section
    assert b"ALL_TRUSTED" not in section
    assert b"Received-SPF" not in section


def test_inbound_format() -> None:
    payload = json.loads(rendered("inbound", include_raw=True).body)
    assert not list(validator("inbound-message.schema.json").iter_errors(payload))
    assert payload["auth"] == VERDICTS.as_json()
    assert payload["spam"] == {"score": 6.5, "threshold": 5.0, "is_spam": True, "rules": ["BAYES_99", "HTML_MESSAGE"]}
    assert [h["name"] for h in payload["headers"][:3]] == ["Authentication-Results", "X-Spam-Status", "Received"]
    raw = base64.b64decode(payload["raw"]["content"])
    assert_trace_on_top(raw)
    assert raw.endswith(MESSAGE)  # every byte of the message itself as accepted
    assert payload["raw"]["size"] == len(raw)


def test_postmark_format_puts_verdicts_where_postmark_does_and_anymail_reads_the_score() -> None:
    payload = json.loads(rendered("postmark", include_raw=True).body)
    assert not list(validator("postmark-inbound.schema.json").iter_errors(payload))
    headers = [(h["Name"], h["Value"]) for h in payload["Headers"]]
    assert headers[1][0] == "Authentication-Results"
    assert headers[2:6] == [
        ("X-Spam-Status", "Yes"),
        ("X-Spam-Score", "6.5"),
        ("X-Spam-Tests", "BAYES_99,HTML_MESSAGE"),
        ("Received-SPF", "softfail (domain of example.org)"),
    ]
    names = [n for n, _ in headers]
    assert [names.count(n) for n in ("X-Spam-Status", "X-Spam-Score", "X-Spam-Tests", "Received-SPF")] == [1, 1, 1, 1]
    assert_trace_on_top(payload["RawEmail"].encode())
    result = rendered("postmark")
    message = anymail_message("postmark", result.content_type, result.body)
    assert (message.spam_score, message.spam_detected) == (6.5, True)


@pytest.mark.parametrize("raw_mode", [False, True])
def test_sendgrid_format_fills_its_verdict_fields(raw_mode: bool) -> None:
    result = rendered("sendgrid", sendgrid_raw=raw_mode)
    parts = form_fields(result)
    assert field(parts, "dkim") == b"{@example.org : pass, @list.example : fail}"
    assert field(parts, "SPF") == b"softfail"
    assert field(parts, "spam_score") == b"6.5"
    assert field(parts, "spam_report").startswith(b"Yes, score=6.5")
    assert_trace_on_top(field(parts, "email" if raw_mode else "headers"))
    assert anymail_message("sendgrid", result.content_type, result.body).spam_score == 6.5


def test_mailgun_format_lists_our_headers_first() -> None:
    parts = form_fields(rendered("mailgun"))
    names = [name for name, _ in json.loads(field(parts, "message-headers"))]
    assert names[:3] == ["Authentication-Results", "X-Spam-Status", "Received"]
    assert names.count("Authentication-Results") == 1

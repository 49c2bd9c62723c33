"""A parse job crosses to the worker as it left: every field, every stream's settings, the decision."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from inbound.config import ProcessingSettings, StreamSettings
from inbound.envelope import Envelope, Recipient
from inbound.processing.job import ParseJob, RenderRequest, _by_fields, decode_job, encode_job
from inbound.processing.screen import Decision


def test_a_job_with_everything_in_it_comes_back_equal() -> None:
    support = StreamSettings("support", ("*@in.test",), "https://a.test/", "whsec_a", block_senders=("x@y.test",))
    sales = StreamSettings(
        "sales", ("sales@in.test",), "https://b.test/", "whsec_b", payload_format="mailgun", spam_threshold=4.5
    )
    envelope = Envelope(
        "q1",
        "a@sender.test",
        (Recipient("help+42@in.test", "support", "42"), Recipient("sales@in.test", "sales", None)),
        "192.0.2.1",
        "mx.sender.test",
        True,
        "2026-11-24T10:00:00.000Z",
        tls_version="TLSv1.3",
    )
    decision = Decision(None, ("spam",), {"spf": {"result": "pass"}}, {"score": 5.0}, (("X-A", "b"),), "mx.in.test")
    job = ParseJob(
        b"Subject: hi\r\n\r\nbody\r\n",
        envelope,
        (RenderRequest(support, "q1-support", decision), RenderRequest(sales, "q1-sales", None)),
        ProcessingSettings(parse_timeout=7.5),
    )
    assert decode_job(encode_job(job)) == job


def test_a_class_that_cannot_be_rebuilt_from_its_fields_is_refused() -> None:
    @dataclass(frozen=True, slots=True)
    class Derived:
        given: str
        derived: str = field(init=False, default="")

    with pytest.raises(TypeError, match="cannot be rebuilt"):
        _by_fields(Derived)


@dataclass(frozen=True, slots=True)
class OneField:
    value: str


def test_a_class_of_one_field_is_rebuilt_from_it() -> None:
    reduce = _by_fields(OneField)
    cls, args = reduce(OneField("only"))
    assert cls(*args) == OneField("only")

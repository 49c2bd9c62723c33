"""Attachment policy per stream (issue 10 part 5): what a stream does not take is listed, never silently missing."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from inbound.config import StreamSettings, load_settings
from inbound.processing.formats import Source, render
from inbound.processing.parse import parse_message

from .fixtures import validator
from .harness import config_problems
from .test_fidelity import MESSAGES
from .test_formats import CONFIG, ENVELOPE
from .test_parse import schema

__all__ = ["schema"]  # the fixture, shared with test_parse

PARSED = parse_message((MESSAGES / "four-attachments.eml").read_bytes())
STREAM = StreamSettings("support", ("help@in.test",), "https://app.example.com/inbound", "whsec_x")


def rendered(stream: StreamSettings) -> dict[str, object]:
    body = render(Source(PARSED, ENVELOPE, stream, f"{ENVELOPE.queue_id}-support", b"")).body
    return dict(json.loads(body))


def test_no_policy_keeps_everything(schema: Draft202012Validator) -> None:
    payload = rendered(STREAM)
    schema.validate(payload)
    assert [a["filename"] for a in payload["attachments"]] == ["invoice.pdf", "SETUP.EXE", "photo.png", "table.csv"]
    assert payload["dropped_attachments"] == []


def test_types_then_size_then_count(schema: Draft202012Validator) -> None:
    stream = replace(STREAM, drop_attachment_types=(".exe", "text/*"), max_attachment_size=500, max_attachments=0)
    payload = rendered(stream)
    schema.validate(payload)
    assert payload["attachments"] == []
    assert payload["dropped_attachments"] == [
        {"filename": "invoice.pdf", "content_type": "application/pdf", "size": 24, "reason": "max_attachments"},
        {
            "filename": "SETUP.EXE",
            "content_type": "application/octet-stream",
            "size": 66,
            "reason": "drop_attachment_types",
        },
        {"filename": "photo.png", "content_type": "image/png", "size": 1008, "reason": "max_attachment_size"},
        {"filename": "table.csv", "content_type": "text/csv", "size": 8, "reason": "drop_attachment_types"},
    ]


def test_count_keeps_the_first_in_message_order() -> None:
    payload = rendered(replace(STREAM, max_attachments=2, drop_attachment_types=("image/png",)))
    assert [a["filename"] for a in payload["attachments"]] == ["invoice.pdf", "SETUP.EXE"]  # type/subtype matched
    assert [(d["filename"], d["reason"]) for d in payload["dropped_attachments"]] == [
        ("photo.png", "drop_attachment_types"),
        ("table.csv", "max_attachments"),
    ]


@pytest.mark.parametrize(
    ("payload_format", "listed"),
    [
        ("postmark", b'"DroppedAttachments":[{"Name":"SETUP.EXE","ContentType":"application/octet-stream",'),
        ("mailgun", b'name="dropped-attachments"\r\n\r\n[{"filename": "SETUP.EXE", "content_type"'),
        ("sendgrid", b'name="dropped_attachments"\r\n\r\n[{"filename": "SETUP.EXE", "content_type"'),
    ],
)
def test_every_format_sees_the_policy(payload_format: str, listed: bytes) -> None:
    """The policy is applied before any format maps fields: a dropped file is in no format's files,
    and each format lists it (a field of our own beside the provider's)."""
    stream = replace(STREAM, payload_format=payload_format, drop_attachment_types=(".exe",))
    if payload_format == "mailgun":
        stream = replace(stream, mailgun_signing_key="k")
    body = render(Source(PARSED, ENVELOPE, stream, f"{ENVELOPE.queue_id}-support", b"")).body
    assert b"invoice.pdf" in body
    assert body.count(b"SETUP.EXE") == 1
    assert listed in body
    without = render(Source(PARSED, ENVELOPE, replace(stream, drop_attachment_types=()), "x-support", b"")).body
    assert b"ropped" not in without  # nothing dropped: the provider's body exactly
    if payload_format == "postmark":
        assert not list(validator("postmark-inbound.schema.json").iter_errors(json.loads(body)))


def test_policy_keys_are_read(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text(
        CONFIG + 'max_attachment_size = 10485760\nmax_attachments = 5\ndrop_attachment_types = [".EXE", "image/*"]\n'
    )
    stream = load_settings(path, {}).stream("support")
    assert (stream.max_attachment_size, stream.max_attachments, stream.drop_attachment_types) == (
        10485760,
        5,
        (".exe", "image/*"),
    )


@pytest.mark.parametrize(
    ("extra", "key", "problem"),
    [
        ("max_attachment_size = 0", "streams.support.max_attachment_size", "must be a whole number, 1 or more"),
        ('max_attachment_size = "10MB"', "streams.support.max_attachment_size", "must be a whole number, 1 or more"),
        ("max_attachments = -1", "streams.support.max_attachments", "must be a whole number, 0 or more"),
        ("max_attachments = true", "streams.support.max_attachments", "must be a whole number, 0 or more"),
        ('drop_attachment_types = ["exe"]', "streams.support.drop_attachment_types", "'exe' is neither a content type"),
        ('drop_attachment_types = "image/png"', "streams.support.drop_attachment_types", "must be"),
    ],
)
def test_policy_keys_are_checked(tmp_path: Path, extra: str, key: str, problem: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(CONFIG + extra + "\n")
    message = config_problems(path)
    assert f"bad.toml: {key}" in message
    assert problem in message

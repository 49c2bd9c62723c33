"""Logs: text for people, JSON for pipelines; ids lifted into fields, times with their zone, no bodies or secrets."""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

import pytest

from inbound.log import JsonFormatter, TextFormatter

from .fixtures import Pipeline
from .harness import SECRET, send, simple_message

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def record(message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    info = None
    if exc:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            info = sys.exc_info()
    return logging.LogRecord("inbound.edge.smtp", logging.INFO, __file__, 1, message, args, info)


def test_json_lines_lift_the_ids_into_fields() -> None:
    line = json.loads(JsonFormatter().format(record("queue_id=%s stage=receive accepted %d bytes", "01JD0001", 42)))
    assert line == {
        "time": line["time"], "level": "INFO", "logger": "inbound.edge.smtp", "stage": "receive",
        "queue_id": "01JD0001", "message": "accepted 42 bytes",
    }  # fmt: skip
    assert RFC3339_UTC.match(line["time"])
    plain = json.loads(JsonFormatter().format(record("smtp listening on %s", "127.0.0.1:25")))
    assert plain["message"] == "smtp listening on 127.0.0.1:25"
    assert not {"stage", "queue_id", "delivery_id", "stream"} & set(plain)
    failed = json.loads(JsonFormatter().format(record("stage=deliver crashed", exc=True)))
    assert failed["exception"].startswith("Traceback")
    assert "RuntimeError: boom" in failed["exception"]


def test_text_lines_say_their_zone() -> None:
    text = TextFormatter().format(record("queue_id=%s stage=receive accepted", "01JD0001"))
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO inbound.edge.smtp queue_id=01JD0001 ", text)


def test_a_text_line_stays_one_line_whatever_the_message_holds() -> None:
    forged = "bad\r\n2026-11-24T00:00:00.000Z INFO inbound.delivery delivery_id=FORGED delivered\x1b[2J\u2028\x85"
    text = TextFormatter().format(record("queue_id=%s stage=process failed: %s", "01JD0001", forged))
    assert text.splitlines() == [text]
    assert text.endswith("failed: bad\\r\\n2026-11-24T00:00:00.000Z INFO inbound.delivery delivery_id=FORGED"
                         " delivered\\x1b[2J\\u2028\\x85")  # fmt: skip
    assert "\ttab" in TextFormatter().format(record("a\ttab"))  # a tab ends no line


# A folded Subject that mail-parser cannot decode: it used to log the header whole, and the
# parse worker's log went out as the library wrote it, so the fold began a line of the stranger's.
FORGED_LINE = "2026-11-24T00:00:00.000Z INFO inbound.delivery.deliver delivery_id=FORGED stage=deliver delivered"
UNDECODABLE_SUBJECT = f"=?ISO-2022-JP?B?GyRCJUYlOSVIGyhTo: C?=\r\n {FORGED_LINE}"


@pytest.mark.e2e
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_message_writes_no_line_of_its_own_into_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log_format: str
) -> None:
    monkeypatch.setenv("INBOUND_LOG_FORMAT", log_format)
    pipeline = Pipeline(tmp_path, 'backend = "embedded"')
    try:
        config = pipeline.configure()
        process = pipeline.start()
        queue_id = send(config, "a@sender.test", ["help@example.org"], simple_message(UNDECODABLE_SUBJECT))
        pipeline.wait_status(f"{queue_id}-support", "delivered")
        assert process.terminate() == 0
        lines = process.log().splitlines()
    finally:
        pipeline.close()
    assert any(queue_id in line for line in lines)
    for line in lines:
        if log_format == "json":
            assert RFC3339_UTC.match(json.loads(line)["time"])
        else:
            assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO|WARNING|ERROR) ", line), line
    assert not any(line.lstrip().startswith(FORGED_LINE[:30]) for line in lines)


@pytest.mark.e2e
def test_serve_logs_json_without_bodies_or_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INBOUND_LOG_FORMAT", "json")  # as `serve --log-format json` passes it on
    pipeline = Pipeline(tmp_path, 'backend = "embedded"')
    try:
        config = pipeline.configure()
        process = pipeline.start()
        queue_id = send(config, "a@sender.test", ["help@example.org"], simple_message(body="the secret plans"))
        pipeline.wait_status(f"{queue_id}-support", "delivered")
        assert process.terminate() == 0
        lines = [json.loads(line) for line in process.log().splitlines()]
    finally:
        pipeline.close()
    assert all(RFC3339_UTC.match(line["time"]) for line in lines)
    stages = {line.get("stage") for line in lines if line.get("queue_id") == queue_id}
    assert {"receive", "publish"} <= stages
    assert any(line.get("delivery_id") == f"{queue_id}-support" and line.get("stream") == "support" for line in lines)
    text = json.dumps(lines)
    assert "secret plans" not in text
    assert SECRET.removeprefix("whsec_") not in text

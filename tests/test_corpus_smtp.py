"""Every corpus message, sent over SMTP to a real server, arrives as a payload that validates
against the schema and agrees with Python's email package on subject, sender and attachments."""

from __future__ import annotations

import smtplib
from typing import Any

from .corpus import agrees_with_stdlib, corpus_files, corpus_id, wire_bytes
from .fixtures import Pipeline
from .harness import send_on, smtp_port_of, wait_for


def test_every_corpus_message_over_smtp(pipeline: Pipeline, message_schema: Any) -> None:
    config = pipeline.configure()
    pipeline.start()
    files = corpus_files()
    sent: dict[str, tuple[str, bytes]] = {}
    with smtplib.SMTP("127.0.0.1", smtp_port_of(config), timeout=60) as smtp:
        smtp.ehlo("corpus.test")
        for path in files:
            raw = wire_bytes(path)
            sent[send_on(smtp, "corpus@sender.test", ["x@in.test"], raw)] = (corpus_id(path), raw)
    wait_for(lambda: len(pipeline.receiver.by_queue_id()) == len(files), 180, f"all {len(files)} at the webhook")
    arrived = pipeline.receiver.by_queue_id()
    assert set(arrived) == set(sent)
    for queue_id, hits in arrived.items():
        name, raw = sent[queue_id]
        payload = hits[0].json
        message_schema.validate(payload)
        agrees_with_stdlib(name, raw, payload)

"""Verdicts and spam through the real service: smtplib -> ``inbound serve`` -> webhook, with a loopback
DNS server publishing the senders' records and a real spamd scoring.
"""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from inbound.config import SpamSettings
from inbound.processing.spam import Spamd
from tests.dnsserver import DnsServer
from tests.harness import (
    InboundProcess,
    WebhookReceiver,
    activity,
    run_cli,
    send,
    smtp_port_of,
    stream_toml,
    wait_for,
    write_config,
)
from tests.mailauth import SenderDomain, message
from tests.spamd import GTUBE, SpamdProcess

HOSTNAME = "mx.test.example"  # what tests/harness.py configures as smtp.hostname


@pytest.fixture
def service(tmp_path: Path, dns_server: DnsServer, spamd: SpamdProcess) -> Iterator[tuple[Path, WebhookReceiver]]:
    receiver = WebhookReceiver().start()
    policies = 'reject_dmarc_reject = true\non_dmarc_fail = "flag"\nspf_fail = "reject"\non_spam = "block"\n'
    config = write_config(
        tmp_path,
        streams=stream_toml("support", ["*@in.test"], receiver.url("/hook")) + policies,
        extra=f'[auth]\nenabled = true\nresolvers = ["{dns_server.address}"]\ntimeout = "3s"\n'
        f'[spam]\nspamd = "{spamd.address}"\ntimeout = "20s"\n',
    )
    run_cli("init", config=config)
    process = InboundProcess(config).start()
    yield config, receiver
    process.stop()
    receiver.stop()


def refusal(config: Path, mail_from: str, raw: bytes) -> tuple[str, int, bytes]:
    """(stage, code, reply) of the first refused command of a transaction, or ("accepted", 250, ...)."""
    with smtplib.SMTP("127.0.0.1", smtp_port_of(config), timeout=30) as smtp:
        smtp.ehlo("client.test")
        code, reply = smtp.mail(mail_from)
        if code != 250:
            return "MAIL", code, reply
        code, reply = smtp.rcpt("help@in.test")
        if code != 250:
            return "RCPT", code, reply
        code, reply = smtp.data(raw)
        return ("DATA" if code != 250 else "accepted"), code, reply


def test_verdicts_policies_and_spam_end_to_end(
    service: tuple[Path, WebhookReceiver], dns_server: DnsServer, message_schema: Draft202012Validator
) -> None:
    config, receiver = service
    genuine = SenderDomain(dns_server, "example.org").spf("v=spf1 ip4:127.0.0.1 -all").dmarc("v=DMARC1; p=reject")
    SenderDomain(dns_server, "bank.example").spf("v=spf1 -all").dmarc("v=DMARC1; p=reject")
    SenderDomain(dns_server, "shop.example").dmarc("v=DMARC1; p=quarantine")
    SenderDomain(dns_server, "nospf.example").spf("v=spf1 -all")

    # SPF fail at MAIL FROM, DMARC p=reject fail at the end of DATA: refused, nothing accepted.
    stage, code, reply = refusal(config, "x@nospf.example", message("x@nospf.example"))
    assert (stage, code) == ("MAIL", 550)
    assert reply.startswith(b"5.7.1")
    stage, code, reply = refusal(config, "attacker@evil.example", message("ceo@bank.example", subject="Wire now"))
    assert (stage, code) == ("DATA", 550)
    assert reply.startswith(b"5.7.1")
    assert b"bank.example" in reply

    forged = f"Authentication-Results: {HOSTNAME}; spf=pass; dkim=pass; dmarc=pass\r\n"
    signed = genuine.sign(message(extra=forged))
    queue_ids = {
        "genuine": send(config, "alice@example.org", ["help@in.test"], signed),
        "quarantine": send(config, "x@evil.example", ["help@in.test"], message("sales@shop.example")),
        "gtube": send(config, "alice@example.org", ["help@in.test"], genuine.sign(message(body=GTUBE))),
    }
    wait_for(lambda: len(receiver.on("/hook")) == 2, 60, "two deliveries")
    posted = {hit.json["queue_id"]: hit.json for hit in receiver.on("/hook")}
    for payload in posted.values():
        message_schema.validate(payload)

    payload = posted[queue_ids["genuine"]]
    assert payload["auth"] == {
        "spf": {"result": "pass", "domain": "example.org"},
        "dkim": [{"result": "pass", "domain": "example.org", "selector": "s1"}],
        "dmarc": {"result": "pass", "policy": "reject", "domain": "example.org"},
        "arc": {"result": "none"},
    }
    first, second = payload["headers"][:2]
    assert first["name"] == "Authentication-Results"
    assert first["value"].startswith(f"{HOSTNAME}; spf=pass smtp.mailfrom=example.org; dkim=pass")
    assert second["name"] == "X-Spam-Status"
    ours = [h for h in payload["headers"] if h["name"] == "Authentication-Results"]
    assert ours == [first]  # the forged one claiming our hostname is gone
    assert payload["spam"]["is_spam"] is False
    assert payload["spam"]["threshold"] == 5.0
    assert payload["flags"] == []

    quarantined = posted[queue_ids["quarantine"]]
    assert quarantined["auth"]["dmarc"] == {"result": "fail", "policy": "quarantine", "domain": "shop.example"}
    assert quarantined["flags"] == ["dmarc_fail"]

    def gtube_blocked() -> dict[str, object] | None:
        return next((r for r in activity(config) if r["delivery_id"] == f"{queue_ids['gtube']}-support"), None)

    record = wait_for(lambda: (r := gtube_blocked()) and r["status"] == "blocked" and r, 60, "GTUBE blocked")
    assert "on_spam = block" in str(record["reason"])
    assert queue_ids["gtube"] not in posted
    verdicts: Any = record["verdicts"]  # the activity log says why, as the payload would have
    assert verdicts["auth"]["dkim"] == [{"result": "pass", "domain": "example.org", "selector": "s1"}]
    assert verdicts["spam"]["is_spam"] is True


def test_spamd_scores_gtube_as_spam_and_a_recovery_clears_the_outage_note(spamd: SpamdProcess, tmp_path: Path) -> None:
    marker = tmp_path / "spamd-unavailable.json"
    marker.write_text('{"since": 0, "problem": "down before a restart"}')
    host, port = spamd.address.split(":")
    scorer = Spamd(SpamSettings((host, int(port)), 30.0), marker)
    score = scorer.score(message(body=GTUBE))
    assert score is not None
    assert score.score >= 1000
    assert "GTUBE" in score.rules
    assert not marker.exists()
    plain = scorer.score(message(body="See you at lunch tomorrow."))
    assert plain is not None
    assert plain.score < plain.required

"""SIGHUP's stream table reload: what is taken, what is refused, and each stage's swap.

In process and exact: :func:`inbound.reload.reread` over real files, the SMTP
edge over a real socket (edge_harness), the processor with a recording
producer. The deliverer's swap is tested with its harness in test_delivery.py;
``test_hup_swaps_the_stream_table_of_a_running_service`` below proves the
whole of it on a real ``inbound serve``.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import pytest

from inbound import reload
from inbound.bus import Record
from inbound.config import Settings, StreamSettings, load_settings
from inbound.edge.authpolicy import SmtpAuthPolicy
from inbound.envelope import Envelope, Recipient
from inbound.events import EventType
from inbound.ids import new_queue_id
from inbound.processing.auth import Authenticator
from inbound.processing.process import Processor
from inbound.records import EVENTS, MESSAGES, RECEIVED, decode_event, encode_received
from inbound.reload import reread
from inbound.routing import RoutingTable

from .edge_harness import Client, EdgeServers
from .harness import (
    ROOT,
    SECRET,
    InboundProcess,
    RecordingProducer,
    WebhookReceiver,
    run_cli,
    send,
    simple_message,
    stream_toml,
    wait_for,
    write_config,
)


def config_text(streams: str, *, port: int = 2525, allow_private: bool = False, data_dir: str = "var") -> str:
    return f"""
[smtp]
listen = "127.0.0.1:{port}"
[storage]
data_dir = "{data_dir}"
[webhooks]
allow_private = {json.dumps(allow_private)}
{streams}
"""


SUPPORT = stream_toml("support", ["*@in.test"], "https://hooks.example.test/support")


@pytest.fixture
def running(tmp_path: Path) -> Settings:
    path = tmp_path / "inbound.toml"
    path.write_text(config_text(SUPPORT))
    return load_settings(path, {})


def test_a_valid_file_gives_its_streams_and_keeps_every_other_setting(
    running: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    changed = stream_toml("support", ["help@in.test"], "https://hooks.example.test/v2")
    added = stream_toml("sales", ["*@sales.test"], "https://hooks.example.test/sales", block=["*@spam.test"])
    running.path.write_text(config_text(changed + added, port=2626, data_dir="elsewhere"))
    with caplog.at_level(logging.INFO):
        reloaded = reread(running, {})
    assert reloaded is not None
    assert [(s.name, s.addresses, s.webhook_url) for s in reloaded.streams] == [
        ("support", ("help@in.test",), "https://hooks.example.test/v2"),
        ("sales", ("*@sales.test",), "https://hooks.example.test/sales"),
    ]
    assert reloaded.stream("sales").block_senders == ("*@spam.test",)
    assert replace(reloaded, streams=running.streams) == running  # nothing else moved
    path = running.path
    assert caplog.messages == [
        f"SIGHUP: {path}: smtp.listen changed: it takes a restart; the value in use stays",
        f"SIGHUP: {path}: storage.data_dir changed: it takes a restart; the value in use stays",
        f"SIGHUP: {path}: stream table reloaded (2 streams): added sales; changed support",
    ]


def test_an_unchanged_file_says_so(running: Settings, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        assert reread(running, {}) == running
    assert caplog.messages == [f"SIGHUP: {running.path}: no stream changed"]


def test_an_invalid_file_keeps_everything_and_logs_each_problem_naming_file_and_key(
    running: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    broken = SUPPORT.replace("https://hooks.example.test/support", "ftp://nowhere") + "colour = 1\n"
    running.path.write_text(config_text(broken))
    assert reread(running, {}) is None
    path = running.path
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors[0].startswith(f"SIGHUP: {path}: streams.support.colour: unknown key (known: addresses, ")
    assert errors[1:] == [
        f"SIGHUP: {path}: streams.support.webhook_url: 'ftp://nowhere' is not an http(s) URL",
        f"SIGHUP: 2 problem(s) in {path}: the configuration in use stays",
    ]


def test_a_file_that_is_not_toml_or_is_gone_keeps_everything(running: Settings) -> None:
    running.path.write_bytes(b"[smtp\n\xff")
    assert reread(running, {}) is None
    running.path.unlink()
    assert reread(running, {}) is None


def test_a_stream_valid_only_through_a_restart_setting_is_refused(
    running: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    private = stream_toml("support", ["*@in.test"], "http://127.0.0.1:9/hook")
    running.path.write_text(config_text(private, allow_private=True))
    assert reread(running, {}) is None
    assert f"SIGHUP: {running.path}: streams.support.webhook_url: " in caplog.text
    assert "webhooks.allow_private takes a restart" in caplog.text


def test_a_verdict_policy_without_auth_running_is_refused(running: Settings, caplog: pytest.LogCaptureFixture) -> None:
    policy = SUPPORT + 'spf_fail = "reject"\n'
    running.path.write_text(config_text(policy) + "[auth]\nenabled = true\n")
    assert reread(running, {}) is None
    assert "streams.support: its verdict policy needs [auth] enabled, which takes a restart" in caplog.text


def received(rcpt: str, stream: str, sender: str = "alice@sender.test", body: str = "hello") -> Record:
    envelope = Envelope(new_queue_id(), sender, (Recipient(rcpt, stream, None),), "192.0.2.1:4000", "b", False, "t")
    raw = f"From: {sender}\r\nSubject: hi\r\n\r\n{body}\r\n".encode()
    return Record(RECEIVED, 0, 0, b"", encode_received(envelope, raw), (), 0)


def test_the_processor_takes_new_streams_from_its_next_batch() -> None:
    old = [StreamSettings("support", ("*@in.test",), "https://a.test/", SECRET)]
    new = [
        StreamSettings("support", ("*@in.test",), "https://a.test/", SECRET, block_senders=("*@sender.test",)),
        StreamSettings("sales", ("*@sales.test",), "https://b.test/", SECRET),
    ]
    producer = RecordingProducer()
    processor = Processor(RoutingTable.from_streams(old), producer, old)
    processor.handle([received("help@in.test", "support")])
    processor.use(RoutingTable.from_streams(new), new)
    processor.handle([received("help@in.test", "support"), received("deals@sales.test", "sales")])
    outcomes = [(e.stream, e.type) for e in (decode_event(v) for topic, v in producer.sent if topic == EVENTS)]
    assert outcomes == [
        ("support", EventType.PROCESSED),
        ("support", EventType.BLOCKED),  # the new block list
        ("sales", EventType.PROCESSED),  # the new stream
    ]
    assert len([v for topic, v in producer.sent if topic == MESSAGES]) == 2


def test_the_edge_routes_new_rcpts_by_the_new_table_and_keeps_what_it_accepted(make_server: EdgeServers) -> None:
    settings, spool = make_server()
    handler = make_server.handlers[-1]
    client = Client(settings)
    try:
        client.say(b"EHLO client.test\r\n")
        assert client.say(b"MAIL FROM:<a@sender.test>\r\n").startswith(b"250")
        assert client.say(b"RCPT TO:<help@in.test>\r\n").startswith(b"250")  # support, before the swap
        handler.routing = RoutingTable.from_streams(
            [StreamSettings("desk", ("new@in.test",), "https://hooks.example.test/", SECRET)]
        )
        assert client.say(b"RCPT TO:<other@in.test>\r\n").startswith(b"550 5.1.1")  # no longer anyone's
        assert client.say(b"RCPT TO:<new@in.test>\r\n").startswith(b"250")
        client.say(b"DATA\r\n")
        assert client.say(b"Subject: hi\r\n\r\nhello\r\n.\r\n").startswith(b"250")
    finally:
        client.close()
    (entry,) = list(spool.entries())
    assert [(r.address, r.stream) for r in entry.envelope.recipients] == [
        ("help@in.test", "support"),  # what the client was told at RCPT stands
        ("new@in.test", "desk"),
    ]


def test_the_smtp_auth_policy_follows_the_streams() -> None:
    auth = Authenticator.__new__(Authenticator)  # never asked: only the stream sets are looked at
    streams = [StreamSettings("support", ("*@in.test",), "https://a.test/", SECRET)]
    policy = SmtpAuthPolicy(auth, streams)
    assert not policy.refusing.spf
    policy.use([replace(streams[0], spf_fail="reject", reject_dmarc_reject=True)])
    assert (policy.refusing.spf, policy.refusing.dmarc, policy.refusing.every_stream_spf) == (
        {"support"},
        {"support"},
        True,
    )
    policy.close()


@pytest.mark.e2e
def test_hup_swaps_the_stream_table_of_a_running_service(tmp_path: Path) -> None:
    before, after = WebhookReceiver().start(), WebhookReceiver().start()
    config = write_config(tmp_path, streams=stream_toml("support", ["help@in.test"], before.url("/old")))
    run_cli("init", config=config)
    service = InboundProcess(config).start()
    try:
        send(config, "alice@sender.test", ["help@in.test"], simple_message(subject="before"))
        wait_for(lambda: before.on("/old"), 60, "the first message at the old URL")
        text = config.read_text()
        config.write_text(
            text.replace('"help@in.test"', '"desk@in.test"').replace(before.url("/old"), after.url("/new"))
        )
        assert service.proc is not None
        service.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: service.seen_by_every_process("stream table reloaded"), 30, "both children to reload")
        send(config, "alice@sender.test", ["desk@in.test"], simple_message(subject="after"))
        (hit,) = wait_for(lambda: after.on("/new"), 60, "the message to the new address at the new URL")
        assert hit.json["subject"] == "after"
        # A broken file on HUP: every process keeps serving with the table it has.
        config.write_text(text.replace("[[streams]]", "[[streams]]\nnot_a_key = 1"))
        service.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: service.seen_by_every_process("the configuration in use stays"), 30, "the refusal")
        assert "streams.support.not_a_key: unknown key" in service.log()
        send(config, "alice@sender.test", ["desk@in.test"], simple_message(subject="still"))
        wait_for(lambda: len(after.on("/new")) == 2, 60, "a message delivered after the refused reload")
        assert len(before.on("/old")) == 1  # and nothing went twice
        assert service.proc.poll() is None
    finally:
        service.stop()
        before.stop()
        after.stop()


def hup_held(pid: int) -> bool:
    """Whether a HUP sent to process *pid* waits, blocked, for it to take it (not merely not yet delivered)."""
    masks = dict(line.split(":\t") for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)
    return all(int(masks[mask], 16) & 1 << (signal.SIGHUP - 1) for mask in ("ShdPnd", "SigBlk"))


@pytest.mark.e2e
@pytest.mark.parametrize("roles", [None, "process,deliver,record"], ids=["supervised", "roles"])
def test_hup_while_serve_starts_ends_nothing_and_reloads_once_it_serves(tmp_path: Path, roles: str | None) -> None:
    config = write_config(tmp_path, streams=SUPPORT)
    run_cli("init", config=config)
    text = config.read_text()
    # A FIFO for a configuration file holds serve in its start until this test writes the file.
    config.unlink()
    os.mkfifo(config)
    service = InboundProcess(config, roles)
    with service.log_path.open("ab") as log:
        service.proc = subprocess.Popen(service.command(), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    proc = service.proc
    try:
        fifo = wait_for(lambda: opened_for_writing(config), 60, "serve to read its configuration")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: proc.poll() is not None or hup_held(proc.pid), 30, "the HUP to end serve or be held")
        assert proc.poll() is None, f"serve ended by HUP while it started: {proc.returncode}"
        # The file as it is from now on (the reload reads it); then what serve is reading, in full.
        config.with_name("whole.toml").write_text(text)
        config.with_name("whole.toml").replace(config)
        with open(fifo, "w") as writer:
            writer.write(text)
        wait_for(lambda: service.seen_by_every_process(f"SIGHUP: {config}: no stream changed"), 60, "the reload")
        assert "inbound started" in service.log()
        assert service.terminate() == 0
    finally:
        service.stop()


def opened_for_writing(fifo: Path) -> int | None:
    """A descriptor writing to *fifo* once a reader has it open, else None."""
    try:
        return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as error:
        if error.errno == errno.ENXIO:  # no reader yet
            return None
        raise


def test_a_file_that_breaks_the_reading_itself_keeps_everything(
    running: Settings, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug of ours in reading some file is logged, and the service goes on with what it has."""

    def unforeseen(path: Path, environ: Mapping[str, str]) -> Settings:
        raise RecursionError("a file the checks did not foresee")

    monkeypatch.setattr(reload, "load_settings", unforeseen)
    assert reread(running, {}) is None
    assert (
        caplog.records[-1].getMessage() == f"SIGHUP: {running.path} could not be read: the configuration in use stays"
    )
    assert caplog.records[-1].exc_info is not None

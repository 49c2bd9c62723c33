"""The CLI as a new user meets it: queue ids, help, mistakes, what runs, what waits, what was salvaged."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from inbound.activity import SQLiteActivityStore
from inbound.events import Event, EventType, Summary
from inbound.ops.cli import main
from inbound.records import JSON

from .fixtures import Pipeline
from .harness import INBOUND, ROOT, run_cli, send, simple_message, stream_toml, write_config
from .test_pipeline import message_with_attachments

pytestmark = pytest.mark.e2e  # runs inbound and its CLI as real processes


def test_a_new_users_first_session(tmp_path: Path) -> None:
    pipeline = Pipeline(tmp_path, 'backend = "embedded"')
    try:
        streams = stream_toml("support", ["help@example.org"], pipeline.receiver.url("/hook"))
        streams += stream_toml("sales", ["sales@example.org"], pipeline.receiver.url("/sales"))
        config = pipeline.configure(streams=streams)
        top = subprocess.run([*INBOUND, "-h"], capture_output=True, text=True, check=False, cwd=ROOT)
        assert "Commands:" in top.stdout
        assert "--payload" in run_cli("activity", "show", "-h", config=config).stdout

        process = pipeline.start()
        status = run_cli("status", config=config).stdout
        assert "running: pid" in status
        assert "roles smtp,publish\n" in status  # serve's two processes: the edge and the pipeline
        assert "roles process,deliver,record\n" in status
        running = json.loads(run_cli("status", "--json", config=config).stdout)["running"]
        assert sorted(tuple(r["roles"]) for r in running) == [("process", "deliver", "record"), ("smtp", "publish")]

        queue_id = send(
            config, "alice@sender.test", ["help@example.org", "sales@example.org"], message_with_attachments()
        )
        for stream in ("support", "sales"):
            pipeline.wait_status(f"{queue_id}-{stream}", "delivered")

        # The id from the 250 reply shows every stream's record; attachments summarised, payload on request.
        shown = run_cli("activity", "show", queue_id, config=config).stdout
        assert f"{queue_id}-support" in shown
        assert f"{queue_id}-sales" in shown
        assert "invoice-42.pdf  application/pdf  16 bytes" in shown
        assert "image/png" in shown
        assert '"text"' not in shown
        assert "print it with --payload" in shown
        with_payload = run_cli("activity", "show", f"{queue_id}-sales", "--payload", config=config).stdout
        assert '"text": "Please find the invoice attached.' in with_payload
        both = json.loads(run_cli("activity", "show", queue_id, "--json", config=config).stdout)
        assert sorted(d["stream"] for d in both["deliveries"]) == ["sales", "support"]
        latency = both["deliveries"][0]["attempts"][0]["latency_ms"]
        assert isinstance(latency, int)
        assert "payload" not in both["deliveries"][0]

        listed = run_cli("activity", "list", config=config).stdout
        assert " UTC " in listed
        wrong = run_cli("activity", "list", "--stream", "nobody", config=config, check=False)
        assert wrong.returncode == 2
        assert "no stream named 'nobody'" in wrong.stderr
        assert "streams: support, sales" in wrong.stderr
        assert run_cli("pause", "--stream", "nobody", config=config, check=False).returncode == 2
        unknown = run_cli("activity", "show", "01JNOTHING", config=config, check=False)
        assert unknown.returncode == 1
        assert "queue id from the 250 reply" in unknown.stderr

        idle = run_cli("status", "--watch", config=config).stdout
        assert "nothing is waiting" in idle

        assert process.terminate() == 0
        quarantine = tmp_path / "data" / "quarantine"
        quarantine.mkdir(exist_ok=True)
        (quarantine / "bus.db.corrupt-1").write_bytes(b"not a database")
        stopped = run_cli("status", config=config).stdout
        assert "inbound is not running on" in stopped
        assert "quarantined files (1;" in stopped
        assert "bus.db.corrupt-1" in stopped
        recovered = run_cli("recover", "--json", config=config, check=False)
        report = json.loads(recovered.stdout)
        assert set(report) == {"saved", "skipped", "lost"}
    finally:
        pipeline.close()


def test_a_subject_cannot_break_or_drive_what_the_cli_prints(tmp_path: Path) -> None:
    """Rich read a subject as markup ("[/b]" failed the whole listing); ESC and LF went to the terminal."""
    pipeline = Pipeline(tmp_path, 'backend = "embedded"')
    try:
        config = pipeline.configure()
        process = pipeline.start()
        subject = "=?utf-8?q?hello_[/b]_=1B[2J_and=0A2026-11-24_a_forged_line?="
        queue_id = send(config, "a@sender.test", ["help@example.org"], simple_message(subject))
        pipeline.wait_status(f"{queue_id}-support", "delivered")
        listed = run_cli("activity", "list", config=config)
        shown = run_cli("activity", "show", queue_id, config=config)
        assert process.terminate() == 0
    finally:
        pipeline.close()
    assert "hello [/b] \\x1b[2J and\\n2026-11-24 a forged line" in listed.stdout
    assert "subject:         hello [/b] \\x1b[2J and\\n2026-11-24 a forged line\n" in shown.stdout
    for out in (listed.stdout, shown.stdout):
        assert "\x1b" not in out
        assert not any(line.startswith("2026-11-24 a forged") for line in out.splitlines())


def test_a_replay_names_the_messages_it_could_not_send(tmp_path: Path) -> None:
    """Their payload past bus.retention when the store was rebuilt: named, and the count says so."""
    config = write_config(tmp_path, streams=stream_toml("support", ["*@in.test"], "https://hooks.example.test/"))
    assert CliRunner().invoke(main, ["init", "--config", str(config)]).exit_code == 0
    store = SQLiteActivityStore(tmp_path / "data" / "activity.db")
    summary = Summary("2026-11-23T09:00:00.000Z", "alice@sender.test", ("help@in.test",), "Invoice", 100, 0)
    for n, payload in ((1, None), (2, b'{"n":2}')):
        did, queue_id = f"01JD{n:022d}-support", f"01JD{n:022d}"
        store.apply([
            Event(EventType.PROCESSED, did, queue_id, "support", summary.received_at, summary=summary),
            Event(EventType.PROCESSED, did, queue_id, "support", summary.received_at, payload=payload,
                  payload_type=JSON if payload else None),
            Event(EventType.FAILED, did, queue_id, "support", "2026-11-23T09:00:01.000Z", reason="HTTP 403"),
        ])  # fmt: skip
    store.close()
    args = ["replay", "--config", str(config), "--stream", "support", "--since", "2026-11-23T00:00:00Z"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f"01JD{1:022d}-support: not sent: its payload is not in the activity store" in result.output
    assert "1 message(s) of support queued for delivery again; 1 not sent (above)" in result.output

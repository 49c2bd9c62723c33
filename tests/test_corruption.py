"""Damaged files: the service starts clean, moves them aside and keeps accepting; `inbound recover`
salvages what is still readable and names exactly what is not."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from inbound.datadir import DataDir
from inbound.edge.spool import encode_entry
from inbound.envelope import Envelope, Recipient

from .fixtures import Pipeline
from .harness import activity, run_cli, send, simple_message, statuses, wait_for


def spool_entry(queue_id: str, subject: str) -> bytes:
    recipients = (Recipient("x@in.test", "support", None),)
    envelope = Envelope(queue_id, "a@sender.test", recipients, "127.0.0.1:1", "h", False, "2026-11-22T10:00:00.000Z")
    return encode_entry(envelope, simple_message(subject=subject))


def garble(data: bytes, start: int, length: int = 20) -> bytes:
    return data[:start] + b"#" * length + data[start + length :]


def test_damaged_spool_entries_are_salvaged(pipeline: Pipeline) -> None:
    config = pipeline.configure()
    pipeline.start()
    quarantine = DataDir(config.parent / "data").quarantine
    opening_damaged = spool_entry("01AAAAAAAAAAAAAAAAAAAAAAAA", "opening header damaged")
    (quarantine / "spool-01AAAAAAAAAAAAAAAAAAAAAAAA").write_bytes(garble(opening_damaged, 30))
    truncated = spool_entry("01BBBBBBBBBBBBBBBBBBBBBBBB", "closing header cut off")
    (quarantine / "spool-01BBBBBBBBBBBBBBBBBBBBBBBB").write_bytes(truncated[:-100])
    hopeless = spool_entry("01CCCCCCCCCCCCCCCCCCCCCCCC", "both headers damaged")
    (quarantine / "spool-01CCCCCCCCCCCCCCCCCCCCCCCC").write_bytes(garble(garble(hopeless, 30), len(hopeless) - 60))

    result = run_cli("recover", config=config, check=False)
    assert result.returncode == 1, result.stderr  # something could not be saved, and it says so
    assert "saved: 2" in result.stdout
    assert "NOT saved: 1" in result.stdout
    assert "spool-01CCCCCCCCCCCCCCCCCCCCCCCC" in result.stdout
    pipeline.wait_status("01AAAAAAAAAAAAAAAAAAAAAAAA-support", "delivered")
    pipeline.wait_status("01BBBBBBBBBBBBBBBBBBBBBBBB-support", "delivered")
    subjects = sorted(h.json["subject"] for h in pipeline.receiver.on("/hook"))
    assert subjects == ["closing header cut off", "opening header damaged"]
    again = run_cli("recover", config=config, check=False)
    assert "saved: 0" in again.stdout  # the salvaged files moved to quarantine/recovered/
    assert "spool-01CCCCCCCCCCCCCCCCCCCCCCCC" in again.stdout


def checkpoint_and_damage(database: Path, offset: int, length: int) -> None:
    """Fold the WAL into the file (as a clean stop would), then overwrite *length* bytes at *offset*."""
    db = sqlite3.connect(database)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    with database.open("r+b") as f:
        f.seek(offset)
        f.write(b"\xde\xad" * (length // 2))


def test_damaged_activity_database_is_set_aside_and_rebuilt(pipeline: Pipeline) -> None:
    config = pipeline.configure()
    process = pipeline.start()
    earlier = [send(config, "a@sender.test", ["x@in.test"], simple_message(subject=f"e{i}")) for i in range(3)]
    for queue_id in earlier:
        pipeline.wait_status(f"{queue_id}-support", "delivered")
    process.kill()
    database = DataDir(config.parent / "data").activity
    checkpoint_and_damage(database, 0, 100)  # the header: SQLite will not even open it

    restarted = pipeline.start()
    assert "damaged database quarantined" in restarted.log()
    later = send(config, "a@sender.test", ["x@in.test"], simple_message(subject="later"))
    pipeline.wait_status(f"{later}-support", "delivered")
    assert f"{earlier[0]}-support" not in statuses(config)  # the new store started empty

    result = run_cli("recover", config=config)
    assert "activity store rebuilt" in result.stdout
    assert statuses(config) == {f"{q}-support": "delivered" for q in [*earlier, later]}


@pytest.mark.parametrize("bus_toml", ["embedded"], indirect=True)
def test_damaged_embedded_bus_is_set_aside_and_recovered(pipeline: Pipeline) -> None:
    config = pipeline.configure()
    process = pipeline.start()
    delivered = send(config, "a@sender.test", ["x@in.test"], simple_message(subject="delivered before"))
    pipeline.wait_status(f"{delivered}-support", "delivered")
    run_cli("pause", config=config)
    wait_for(lambda: "control: paused=['*']" in process.log(), 30, "the pause to be seen")  # by the pipeline
    waiting = [
        send(config, "a@sender.test", ["x@in.test"], simple_message(subject=f"w{i}", body="x" * 3000))
        for i in range(12)
    ]
    wait_for(lambda: list(statuses(config).values()).count("queued") == 12, 60, "queued records")
    process.kill()
    bus = DataDir(config.parent / "data").bus
    size = bus.stat().st_size
    checkpoint_and_damage(bus, (size // 4096 // 2) * 4096, 2 * 4096)  # two pages in the middle

    restarted = pipeline.start()
    assert "damaged database quarantined" in restarted.log()
    fresh = send(config, "a@sender.test", ["x@in.test"], simple_message(subject="after the damage"))
    pipeline.wait_status(f"{fresh}-support", "delivered")  # the fresh bus is not paused

    result = run_cli("recover", config=config, check=False)
    lost = {q for q in waiting if f"{q}-support" in result.stdout}
    saved = set(waiting) - lost
    assert saved, result.stdout  # the undamaged pages gave messages back
    wait_for(lambda: all(statuses(config).get(f"{q}-support") == "delivered" for q in saved), 60, "salvaged deliveries")
    assert (result.returncode == 1) == bool(lost)
    # Nothing silently lost: every accepted message is delivered or named in the report.
    assert all(statuses(config)[f"{q}-support"] == "delivered" or q in lost for q in waiting)
    assert len(pipeline.receiver.by_queue_id()[delivered]) == 1  # not sent twice
    assert [r["delivery_id"] for r in activity(config)].count(f"{delivered}-support") == 1

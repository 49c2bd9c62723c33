"""Outages, full disks and maintenance: each becomes a delay that ends in a catch-up, on every backend."""

from __future__ import annotations

import json
import smtplib
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inbound.datadir import DataDir

from .fixtures import Pipeline
from .harness import (
    INBOUND,
    ROOT,
    activity,
    run_cli,
    send,
    simple_message,
    smtp_port_of,
    statuses,
    stream_toml,
    wait_for,
)


def status_json(config: Path) -> Any:
    return json.loads(run_cli("status", "--json", config=config).stdout)


def pause_seen(pipeline: Pipeline, text: str) -> bool:
    """Whether every running process that reads the pauses logged *text* (a supervisor: its pipeline child)."""
    return all(text in p.log() for p in pipeline.processes if p.proc and p.proc.poll() is None and p.reads_pauses())


@pytest.fixture
def small_fs(pipeline: Pipeline, tmp_path: Path) -> Iterator[Path]:
    """A real 8 MiB filesystem (tmpfs) where the data directory goes; needs root."""
    mount = tmp_path / "data"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], check=True)
    yield mount
    for process in pipeline.processes:
        process.stop()
    subprocess.run(["umount", "-l", str(mount)], check=True)


def test_disk_guard_refuses_with_452_and_recovers(pipeline: Pipeline, small_fs: Path) -> None:
    config = pipeline.configure(max_message_size=1024 * 1024)  # guard: 1.5 MiB must stay free
    pipeline.start()
    first = send(config, "a@sender.test", ["x@in.test"], simple_message())
    filler = small_fs / "filler"
    import shutil

    free = shutil.disk_usage(small_fs).free
    with filler.open("wb") as f:
        f.write(b"\0" * (free - 1024 * 1024))  # leaves about 1 MiB: less than the guard wants
    with smtplib.SMTP("127.0.0.1", smtp_port_of(config), timeout=30) as s:
        s.ehlo("client.test")
        assert s.mail("a@sender.test") == (452, b"4.3.1 Insufficient system storage")
    filler.unlink()

    def accepted_again() -> bool:
        with smtplib.SMTP("127.0.0.1", smtp_port_of(config), timeout=30) as s:
            s.ehlo("client.test")
            return s.mail("a@sender.test")[0] == 250

    wait_for(accepted_again, 30, "acceptance to resume once space returns")
    second = send(config, "a@sender.test", ["x@in.test"], simple_message())
    pipeline.wait_status(f"{first}-support", "delivered")
    pipeline.wait_status(f"{second}-support", "delivered")


def test_serve_refuses_a_read_only_data_dir(pipeline: Pipeline, small_fs: Path) -> None:
    config = pipeline.configure()
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    result = run_cli("serve", config=config, check=False)
    assert result.returncode != 0
    assert "is not writable" in result.stderr


def test_pause_holds_processing_and_delivery_then_resume_catches_up(pipeline: Pipeline) -> None:
    config = pipeline.configure()
    pipeline.start()
    run_cli("pause", config=config)
    wait_for(lambda: pause_seen(pipeline, "control: paused=['*']"), 30, "the service to see the pause")
    accepted = [send(config, "a@sender.test", ["x@in.test"], simple_message(subject=f"p{i}")) for i in range(5)]
    wanted = {f"{q}-support" for q in accepted}
    wait_for(lambda: {d for d, s in statuses(config).items() if s == "queued"} >= wanted, 60, "queued records")

    def the_five_alone() -> Any:
        # The edge empties its spool, and the record role commits its offsets, just after the
        # statuses show as queued: until both have, the backlog counts the five more than once.
        status = status_json(config)
        backlog = status["spool_entries"] + sum(status["lag"].values()) + sum(s["waiting"] for s in status["streams"])
        return status if backlog == 5 else None

    status = wait_for(the_five_alone, 30, "a backlog of the five messages alone")
    assert status["lag"]["process/received"] == 5
    assert status["oldest_waiting_age"] > 0
    assert "oldest waiting message" in run_cli("status", config=config).stdout
    assert pipeline.receiver.hits == []

    watch = subprocess.Popen(
        [*INBOUND, "status", "--watch", "--config", str(config)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    # Its first look has to see the backlog before resume drains it, or there is no bar to follow.
    assert watch.stdout.readline().startswith("5 messages waiting: following them until the backlog drains")
    run_cli("resume", config=config)
    wait_for(lambda: {d for d, s in statuses(config).items() if s == "delivered"} >= wanted, 60, "the catch-up")
    out, _ = watch.communicate(timeout=60)
    assert watch.returncode == 0
    assert "backlog" in out
    assert "100%" in out


def test_pause_of_one_stream_holds_only_its_deliveries(pipeline: Pipeline) -> None:
    streams = stream_toml("support", ["*@in.test"], pipeline.receiver.url("/support")) + stream_toml(
        "sales", ["*@sales.test"], pipeline.receiver.url("/sales")
    )
    config = pipeline.configure(streams=streams)
    pipeline.start()
    run_cli("pause", "--stream", "support", config=config)
    wait_for(lambda: pause_seen(pipeline, "control: paused=['support']"), 30, "the service to see the pause")
    held = send(config, "a@sender.test", ["x@in.test"], simple_message())
    sales = send(config, "a@sender.test", ["x@sales.test"], simple_message())
    pipeline.wait_status(f"{sales}-sales", "delivered")
    wait_for(lambda: status_json(config)["streams"][0]["waiting"] == 1, 30, "the held delivery in status")
    assert pipeline.receiver.on("/support") == []
    assert statuses(config)[f"{held}-support"] == "processed"
    run_cli("resume", "--stream", "support", config=config)
    pipeline.wait_status(f"{held}-support", "delivered")


def test_unknown_stream_pause_is_a_clear_error(pipeline: Pipeline) -> None:
    config = pipeline.configure()
    result = run_cli("pause", "--stream", "nope", config=config, check=False)
    assert result.returncode == 2
    assert "no stream named 'nope'" in result.stderr


def test_failing_endpoint_does_not_hold_up_a_healthy_one_and_recovers_promptly(pipeline: Pipeline) -> None:
    streams = stream_toml("down", ["*@down.test"], pipeline.receiver.url("/down")) + stream_toml(
        "healthy", ["*@ok.test"], pipeline.receiver.url("/ok")
    )
    # A schedule of an hour: only the probe can bring the backlog out within this test.
    config = pipeline.configure(
        streams=streams,
        retry_schedule=["1h", "1h"],
        timeout="2s",
        extra='probe_interval = "1s"\nconcurrency_per_stream = 2',
    )
    up = False
    pipeline.receiver.behaviour["/down"] = lambda n: 200 if up else 503
    pipeline.receiver.delay["/down"] = 0.5  # slow as well as failing
    pipeline.start()
    down = [send(config, "a@sender.test", [f"d{i}@down.test"], simple_message(subject=f"d{i}")) for i in range(8)]
    healthy = []
    for i in range(8):
        sent_at = time.time()
        healthy.append(send(config, "a@sender.test", [f"h{i}@ok.test"], simple_message(subject=f"h{i}")))
        hit = wait_for(lambda q=healthy[-1]: pipeline.receiver.by_queue_id("/ok").get(q), 30, "healthy delivery")
        # Room for a busy box to be slow (SMTP, parsing, the bus): what this guards against is far
        # longer, a healthy delivery queued behind the failing endpoint's hourly retries.
        assert hit[0].at - sent_at < 15, "the healthy stream waited behind the failing one"

    # Every message for the failing endpoint has had its first try and now waits an hour.
    wait_for(lambda: set(pipeline.receiver.by_queue_id("/down")) >= set(down), 60, "first attempts")
    up = True
    recovered_at = time.time()
    wait_for(lambda: all(statuses(config).get(f"{q}-down") == "delivered" for q in down), 60, "the backlog to go out")
    successes = [h for h in pipeline.receiver.on("/down") if h.at >= recovered_at]
    order = [down.index(q) for q in dict.fromkeys(h.json["queue_id"] for h in successes)]
    assert sorted(order) == list(range(8))
    # The first to go may be the probe that found the endpoint back: probes take the held
    # deliveries in turn. After it, arrival order, give or take the two attempts side by side.
    after_probe = order[1:]
    assert all(index >= max(after_probe[:i], default=0) - 1 for i, index in enumerate(after_probe)), order
    assert max(h.at for h in successes) - recovered_at < 20
    assert pipeline.receiver.peak_in_flight["/down"] <= 2  # the per-endpoint concurrency limit


def test_activity_rebuild_after_the_database_is_deleted(pipeline: Pipeline) -> None:
    streams = stream_toml("support", ["*@in.test"], pipeline.receiver.url("/hook"), ["*@spam.test"]) + stream_toml(
        "refusing", ["*@no.test"], pipeline.receiver.url("/refuse")
    )
    config = pipeline.configure(streams=streams)
    pipeline.receiver.behaviour["/refuse"] = lambda n: 403
    pipeline.start()
    expected = {}
    for i in range(4):
        expected[f"{send(config, 'a@sender.test', ['x@in.test'], simple_message(subject=f'ok{i}'))}-support"] = (
            "delivered"
        )
    expected[f"{send(config, 'x@spam.test', ['x@in.test'], simple_message(sender='x@spam.test'))}-support"] = "blocked"
    expected[f"{send(config, 'a@sender.test', ['x@no.test'], simple_message())}-refusing"] = "failed"
    wait_for(lambda: statuses(config) == expected, 60, "every final status")

    database = DataDir(config.parent / "data").activity
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    later = send(config, "a@sender.test", ["x@in.test"], simple_message(subject="after the loss"))
    expected[f"{later}-support"] = "delivered"
    run_cli("activity", "rebuild", config=config)
    wait_for(lambda: statuses(config) == expected, 60, "every message back with its final status")
    first = activity(config)
    out = run_cli("activity", "rebuild", config=config).stdout
    assert "5 delivered" in out
    assert activity(config) == first  # rebuilding twice gives identical results


def test_a_locked_store_delays_records_but_drops_none(pipeline: Pipeline) -> None:
    config = pipeline.configure()
    pipeline.start()
    first = send(config, "a@sender.test", ["x@in.test"], simple_message())
    pipeline.wait_status(f"{first}-support", "delivered")
    blocker = sqlite3.connect(DataDir(config.parent / "data").activity, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # nobody else can write until we let go
    held = [send(config, "a@sender.test", ["x@in.test"], simple_message(subject=f"l{i}")) for i in range(5)]
    wait_for(lambda: len(pipeline.receiver.on("/hook")) >= 6, 60, "deliveries to go on meanwhile")
    blocker.execute("ROLLBACK")
    blocker.close()
    wanted = {f"{q}-support" for q in held}
    wait_for(lambda: {d for d, s in statuses(config).items() if s == "delivered"} >= wanted, 90, "every record")

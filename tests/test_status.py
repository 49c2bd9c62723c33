"""What `inbound status` (and the API's metrics) collects, against a spool the publisher empties meanwhile."""

from __future__ import annotations

import io
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from inbound.bus import open_bus
from inbound.bus.embedded import EmbeddedBus
from inbound.config import load_settings
from inbound.delivery.outbox import Outbox
from inbound.edge.spool import Spool
from inbound.ops.status import collect
from inbound.ops.statusview import render_status

from .edge_harness import spool_envelope
from .harness import free_port, run_cli, stream_toml, write_config


def test_a_spool_file_published_while_status_looks_is_left_out_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(write_config(tmp_path, streams=stream_toml("support", ["*@in.test"], "https://a.test/")))
    settings.data.init()
    spool = Spool(settings.data)
    spool.put_many([(spool_envelope(), b"Subject: one\r\n\r\nx\r\n"), (spool_envelope(), b"Subject: two\r\n\r\nx\r\n")])
    listed = Path.iterdir

    def listed_then_published(path: Path) -> Iterator[Path]:
        yield from listed(path)
        if path == settings.data.spool_new:
            yield path / "published-after-the-listing"  # removed between the listing and its stat

    monkeypatch.setattr(Path, "iterdir", listed_then_published)
    bus = EmbeddedBus(settings.data.bus)
    try:
        report = collect(settings, bus)
    finally:
        bus.close()
    assert report.spool_entries == 2
    assert report.spool_oldest_age is not None


def a_kafka_bus_down() -> str:
    return f'backend = "kafka"\nbootstrap_servers = ["127.0.0.1:{free_port()}"]'  # nothing listens there


def test_a_bus_that_cannot_be_reached_leaves_out_its_lag_and_pauses_and_says_why_not_the_spool(
    tmp_path: Path,
) -> None:
    settings = load_settings(
        write_config(tmp_path, streams=stream_toml("support", ["*@in.test"], "https://a.test/"), bus=a_kafka_bus_down())
    )
    settings.data.init()
    Spool(settings.data).put(spool_envelope(), b"Subject: held\r\n\r\nx\r\n")  # what the edge keeps accepting
    bus = open_bus(settings)
    try:
        report = collect(settings, bus)
    finally:
        bus.close()
    assert (report.spool_entries, report.lag) == (1, {})
    assert report.bus_error is not None
    assert report.bus_error.startswith("no Kafka broker reachable")
    shown = io.StringIO()
    render_status(report, Console(file=shown, width=200))
    assert re.search(r"spool \(this host\) +1 ", shown.getvalue())
    assert f"bus: unreachable ({report.bus_error}): its lag and the pauses are unknown" in shown.getvalue()


def test_inbound_status_during_a_bus_outage_shows_the_spool_says_why_and_exits_1(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, streams=stream_toml("support", ["*@in.test"], "https://a.test/"), bus=a_kafka_bus_down()
    )
    run_cli("init", config=config)
    Spool(load_settings(config).data).put(spool_envelope(), b"Subject: held\r\n\r\nx\r\n")
    shown = run_cli("status", config=config, check=False)
    assert shown.returncode == 1
    assert re.search(r"spool \(this host\) +1 ", shown.stdout)
    assert "bus: unreachable (no Kafka broker reachable" in shown.stdout
    as_json = run_cli("status", "--json", config=config, check=False)
    assert as_json.returncode == 1
    report = json.loads(as_json.stdout)
    assert (report["spool_entries"], report["lag"]) == (1, {})
    assert report["bus_error"].startswith("no Kafka broker reachable")


def test_a_step_back_of_the_clock_shows_no_age_below_zero(tmp_path: Path) -> None:
    """An outage held since a time the clock has since stepped back past showed as held for -3600000 ms."""
    settings = load_settings(write_config(tmp_path, streams=stream_toml("support", ["*@in.test"], "https://a.test/")))
    settings.data.init()
    Spool(settings.data).put(spool_envelope(), b"Subject: held\r\n\r\nx\r\n")
    os.utime(next(settings.data.spool_new.iterdir()), (time.time() + 3600, time.time() + 3600))
    outbox = Outbox(settings.data.outbox)
    outbox.hold("support", time.time() + 3600, set())
    outbox.close()
    bus = EmbeddedBus(settings.data.bus)
    try:
        report = collect(settings, bus)
    finally:
        bus.close()
    assert (report.streams[0].held_for, report.spool_oldest_age, report.oldest_waiting_age) == (0.0, 0.0, 0.0)

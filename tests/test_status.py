"""What `inbound status` (and the API's metrics) collects, against a spool the publisher empties meanwhile."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from inbound.bus.embedded import EmbeddedBus
from inbound.config import load_settings
from inbound.edge.spool import Spool
from inbound.ops.status import collect

from .edge_harness import spool_envelope
from .harness import stream_toml, write_config


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

"""The embedded bus on a real full disk (a tmpfs; needs root, as test_reliability.py does).

A stage whose flush fails handles its batch again from its last commit and sends its output
again: the bus must hold what the last flush wrote once, not once for every try.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from inbound.bus.embedded import EmbeddedBus
from inbound.errors import BusError

RECORD = b"m" * (512 * 1024)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "data"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def test_records_sent_before_a_failed_flush_are_written_once_when_sent_again(small_fs: Path) -> None:
    bus = EmbeddedBus(small_fs / "bus.db")
    bus.ensure_topics(["messages"])
    producer = bus.producer()
    filler = small_fs / "filler"
    with filler.open("wb") as f:
        f.write(b"\0" * (shutil.disk_usage(small_fs).free - 256 * 1024))  # room for bookkeeping, not a record
    for _ in range(3):  # a stage's batch, tried again after each failure
        producer.send("messages", RECORD, key=b"k")
        with pytest.raises(BusError):
            producer.flush()
    filler.unlink()
    producer.send("messages", RECORD, key=b"k")
    producer.flush()
    assert [record.value == RECORD for record in bus.read_all("messages")] == [True]
    producer.close()

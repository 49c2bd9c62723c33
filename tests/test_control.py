"""Control: each process's view of the pause switches, read from the bus a little at a time."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from inbound.bus import TOPICS, Bus, Follower, Record
from inbound.bus.embedded import EmbeddedBus
from inbound.control import Control, read_pauses, set_paused

from .harness import wait_for


def test_refresh_reads_only_what_is_new_and_sees_every_change(bus_factory: Callable[[], Bus]) -> None:
    bus = bus_factory()
    bus.ensure_topics(TOPICS)
    set_paused(bus, "sales", True)
    control = Control(bus)
    try:
        control.refresh()
        follower = control.follower
        assert control.stream_paused("sales")
        assert not control.everything_paused()
        set_paused(bus, None, True)
        set_paused(bus, "sales", False)
        control.refresh()
        assert control.follower is follower  # one reader for the life of the process, not one a refresh
        assert control.pauses == {"sales": False, "*": True}
        assert control.pauses == read_pauses(bus)
        set_paused(bus, None, False)
        control.refresh()
        assert not control.stream_paused("sales")
    finally:
        control.stop()
    assert control.follower is None


class BrokenFollower:
    def read_new(self) -> Iterator[Record]:
        raise RuntimeError("injected")

    def close(self) -> None:
        pass


def test_an_unexpected_error_is_logged_and_the_next_refresh_reads_the_topic_afresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    bus = EmbeddedBus(tmp_path / "bus.db")
    bus.ensure_topics(TOPICS)
    set_paused(bus, "sales", True)
    following = bus.follow
    followers: list[Follower] = [BrokenFollower()]
    monkeypatch.setattr(bus, "follow", lambda topic: followers.pop() if followers else following(topic))
    control = Control(bus)
    control.start()  # its own thread, as in service
    try:
        wait_for(lambda: control.stream_paused("sales"), 10, "the pause read after the failed refresh")
    finally:
        control.stop()
    assert "control: unexpected error reading the control topic" in caplog.text

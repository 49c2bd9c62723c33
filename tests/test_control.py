"""Control: each process's view of the pause switches, read from the bus a little at a time."""

from __future__ import annotations

from collections.abc import Callable

from inbound.bus import TOPICS, Bus
from inbound.control import Control, read_pauses, set_paused


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

"""Where the processes of ``inbound serve`` run: the plan, and pinning this very process."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest

from inbound.cpus import allowed, format_cpus, parse_cpus, pin, placement


@pytest.fixture
def restored() -> Iterator[frozenset[int]]:
    """This process's CPUs, given back after the test whatever it pinned."""
    before = allowed()
    yield before
    os.sched_setaffinity(0, before)


def test_the_pipeline_gets_the_last_cpu_and_the_edge_the_others() -> None:
    assert placement({0, 1}) == {"pipeline": {1}, "edge": {0}}
    assert placement({2, 5, 7, 9}) == {"pipeline": {9}, "edge": {2, 5, 7}}


def test_one_cpu_is_shared_by_everything() -> None:
    assert placement({3}) == {}
    assert placement(set()) == {}


def test_cpu_lists_read_back_as_written() -> None:
    assert parse_cpus(format_cpus({3, 0, 12})) == {0, 3, 12}
    assert format_cpus({1}) == "1"
    for bad in ("", "a", "1,,2", "0-3", "-1"):
        with pytest.raises(ValueError, match="CPU"):
            parse_cpus(bad)


def test_pinning_moves_this_process_and_says_where_it_could_run(restored: frozenset[int]) -> None:
    one = frozenset({max(restored)})
    assert pin(one) == restored
    assert allowed() == one


def test_a_cpu_that_cannot_be_used_leaves_the_process_where_it_was(
    restored: frozenset[int], caplog: pytest.LogCaptureFixture
) -> None:
    missing = frozenset({max(os.cpu_count() or 1, *restored) + 4096})
    with caplog.at_level(logging.WARNING, logger="inbound.cpus"):
        assert pin(missing) is None
    assert allowed() == restored
    assert f"cannot run on CPUs {format_cpus(missing)}" in caplog.text

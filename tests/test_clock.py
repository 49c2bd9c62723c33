"""rfc3339 writes what datetime writes, to the character, while formatting each second only once."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime

import pytest

from inbound.clock import rfc3339


def by_datetime(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


EDGES = [
    0.0,
    0.0005,  # half a millisecond: cut, not rounded
    0.9995,
    1.9999995,  # rounds up to the next second
    1.9999994,
    1700000000.0000005,  # half a microsecond
    1700000000.9999995,
    1700000000.999,
    1700000001.0,  # the next second right after the one before: the cached text must not be reused
    4102444800.0,  # 2100-01-01
    253402300798.5,  # late in the year 9999
]


@pytest.mark.parametrize("epoch", EDGES)
def test_edges_are_written_as_datetime_writes_them(epoch: float) -> None:
    assert rfc3339(epoch) == by_datetime(epoch)


def test_random_moments_in_any_order_are_written_as_datetime_writes_them() -> None:
    generator = random.Random(1311)
    moments = [generator.uniform(0, 4e9) for _ in range(20_000)]
    moments += [1_700_000_000 + generator.uniform(0, 3) for _ in range(20_000)]  # seconds that repeat
    for epoch in moments:
        assert rfc3339(epoch) == by_datetime(epoch), epoch


@pytest.mark.parametrize("epoch", [-1.5, -62135596800.0, 253402300800.0])
def test_moments_outside_1970_to_9999_are_left_to_datetime(epoch: float) -> None:
    """An operator's or an API caller's time can be anything: the same text, or the same error."""
    try:
        expected: str | type[Exception] = by_datetime(epoch)
    except (ValueError, OverflowError, OSError) as exc:
        expected = type(exc)
    if isinstance(expected, str):
        assert rfc3339(epoch) == expected
    else:
        with pytest.raises(expected):
            rfc3339(epoch)


@pytest.mark.parametrize("epoch", [math.nan, math.inf, 1e20])
def test_what_is_no_moment_raises_as_datetime_does(epoch: float) -> None:
    with pytest.raises((ValueError, OverflowError, OSError)):
        by_datetime(epoch)
    with pytest.raises((ValueError, OverflowError, OSError)):
        rfc3339(epoch)

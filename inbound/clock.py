"""Timestamps as every payload and event writes them (RFC 3339, UTC, milliseconds, ``Z``), and the
clock that parts which wait read the time from."""

from __future__ import annotations

import functools
import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

# From 1970 to 9999 a year has four digits, as datetime writes it and as text order needs; outside
# them (only an operator's or an API caller's time can be) datetime formats, or raises.
_FAST_UNTIL = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()


def rfc3339(epoch: float) -> str:
    """``datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")`` with ``Z``, to the character.

    Microseconds are rounded half to even, as datetime does, then cut to milliseconds.
    """
    if not 0 <= epoch < _FAST_UNTIL:  # NaN too
        return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    fraction, second = math.modf(epoch)
    micros = round(fraction * 1e6)
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    return f"{_second(second)}.{micros // 1000:03d}Z"


@functools.lru_cache(maxsize=16)
def _second(second: float) -> str:
    """A whole second's text, kept: a message's events fall within a second or two, and datetime
    formatting the whole stamp was 2 % of the pipeline's CPU (1.2 -> 0.55 us a stamp)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def now_rfc3339() -> str:
    return rfc3339(time.time())


class Clock(Protocol):
    """Where a part that waits reads the time; tests pass their own.

    ``time()``, the wall clock, is what is stored and shown. It steps (NTP, a VM resumed, an
    operator), so a wait measured on it stretches by a step back or ends at a step forward.
    ``monotonic()`` never steps: waits are measured on it. It is the same for every process of a
    host (Linux's CLOCK_MONOTONIC) and starts again at each boot, which ``boot()`` names.
    """

    def time(self) -> float: ...

    def monotonic(self) -> float: ...

    def boot(self) -> str: ...


class SystemClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def boot(self) -> str:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()


SYSTEM = SystemClock()

"""Human durations ("90s", "5m", "1h30m", "2d") to seconds, for config values."""

from __future__ import annotations

import re

_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
# Longer than any wait means anything, and far below what a thread or a timer can wait
# (threading.TIMEOUT_MAX, about 292 years): "1" followed by 400 zeros would be infinite.
MAX_DURATION = 3650 * 86400.0


def parse_duration(text: str) -> float:
    """Seconds in *text*; ValueError naming the text when it is not a duration, or one over ten years."""
    spec = text.strip()
    parts = _PART.findall(spec)
    if not spec or "".join(n + u for n, u in parts) != spec:
        raise ValueError(f"{text!r} is not a duration (examples: 30s, 5m, 1h30m, 250ms)")
    seconds = sum(float(n) * _UNIT[u] for n, u in parts)
    if not seconds <= MAX_DURATION:
        raise ValueError(f"{text!r} is longer than ten years (3650d)")
    return seconds


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"

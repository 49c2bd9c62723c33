"""Queue ids: unique, sortable by time, safe in file names, topic keys and URLs.

A ULID-style id (48-bit millisecond time + 80 random bits, Crockford base32)
so that the spool directory lists oldest first and ids from several SMTP edges
never collide without any coordination.
"""

from __future__ import annotations

import secrets
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_queue_id() -> str:
    value = (time.time_ns() // 1_000_000) << 80 | secrets.randbits(80)
    return "".join(_ALPHABET[(value >> shift) & 31] for shift in range(125, -5, -5))


def queue_id_time(queue_id: str) -> float | None:
    """When *queue_id* was made (Unix seconds), from its 48-bit time prefix; None if it is not a queue id."""
    if len(queue_id) != 26 or any(c not in _ALPHABET for c in queue_id):
        return None
    value = 0
    for char in queue_id:
        value = value << 5 | _ALPHABET.index(char)
    return (value >> 80) / 1000

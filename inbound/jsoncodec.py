"""JSON where it is hot: the bus's records and the parse worker's answers, read in the pipeline.

orjson encodes and decodes about ten times faster than the stdlib's ``json``, and a message
crosses JSON a few dozen times between the edge and the activity store. Its output is what
``json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()`` gives, so a reader
cannot tell which wrote it.

orjson refuses lone surrogates, which undecodable header bytes can become; the stdlib writes
them escaped (``"\\udc80"``) and reads them back. ``dumps`` falls back to it for such a value, and
``loads`` for such a text (a record written that way, or by an inbound of before this module),
so nothing a sender writes makes a record unwritable or unreadable.

Not in the parse worker: there orjson crashed the process (SIGSEGV) writing the body of a
21 MB message under the worker's address-space limit, where the stdlib's MemoryError would
be an answer. The worker writes with the stdlib, except the JSON formats' bodies of messages
too small to come near that limit (``processing/formats/_shared.json_body``); the output is
the same.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON; lone surrogates escaped rather than refused."""
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError: a lone surrogate (or a type neither encoder knows)
        return json.dumps(value, separators=(",", ":")).encode()


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """The value of a JSON text, escaped lone surrogates included."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:  # a ValueError, as the stdlib's: invalid JSON raises it from there too
        return json.loads(bytes(data) if isinstance(data, memoryview) else data)

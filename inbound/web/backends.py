"""What every HTTP handler works with: the service's bus and store, and who is asking.

Shared by the JSON API (:mod:`.api`) and the web page (:mod:`.pages`), which
differ only in how a token arrives (a bearer header, a cookie).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from ..activity import ActivityRecord, ActivityStore
from ..activity._base import Position
from ..bus import Bus
from ..config import Settings
from ..ops import actions
from .problems import Problem


@dataclass(slots=True)
class Backends:
    """What the API reads and writes: the same objects the service's other roles use.

    ``settings`` is replaced whole when a HUP reloads the streams (``Service.reload``).
    """

    settings: Settings
    bus: Bus
    store: ActivityStore

    @property
    def streams(self) -> set[str]:
        """The names of the configured streams, as the settings are now."""
        return {stream.name for stream in self.settings.streams}

    def known_stream(self, name: str | None) -> str | None:
        """*name* if it is a configured stream (or None); else a 404 naming the streams there are."""
        streams = sorted(s.name for s in self.settings.streams)
        if name is not None and name not in streams:
            raise Problem(404, "Not Found", f"no stream named {name!r} (streams: {', '.join(streams)})")
        return name

    def delivery_id(self, message_id: str) -> str:
        """*message_id* if it names one delivery; a queue id is a 409 (an action applies to one stream's)."""
        if self.deliveries_of(message_id)[0].delivery_id != message_id:
            raise Problem(409, "Conflict", f"{message_id} is a queue id; act on one of its delivery ids")
        return message_id

    def deliveries_of(self, message_id: str) -> list[ActivityRecord]:
        """The record of a delivery id, or every stream's record of a queue id (with payloads); 404 when neither."""
        return actions.find_all(self.store, message_id)


def _backends(request: Request) -> Backends:
    backends = request.app.state.backends
    assert isinstance(backends, Backends)
    return backends


Using = Annotated[Backends, Depends(_backends)]


def access(settings: Settings, token: str) -> str | None:
    """What *token* may do: "act" (``[http] tokens``), "read" (``read_only_tokens``), or None."""
    given = token.encode()
    # compare_digest against every token: the time taken tells nothing about which one nearly matched
    can_act = any(hmac.compare_digest(given, t.encode()) for t in settings.http.tokens)
    can_read = any(hmac.compare_digest(given, t.encode()) for t in settings.http.read_only_tokens)
    return "act" if can_act else "read" if can_read else None


# The longest cursor encode_cursor makes is under 200 characters (a time, a 26-character queue id,
# '-', a stream name of up to 63). Anything longer is refused before it is decoded: JSON nested a
# few thousand deep would take the parser past Python's recursion limit.
MAX_CURSOR = 256


def encode_cursor(position: Position) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(position)).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Position:
    """The position in *cursor*, if encode_cursor made it: two strings in a list, encoded byte for byte so."""
    position = _decoded(cursor) if len(cursor) <= MAX_CURSOR else None
    if (
        isinstance(position, list)
        and len(position) == 2
        and all(isinstance(part, str) for part in position)
        and encode_cursor((position[0], position[1])) == cursor  # not a list spelt otherwise, nor other base64
    ):
        return position[0], position[1]
    raise Problem(400, "Bad Request", "cursor is not one this API returned")


def _decoded(cursor: str) -> object:
    """The JSON in base64 *cursor*, or None."""
    try:
        return json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, RecursionError):  # the last: should MAX_CURSOR ever grow
        return None

"""Receive: the size of a message's header section, measured while DATA streams in.

Input: the DATA lines aiosmtpd reads (CRLF-terminated, still dot-stuffed).
Output: whether the header section -- every line before the first empty one,
or the whole message if there is none -- grew past ``smtp.max_header_size``.
The edge then answers ``552 5.3.4`` at the end of DATA (RFC 5321 4.2.5: the
reply to DATA comes after the data) and stores nothing.

Why at the edge: every header field is parsed, decoded and copied by the
stages behind it; a header of megabytes is a way to make them slow or big,
never real mail (Postfix's ``header_size_limit`` is 100 KiB for one field).
Measured as the lines arrive, so the cap costs no second pass over the
message. The body is not held to it: memory for DATA as a whole stays bounded
by ``smtp.max_message_size``, which aiosmtpd enforces on every line.
"""

from __future__ import annotations

import asyncio
import re

# An LF not after CR: a line end some readers honour and others do not.
_BARE_LF = re.compile(rb"(?<!\r)\n")
_HEADER_END = b"\r\n\r\n"


def with_crlf_line_ends(data: bytes) -> bytes:
    """*data* with every bare LF made the CRLF its sender meant, as the edge stores a message."""
    return _BARE_LF.sub(b"\r\n", data)


class HeaderMeter:
    """Stands in for aiosmtpd's reader during DATA: passes every line on, adding up the header section's.

    The header ends where it will end in the message as stored (bare LFs read as CRLF), so a
    message written with bare LFs is measured as its readers will see it.
    """

    def __init__(self, reader: asyncio.StreamReader, limit: int) -> None:
        self.reader = reader
        self.limit = limit
        self.size = 0
        self.in_header = True
        self.tail = b"\r\n"  # the last two bytes so far, as if after a line end: an empty first line ends it

    @property
    def exceeded(self) -> bool:
        return self.size > self.limit

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        return self._measured(await self.reader.readuntil(separator))

    async def read(self, n: int = -1) -> bytes:
        # aiosmtpd drains a line longer than the reader's limit with read(); it counts all the same.
        return self._measured(await self.reader.read(n))

    def _measured(self, chunk: bytes) -> bytes:
        if self.in_header:
            stored = with_crlf_line_ends(chunk)
            window = self.tail + stored
            end = window.find(_HEADER_END)
            if end < 0:
                self.size += len(stored)
                self.tail = window[-2:]
            else:
                self.size += max(end + 2 - len(self.tail), 0)
                self.in_header = False
        return chunk

"""Read rows out of a damaged SQLite file, page by page, without trusting its structure.

SQLite's own ``.recover`` needs a shell built with the ``sqlite_dbpage``
virtual table, which Debian's is not; and a damaged file can no longer be
opened through its b-trees at all. This reads the file format directly
(https://www.sqlite.org/fileformat2.html): every page that still looks like a
table leaf gives up its cells, following overflow chains while they hold.
A cell on a damaged page, or whose overflow chain breaks, is skipped -- the
caller learns what is missing from the gaps in what it gets back.

Only rows with the expected number of columns are returned; the caller checks
their contents. A row may come back twice (an old copy left on a page SQLite no
longer uses): callers key rows by rowid.
"""

from __future__ import annotations

import struct
from collections.abc import Collection, Iterator
from pathlib import Path

_TABLE_LEAF = 0x0D
Value = int | float | bytes | str | None


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(8):
        byte = data[pos + i]
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, pos + i + 1
    return (value << 8) | data[pos + 8], pos + 9


def _decode_record(payload: bytes) -> list[Value]:
    header_size, pos = _varint(payload, 0)
    types = []
    while pos < header_size:
        serial, pos = _varint(payload, pos)
        types.append(serial)
    values: list[Value] = []
    body = header_size
    for serial in types:
        if serial == 0:
            values.append(None)
        elif serial in (8, 9):
            values.append(serial - 8)
        elif 1 <= serial <= 6:
            size = (1, 2, 3, 4, 6, 8)[serial - 1]
            values.append(int.from_bytes(payload[body : body + size], "big", signed=True))
            body += size
        elif serial == 7:
            values.append(struct.unpack(">d", payload[body : body + 8])[0])
            body += 8
        elif serial >= 12:
            size = (serial - 12) // 2
            raw = payload[body : body + size]
            if len(raw) != size:
                raise ValueError("record runs past its payload")
            values.append(raw if serial % 2 == 0 else raw.decode("utf-8"))
            body += size
        else:
            raise ValueError(f"reserved serial type {serial}")
    return values


class _File:
    def __init__(self, data: bytes) -> None:
        self.data = data
        declared = int.from_bytes(data[16:18], "big") if len(data) >= 100 else 0
        self.page_size = 65536 if declared == 1 else declared
        if self.page_size < 512 or self.page_size & (self.page_size - 1):
            self.page_size = 4096  # the header itself is damaged: assume SQLite's default
        reserved = data[20] if len(data) > 20 and data[20] < 64 else 0
        self.usable = self.page_size - reserved
        self.pages = len(data) // self.page_size

    def page(self, number: int) -> bytes:
        if not 1 <= number <= self.pages:
            raise ValueError(f"page {number} is outside the file")
        start = (number - 1) * self.page_size
        return self.data[start : start + self.page_size]

    def overflow(self, first: int, needed: int) -> bytes:
        chunks, page_number, seen = [], first, set()
        while needed > 0:
            if page_number in seen:
                raise ValueError("overflow chain loops")
            seen.add(page_number)
            page = self.page(page_number)
            chunk = page[4 : self.usable][:needed]
            chunks.append(chunk)
            needed -= len(chunk)
            page_number = int.from_bytes(page[:4], "big")
            if needed > 0 and page_number == 0:
                raise ValueError("overflow chain ends early")
        return b"".join(chunks)

    def leaf_cells(self, number: int) -> Iterator[tuple[int, bytes]]:
        page = self.page(number)  # never page 1, whose b-tree header sits after the file header
        if page[0] != _TABLE_LEAF:
            return
        cells = int.from_bytes(page[3:5], "big")
        max_local = self.usable - 35
        min_local = (self.usable - 12) * 32 // 255 - 23
        for i in range(cells):
            try:
                offset = int.from_bytes(page[8 + 2 * i : 10 + 2 * i], "big")
                size, pos = _varint(page, offset)
                rowid, pos = _varint(page, pos)
                if size <= max_local:
                    payload = page[pos : pos + size]
                else:
                    local = min_local + (size - min_local) % (self.usable - 4)
                    local = local if local <= max_local else min_local
                    first = int.from_bytes(page[pos + local : pos + local + 4], "big")
                    payload = page[pos : pos + local] + self.overflow(first, size - local)
                if len(payload) == size:
                    yield rowid, payload
            except (IndexError, ValueError):
                continue  # this cell is damaged; the next may not be


def salvage_rows(path: Path, columns: Collection[int]) -> dict[int, list[Value]]:
    """rowid -> column values for every readable row with one of these numbers of *columns* in *path*.

    More than one number where a table gained a column: SQLite's ALTER TABLE ADD COLUMN does not
    rewrite the rows already there.
    """
    database = _File(path.read_bytes())
    rows: dict[int, list[Value]] = {}
    # Page 1 is the root of sqlite_schema: its rows describe tables, they are not data.
    for number in range(2, database.pages + 1):
        for rowid, payload in database.leaf_cells(number):
            try:
                values = _decode_record(payload)
            except (IndexError, ValueError, UnicodeDecodeError, struct.error):
                continue
            if len(values) in columns:
                rows.setdefault(rowid, values)
    return rows

"""Text a stranger wrote, made safe to print: on its own line, driving no terminal, and of a bounded length.

A subject, an address, a file name or an endpoint's error may hold any character.
A line break in one would forge a line of a log or of the CLI's listing; an escape
sequence (ESC, or C1's CSI) would drive the terminal of whoever reads it. Each such
character is written as its Python escape (``\\n``, ``\\x1b``), so what came stays visible.
And it may be as long as the message: what we keep of it is cut (:func:`cut`).
"""

from __future__ import annotations

# What ends a line for some reader (str.splitlines, a terminal, a log shipper) or starts a control
# sequence: every C0 control but tab, DEL, every C1 control, and the Unicode line and paragraph
# separators.
_CONTROLS = [*(chr(c) for c in (*range(0x20), *range(0x7F, 0xA0)) if c != 0x09), "\u2028", "\u2029"]
#: Those characters, to refuse where an escape would not do (a command argument bound for a header).
CONTROLS = frozenset(_CONTROLS)
_ONE_LINE = str.maketrans({c: ascii(c)[1:-1] for c in _CONTROLS})
_LINES = str.maketrans({c: ascii(c)[1:-1] for c in _CONTROLS if c != "\n"})


def printable(text: str, *, lines: bool = False) -> str:
    """*text* with its control characters escaped; with *lines*, its line feeds kept as they are."""
    if text.isascii() and text.isprintable():  # nearly every log line: checked in C, 6x faster than translate
        return text
    return text.translate(_LINES if lines else _ONE_LINE)


def cut(text: str, length: int) -> str:
    """*text* if it is at most *length* characters; else its start, an ellipsis saying so, in *length*."""
    return text if len(text) <= length else text[: length - 1] + "…"

"""dkimpy's relaxed body canonicalization, made linear in the length of the body.

Why: dkimpy (1.1.8) drops the blanks that end each body line with
``re.sub(b"[\\t ]+\\r\\n", b"\\r\\n", body)``. On a run of blanks that no CRLF
follows, the regex engine tries the run again from each of its blanks, so the
work is the square of the run's length: a DKIM-signed 100 KB body line of
spaces took 9 s to check, 1 MB about 15 minutes, all of it holding the GIL of
the process that checks it. Anyone may sign with a domain of their own and
publish its key, and every DKIM signature and ARC message signature of a
message canonicalizes its body again.

The replacement makes the same substitutions. A match of the original can
only start where a run of blanks starts: one starting inside the run would
reach the same end, which is not a CRLF, or the whole run would have matched.
So refusing to start inside a run (the lookbehind) changes no match, and
leaves the engine one try per run instead of one per blank.
``tests/test_dkimcanon.py`` checks it against dkimpy's own function on random
input.

Where it takes effect: dkimpy's ``Relaxed.canonicalize_body`` looks the
function up in its module at every call, so replacing the module's attribute
changes every DKIM and ARC check (and signing) of the process that called
:func:`install`. :mod:`.auth`, which is what runs dkimpy, calls it when it is
imported: in the pipeline process (the process stage) and in the SMTP edge
process (``edge/authpolicy.py``). The parse worker runs no dkimpy.
"""

from __future__ import annotations

import re

import dkim.canonicalization

_BLANKS_ENDING_A_LINE = re.compile(rb"(?<![\t ])[\t ]+\r\n")


def strip_trailing_whitespace(content: bytes) -> bytes:
    """*content* without the blanks (spaces, tabs) that end its CRLF lines, as dkimpy's function, in linear time."""
    return _BLANKS_ENDING_A_LINE.sub(b"\r\n", content)


def install() -> None:
    """Make dkimpy use :func:`strip_trailing_whitespace` in this process."""
    dkim.canonicalization.strip_trailing_whitespace = strip_trailing_whitespace

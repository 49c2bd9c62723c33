"""dkimpy's body canonicalization, made linear in the length of the body and done once per message.

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
leaves the engine one try per run instead of one per blank. The pattern still
starts with the character set, so the engine skips ahead to the next blank as
dkimpy's does: a leading lookbehind made it try every byte, and ordinary
bodies took 1.5-2 times as long as with dkimpy's own.
``tests/test_dkimcanon.py`` checks it against dkimpy's own function on random
input.

Once per message: dkimpy canonicalizes the body again for every signature
it verifies, DKIM signature or ARC message signature, though all of a
message's signatures canonicalize the same body with one of two algorithms.
A run of relaxed canonicalization is regex work over the whole body (0.4 s on
8 MiB of short words, which is 100 times the SHA-256 that follows), so the 50
message signatures an ARC chain may hold took 20 s. Within
:func:`each_body_canonicalized_once` a thread keeps what dkimpy made of each
body for each algorithm, and every further signature costs only its hash.

Where it takes effect: dkimpy's ``Relaxed.canonicalize_body`` looks the
function up in its module at every call, and every signature's check calls
``CanonicalizationPolicy.canonicalize_body``, so replacing the module's
attribute and the class's method changes every DKIM and ARC check (and
signing) of the process that called :func:`install`. :mod:`.auth`, which is
what runs dkimpy, calls it when it is imported: in the pipeline process (the
process stage) and in the SMTP edge process (``edge/authpolicy.py``). The
parse worker runs no dkimpy.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dkim.canonicalization

# A blank that no blank precedes (the lookbehind sees it and the byte before it), then the rest of its run.
_BLANKS_ENDING_A_LINE = re.compile(rb"[\t ](?<![\t ][\t ])[\t ]*\r\n")
_DKIMPY_CANONICALIZE_BODY = dkim.canonicalization.CanonicalizationPolicy.canonicalize_body
# This thread's canonical bodies, by (algorithm, body), while it is in each_body_canonicalized_once().
_this_thread = threading.local()


def strip_trailing_whitespace(content: bytes) -> bytes:
    """*content* without the blanks (spaces, tabs) that end its CRLF lines, as dkimpy's function, in linear time."""
    return _BLANKS_ENDING_A_LINE.sub(b"\r\n", content)


@contextmanager
def each_body_canonicalized_once() -> Iterator[None]:
    """Within the block, dkimpy canonicalizes a body once per algorithm in this thread, not once per signature.

    What it made is kept until the block ends: one message's checks, not longer."""
    _this_thread.bodies = {}
    try:
        yield
    finally:
        del _this_thread.bodies


def _canonicalize_body_once(policy: Any, body: bytes) -> bytes:  # Any: dkimpy's CanonicalizationPolicy, untyped
    """dkimpy's canonicalization of *body*: within each_body_canonicalized_once(), the one made before."""
    bodies: dict[tuple[object, bytes], bytes] = getattr(_this_thread, "bodies", {})
    key = (policy.body_algorithm, body)  # the algorithm is a class (Simple or Relaxed); equal bodies are one
    if key not in bodies:
        bodies[key] = _DKIMPY_CANONICALIZE_BODY(policy, body)
    return bodies[key]


def install() -> None:
    """Make dkimpy use :func:`strip_trailing_whitespace`, and keep bodies in :func:`each_body_canonicalized_once`."""
    dkim.canonicalization.strip_trailing_whitespace = strip_trailing_whitespace
    dkim.canonicalization.CanonicalizationPolicy.canonicalize_body = _canonicalize_body_once

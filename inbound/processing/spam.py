"""Spam scores: a client of SpamAssassin's spamd (SPAMC/SPAMD protocol 1.5, ``SYMBOLS``).

Stage: called by the processor once per message, when ``[spam] spamd`` is
set. Input: the message bytes. Output: a :class:`SpamScore` (spamd's score,
its own required score and the names of the rules that hit), or None when
spamd could not score it.

Why a client of our own: the protocol is one request and one response over a
socket (``SYMBOLS SPAMC/1.5``, ``Content-length``, the message; spamd answers
``SPAMD/1.x 0 EX_OK``, a ``Spam: True ; 6.2 / 5.0`` header and the rule
names), and the PyPI clients are unmaintained or pull in a framework.

Failure behaviour: spamd down, refusing, slow past ``[spam] timeout`` or
answering nonsense never holds mail: the message goes on unscored
(``spam: {"status": "unavailable"}``). The outage is logged once when it
starts and once when it ends, and a marker file in the data directory
(``DataDir.spamd_outage``) lets ``inbound status`` show it. A message larger than
``MAX_SCORED_SIZE`` is not sent, as spamc does not send it: SpamAssassin's
rules are written for the start of a message and its time grows with size.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import SpamSettings

log = logging.getLogger(__name__)

MAX_SCORED_SIZE = 512 * 1024  # spamc's default (-s 500k)
_STATUS_LINE = re.compile(rb"^SPAMD/\d+\.\d+ (\d+) (\S+)")
_SPAM_HEADER = re.compile(rb"^Spam: *(\w+) *; *(-?[\d.]+) */ *(-?[\d.]+)", re.IGNORECASE | re.MULTILINE)
_MAX_RESPONSE = 64 * 1024  # rule names only; a longer answer is not spamd's


class SpamdError(Exception):
    """spamd did not score the message (down, slow, refused, or not speaking the protocol)."""


@dataclass(frozen=True, slots=True)
class SpamScore:
    score: float
    required: float  # spamd's own required_score; a stream's spam_threshold may differ
    rules: tuple[str, ...]

    def as_json(self, threshold: float) -> dict[str, object]:
        """The payload's ``spam`` object, judged against *threshold*."""
        return {
            "score": self.score,
            "threshold": threshold,
            "is_spam": self.score >= threshold,
            "rules": list(self.rules),
        }

    def header_value(self, threshold: float) -> str:
        """An ``X-Spam-Status`` value in SpamAssassin's own form."""
        verdict = "Yes" if self.score >= threshold else "No"
        return f"{verdict}, score={self.score:.1f} required={threshold:.1f} tests={','.join(self.rules) or 'none'}"


UNAVAILABLE = {"status": "unavailable"}
SKIPPED = {"status": "skipped"}


def request_spamd(host: str, port: int, message: bytes, timeout: float) -> SpamScore:
    """One ``SYMBOLS`` request; raises :class:`SpamdError` for anything but a score, within *timeout*."""
    deadline = time.monotonic() + timeout
    request = f"SYMBOLS SPAMC/1.5\r\nContent-length: {len(message)}\r\nUser: inbound\r\n\r\n".encode() + message
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
            response = b""
            while len(response) <= _MAX_RESPONSE:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                chunk = sock.recv(65536)
                if not chunk:
                    break
                response += chunk
    except OSError as exc:  # refused, reset, timed out
        raise SpamdError(f"spamd at {host}:{port}: {exc or type(exc).__name__}") from exc
    return parse_response(response)


def parse_response(response: bytes) -> SpamScore:
    head, _, body = response.partition(b"\r\n\r\n")
    status = _STATUS_LINE.match(head)
    if status is None:
        raise SpamdError(f"not a spamd response: {head[:80]!r}")
    if status.group(1) != b"0":
        raise SpamdError(f"spamd refused: {head.splitlines()[0].decode(errors='replace')}")
    spam = _SPAM_HEADER.search(head)
    if spam is None:
        raise SpamdError("spamd response without a Spam header")
    rules = tuple(r for r in body.decode("ascii", errors="replace").strip().split(",") if r)
    try:
        return SpamScore(float(spam.group(2)), float(spam.group(3)), rules)
    except ValueError:  # "1.2.3" matches the pattern's characters
        raise SpamdError(f"spamd score is not a number: {spam.group(0)!r}") from None


class Spamd:
    """Scores messages; remembers whether spamd is out, so an outage is reported once."""

    def __init__(self, settings: SpamSettings, outage_marker: Path) -> None:
        assert settings.spamd is not None, "only built when [spam] spamd is set"
        self.host, self.port = settings.spamd
        self.timeout = settings.timeout
        self.marker = outage_marker
        self.down = self.marker.exists()  # an outage noted before a restart ends at the next score

    def score(self, message: bytes) -> SpamScore | None:
        """spamd's score of *message*, or None when it could not be had (see the module doc)."""
        try:
            score = request_spamd(self.host, self.port, message, self.timeout)
        except SpamdError as exc:
            self._outage(str(exc))
            return None
        if self.down:
            self.down = False
            log.warning("stage=process spamd at %s:%d is back: messages are scored again", self.host, self.port)
            self.marker.unlink(missing_ok=True)
        return score

    def _outage(self, problem: str) -> None:
        if self.down:
            return
        self.down = True
        log.error("stage=process spam scoring unavailable, messages go on unscored: %s", problem)
        try:
            self.marker.parent.mkdir(parents=True, exist_ok=True)
            self.marker.write_text(json.dumps({"since": time.time(), "problem": problem}))
        except OSError as exc:  # the status note is a convenience; mail does not wait on it
            log.warning("stage=process cannot note the spamd outage for `inbound status`: %s", exc)


def read_outage(marker: Path) -> tuple[float, str] | None:
    """(since, problem) of the spamd outage a processor noted in *marker*, or None."""
    try:
        data = json.loads(marker.read_text())
        return float(data["since"]), str(data["problem"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0, "unreadable outage note"

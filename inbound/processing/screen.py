"""Screening: the sender verdicts and the spam score of a message, and what each stream does about them.

Stage: the processor screens a message once (:meth:`Screener.screen`), then
asks, per stream it is addressed to, for that stream's :class:`Decision`
(:func:`decide`): deliver, deliver flagged, or block with a reason. The
decision also carries what the payload shows: the ``auth`` and ``spam``
objects, the ``flags``, and the trace headers we add (``Authentication-Results``
with our hostname, ``X-Spam-Status``).

Per-stream keys (``[[streams]]``, validated in config/streams.py): ``on_dmarc_fail``
and ``on_spam`` (``deliver`` | ``flag`` | ``block``), ``spam_threshold``, and
the refusals the SMTP edge makes (``reject_dmarc_reject``, ``spf_fail =
"reject"``). The processor blocks those too: when other recipients of the same
transaction took the message, the edge could not refuse it for one stream
alone (see ``inbound/edge/authpolicy.py``).

Failure behaviour: none of its own; the verdicts and the score never raise
(auth.py, spam.py). Unavailable verdicts (temperror) never block: only a
``fail`` does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..config import BLOCK, DELIVER, StreamSettings
from ..envelope import Envelope
from .spam import MAX_SCORED_SIZE, SKIPPED, UNAVAILABLE, Spamd, SpamScore
from .verdicts import FAIL, Verdicts, claims

if TYPE_CHECKING:  # the parse worker builds payloads with this module and looks nothing up: no DNS libraries
    from .auth import Authenticator

AUTHENTICATION_RESULTS = "Authentication-Results"
SPAM_STATUS = "X-Spam-Status"
# The spam headers a payload format writes (the postmark format the score and tests apart, as Postmark does).
_SPAM_HEADERS = frozenset({"x-spam-status", "x-spam-score", "x-spam-tests"})
# Never inside the value of a header we write: a line break (a bare CR too) would end our header there
# and start one whoever wrote the text wrote; NUL ends the value for a reader in C. The verdicts carry
# text that senders write (domains, selectors), the spam status text that spamd sends.
_NOT_IN_OUR_HEADERS = re.compile(r"[\r\n\0]")


@dataclass(frozen=True, slots=True)
class Screening:
    """What is known of one message before any stream's policy: None where not computed."""

    verdicts: Verdicts | None
    spam: SpamScore | None
    spam_status: dict[str, str] | None  # UNAVAILABLE or SKIPPED when there is no score but scoring is on


@dataclass(frozen=True, slots=True)
class Decision:
    block_reason: str | None
    flags: tuple[str, ...]
    auth: dict[str, Any] | None
    spam: dict[str, Any] | None
    headers: tuple[tuple[str, str], ...]  # to put first in the payload's headers
    hostname: str  # ours: the authserv-id of our Authentication-Results

    def verdicts(self) -> dict[str, Any] | None:
        """What the activity log shows of this decision: the verdicts and flags that were computed."""
        shown = {"auth": self.auth, "spam": self.spam, "flags": list(self.flags) or None}
        return {name: value for name, value in shown.items() if value is not None} or None

    def trace_headers(self, headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """*headers* with ours first, and without any Authentication-Results that claims to be ours.

        One that arrives with the message claiming our hostname was written by
        the sender (or a relay) to look like our verdict: RFC 8601 5 says remove it.
        So is a spam header when we score spam ourselves, and ``Received-SPF`` when we check SPF.
        """
        return [*self.headers, *((n, v) for n, v in headers if not self._forged(n, v))]

    def trace_raw(self, raw: bytes) -> bytes:
        """*raw* with our trace headers on top and the forged ones left out; every other byte as it was."""
        blank = re.search(rb"\r?\n\r?\n", raw)  # CRLF as SMTP sends it; bare LFs from a sloppy client too
        end = blank.start() + blank.group().index(b"\n") + 1 if blank else len(raw)
        head, rest = raw[:end], raw[end:]
        fields: list[bytes] = []  # each field with its folded continuation lines
        for line in head.splitlines(keepends=True):
            if fields and line[:1] in (b" ", b"\t"):
                fields[-1] += line
            else:
                fields.append(line)
        kept = [f for f in fields if not self._forged(*_name_value(f))]
        ours = [f"{name}: {value}\r\n".encode() for name, value in self.headers]
        return b"".join([*ours, *kept]) + rest

    def _forged(self, name: str, value: str) -> bool:
        """Whether the sender's header *name* would pass for one of ours: every verdict header a format
        writes (Postmark's X-Spam-Score, X-Spam-Tests and Received-SPF too) when we computed that verdict."""
        name = name.strip().lower()
        if name == AUTHENTICATION_RESULTS.lower():
            return claims(value, self.hostname)
        if name in _SPAM_HEADERS:
            return self.spam is not None
        return name == "received-spf" and self.auth is not None


def _name_value(field: bytes) -> tuple[str, str]:
    name, _, value = field.decode("utf-8", errors="replace").partition(":")
    return name, " ".join(value.split())


class Screener:
    def __init__(self, hostname: str, auth: Authenticator | None = None, spamd: Spamd | None = None) -> None:
        self.hostname = hostname
        self.auth = auth
        self.spamd = spamd

    def screen(self, envelope: Envelope, message: bytes) -> Screening:
        verdicts = None
        if self.auth is not None:
            verdicts = self.auth.verify(
                message,
                client_ip=client_ip(envelope.client_address),
                mail_from=envelope.mail_from,
                helo=envelope.helo,
            )
        if self.spamd is None:
            return Screening(verdicts, None, None)
        if len(message) > MAX_SCORED_SIZE:
            return Screening(verdicts, None, SKIPPED)
        score = self.spamd.score(message)
        return Screening(verdicts, score, None if score is not None else UNAVAILABLE)


def decide(screening: Screening, stream: StreamSettings, hostname: str) -> Decision:
    """What *stream* does with a message so screened."""
    reasons: list[str] = []
    flags: list[str] = []
    headers: list[tuple[str, str]] = []
    verdicts = screening.verdicts
    if verdicts is not None:
        headers.append((AUTHENTICATION_RESULTS, verdicts.header_value(hostname)))
        dmarc = verdicts.dmarc
        if dmarc.result == FAIL:
            why = f"DMARC fail for {dmarc.domain} (policy {dmarc.policy})"
            if stream.reject_dmarc_reject and dmarc.policy == "reject":
                reasons.append(f"{why}; reject_dmarc_reject = true")
            _act(stream.on_dmarc_fail, "dmarc_fail", f"{why}; on_dmarc_fail = block", reasons, flags)
        if verdicts.spf.result == FAIL and stream.spf_fail == "reject":
            reasons.append(f"SPF fail for {verdicts.spf.domain}; spf_fail = reject")
    spam: dict[str, Any] | None = dict(screening.spam_status) if screening.spam_status else None
    if screening.spam is not None:
        threshold = stream.spam_threshold if stream.spam_threshold is not None else screening.spam.required
        spam = screening.spam.as_json(threshold)
        headers.append((SPAM_STATUS, screening.spam.header_value(threshold)))
        if spam["is_spam"]:
            why = f"spam score {screening.spam.score:.1f} >= {threshold:.1f}; on_spam = block"
            _act(stream.on_spam, "spam", why, reasons, flags)
    return Decision(
        "; ".join(reasons) or None,
        tuple(flags),
        verdicts.as_json() if verdicts is not None else None,
        spam,
        tuple((name, _NOT_IN_OUR_HEADERS.sub(" ", value)) for name, value in headers),
        hostname,
    )


def _act(action: str, flag: str, block_reason: str, reasons: list[str], flags: list[str]) -> None:
    if action == BLOCK:
        reasons.append(block_reason)
    elif action != DELIVER:
        flags.append(flag)


def client_ip(client_address: str) -> str:
    """The IP of an envelope's ``ip:port`` (``::1:2525`` for IPv6, as the SMTP edge writes it)."""
    return client_address.rpartition(":")[0].strip("[]") or client_address

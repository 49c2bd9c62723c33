"""SMTP-time refusals on sender verdicts: SPF ``fail`` at MAIL FROM, DMARC ``p=reject`` at the end of DATA.

Stage: the SMTP handler (smtp.py) asks this module at MAIL, RCPT and DATA
whenever ``[auth]`` is on; it looks anything up only while some stream sets
``spf_fail = "reject"`` or ``reject_dmarc_reject = true`` (the streams may
change on HUP: :meth:`SmtpAuthPolicy.use`).
Refusing during the transaction, instead of accepting and dropping, means no
backscatter and the sending server tells its user.

Replies: ``550 5.7.1`` (RFC 3463: delivery not authorised, message refused).

* SPF: computed at MAIL FROM. Which streams a message is for is only known at
  RCPT, so the refusal comes at MAIL FROM when every stream rejects SPF
  failures, else at RCPT for the recipients of the streams that do.
* DMARC: computed over the whole message at the end of DATA; refused when the
  From domain publishes ``p=reject`` (or ``sp=reject``), the message fails
  DMARC and every recipient's stream has ``reject_dmarc_reject``. With
  recipients in other streams too it is accepted, and the processor blocks it
  for the streams that refuse such mail (screen.py).

Failure behaviour: the lookups block, so they run on threads of our own (not
the event loop, and not the loop's default executor that the spool writes
use), each bounded by ``[auth] timeout``. A check that times out or ends in
``temperror`` accepts: only a definite ``fail`` is refused.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar
from weakref import WeakKeyDictionary

from ..config import StreamSettings
from ..processing.auth import Authenticator
from ..processing.verdicts import FAIL, SpfVerdict

log = logging.getLogger(__name__)

T = TypeVar("T")
# SMTP sessions checking at once; more wait their turn (each check is bounded by [auth] timeout).
CHECK_THREADS = 8
SPF_REFUSAL = "550 5.7.1 Sender not authorised by the SPF record of its domain"


@dataclass(frozen=True, slots=True)
class Refusing:
    """Which streams refuse mail on which verdict: one value, replaced whole when the streams are reloaded."""

    spf: frozenset[str]
    dmarc: frozenset[str]
    every_stream_spf: bool  # then SPF fail is refused at MAIL FROM already

    @classmethod
    def of(cls, streams: Sequence[StreamSettings]) -> Refusing:
        spf = frozenset(s.name for s in streams if s.spf_fail == "reject")
        dmarc = frozenset(s.name for s in streams if s.reject_dmarc_reject)
        return cls(spf, dmarc, spf == frozenset(s.name for s in streams))


class SmtpAuthPolicy:
    """Made whenever ``[auth]`` is on, as a HUP may give a stream ``spf_fail = "reject"``; idle until one does."""

    def __init__(self, auth: Authenticator, streams: Sequence[StreamSettings]) -> None:
        self.auth = auth
        self.refusing = Refusing.of(streams)
        self.spf_of: WeakKeyDictionary[object, SpfVerdict] = WeakKeyDictionary()  # per SMTP transaction
        self.threads = ThreadPoolExecutor(CHECK_THREADS, thread_name_prefix="smtp-auth")

    def use(self, streams: Sequence[StreamSettings]) -> None:
        """The reloaded streams' policies, from the next command on (HUP)."""
        self.refusing = Refusing.of(streams)

    def close(self) -> None:
        self.threads.shutdown(wait=False, cancel_futures=True)

    async def at_mail(self, transaction: object, client_ip: str, mail_from: str, helo: str) -> str | None:
        """The refusal of MAIL FROM, or None; remembers the SPF verdict for RCPT."""
        refusing = self.refusing
        if not refusing.spf:
            return None
        verdict = await self._bounded(self.auth.check_spf, client_ip, mail_from, helo)
        if verdict is None:
            return None
        self.spf_of[transaction] = verdict
        if verdict.result == FAIL and refusing.every_stream_spf:
            log.info("stage=receive refused MAIL FROM <%s> from %s: SPF fail", mail_from, client_ip)
            return SPF_REFUSAL
        return None

    def at_rcpt(self, transaction: object, stream: str) -> str | None:
        verdict = self.spf_of.get(transaction)
        if verdict is not None and verdict.result == FAIL and stream in self.refusing.spf:
            return SPF_REFUSAL
        return None

    async def at_data(self, message: bytes, streams: set[str], client_ip: str, mail_from: str, helo: str) -> str | None:
        """The refusal of the message at the end of DATA, or None."""
        if not streams or not streams <= self.refusing.dmarc:
            return None
        verdicts = await self._bounded(
            lambda: self.auth.verify(message, client_ip=client_ip, mail_from=mail_from, helo=helo)
        )
        if verdicts is None or not verdicts.dmarc_rejects:
            return None
        domain = verdicts.dmarc.domain
        log.info(
            "stage=receive refused a message from <%s> at %s: From %s fails DMARC p=reject",
            mail_from,
            client_ip,
            domain,
        )
        return f"550 5.7.1 Message refused: it fails DMARC and {domain} publishes p=reject"

    async def _bounded(self, check: Callable[..., T], *args: str) -> T | None:
        """*check* on our threads, or None when it takes longer than the verdicts may."""
        loop = asyncio.get_running_loop()
        try:
            # A little over the checks' own bound, which they keep: this only guards against a hang.
            return await asyncio.wait_for(loop.run_in_executor(self.threads, check, *args), self.auth.timeout + 1)
        except TimeoutError:
            log.warning("stage=receive sender verdict timed out after %.1fs: accepted", self.auth.timeout)
            return None

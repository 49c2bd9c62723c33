"""Receive: what happens to mail at the SMTP edge -- routing at RCPT, the sender checks, spooling at DATA.

aiosmtpd keeps the protocol (:mod:`.smtp`, ``InboundSMTP``) apart from a *handler*
that decides what each command means for the mail: this one. It answers every
hook with an RFC 3463 enhanced status code, and answers 250 to DATA only once
the spool holds the message durably (:class:`~.spool.SpoolWriter`, shared by
every session so that concurrent messages share one fsync).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from aiosmtpd.smtp import SMTP, Session
from aiosmtpd.smtp import Envelope as SMTPEnvelope

from .. import metrics
from ..addresses import mailbox_key
from ..clock import rfc3339
from ..config import SmtpSettings
from ..envelope import Envelope, Recipient
from ..errors import SpoolError
from ..ids import new_queue_id
from ..routing import RoutingTable, Verdict
from .limits import ConnectionLimits, DataBudget
from .smtp import TOO_MANY_RECIPIENTS, InboundSMTP, client_peer, format_peer, peer_ip, reflected_names
from .spool import Spool, SpoolWriter
from .tls import TlsContexts, describe

if TYPE_CHECKING:  # made only with [auth] on: the edge imports the DNS libraries then, not otherwise
    from .authpolicy import SmtpAuthPolicy

log = logging.getLogger(__name__)


def received_header(hostname: str, session: Session, envelope: Envelope, now: datetime) -> bytes:
    ip = peer_ip(client_peer(session))
    helo = session.host_name or "unknown"
    protocol = "ESMTPS" if envelope.tls else ("ESMTP" if session.extended_smtp else "SMTP")
    using = f"\r\n\t(using {envelope.tls_version} with cipher {envelope.tls_cipher})" if envelope.tls else ""
    recipient = f"\r\n\tfor <{envelope.recipients[0].address}>" if len(envelope.recipients) == 1 else ""
    literal = f"IPv6:{ip}" if ":" in ip else ip  # RFC 5321 4.1.3: an IPv6 address literal says so
    return (
        f"Received: from {helo} ([{literal}])\r\n\tby {hostname} (inbound) with {protocol} id {envelope.queue_id}"
        f"{using}{recipient};\r\n\t{format_datetime(now)}\r\n"
    ).encode()


def reverse_path(address: str) -> str:
    """MAIL FROM's address as inbound records it: aiosmtpd's ``<>`` (the null sender of bounces) is ``""``."""
    return "" if address == "<>" else address


class InboundHandler:
    """What happens to mail: routing at RCPT, spooling at DATA.

    ``routing`` is replaced whole when the streams are reloaded (HUP, on the event loop
    like every command): the next RCPT is routed by the new table.
    """

    def __init__(
        self,
        settings: SmtpSettings,
        routing: RoutingTable,
        spool: Spool,
        on_spooled: Callable[[], None] = lambda: None,
        refuse_mail: Callable[[], str | None] = lambda: None,
        *,
        auth_policy: SmtpAuthPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.routing = routing
        self.spool = spool
        self.spool_writer = SpoolWriter(spool)
        self.on_spooled = on_spooled
        self.refuse_mail = refuse_mail  # a reply (e.g. 452 for a full disk) or None
        self.auth_policy = auth_policy
        self.draining = False
        self.limits = ConnectionLimits(settings.max_connections, settings.max_connections_per_ip)
        self.data_budget = DataBudget.of(settings.max_data_in_memory, settings.max_message_size)
        self.tls = TlsContexts(settings.tls) if settings.tls else None  # HUP reloads it (Service.reload)
        # Each transaction's recipients as routed at RCPT: a HUP between RCPT and DATA may swap
        # self.routing, and what the client was told at RCPT is what the message carries.
        self.recipients: WeakKeyDictionary[SMTPEnvelope, list[Recipient]] = WeakKeyDictionary()
        self.in_flight = 0

    def __dir__(self) -> list[str]:
        return reflected_names(type(self))

    async def handle_exception(self, error: Exception) -> str:
        """A command that raised: a bug of ours, logged with its traceback; the client may try again.

        aiosmtpd's own answer sent the exception's class and text to the client, as a permanent 500.
        """
        log.error("stage=receive a command failed", exc_info=error)
        return "451 4.3.0 Local error in processing"

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: SMTPEnvelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        # aiosmtpd advertises AUTH once TLS is up, though inbound offers none (see reflected_names).
        keywords = [line for line in responses[:-1] if not line.startswith("250-AUTH")]
        return [*keywords, "250-PIPELINING", "250-ENHANCEDSTATUSCODES", responses[-1]]

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: SMTPEnvelope, address: str, options: list[str]
    ) -> str:
        refusal = self.refuse_mail()
        if refusal is None and self.auth_policy is not None:
            ip, helo = peer_ip(client_peer(session)), session.host_name or ""
            refusal = await self.auth_policy.at_mail(envelope, ip, reverse_path(address), helo)
        if refusal is not None:
            return refusal
        # Kept as aiosmtpd spells it, "<>" for the null sender: aiosmtpd takes a false mail_from for
        # "no MAIL yet", so an empty one made every RCPT of a bounce a 503 and let a second MAIL in.
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: SMTPEnvelope, address: str, options: list[str]
    ) -> str:
        if len(envelope.rcpt_tos) >= self.settings.max_recipients:
            return TOO_MANY_RECIPIENTS
        route = self.routing.route(address)
        verdict = route.verdict
        if verdict is Verdict.NOT_OUR_DOMAIN:
            return "550 5.7.1 Relaying denied: we do not accept mail for that domain"
        if verdict is Verdict.UNKNOWN_MAILBOX:
            return "550 5.1.1 No such mailbox here"
        refusal = self.auth_policy.at_rcpt(envelope, route.stream or "") if self.auth_policy else None
        if refusal is not None:
            return refusal
        if mailbox_key(address) in map(mailbox_key, envelope.rcpt_tos):
            return "250 2.1.5 Ok"  # one mailbox, one copy of the message (as Postfix does)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        self.recipients.setdefault(envelope, []).append(Recipient(address, route.stream or "", route.mailbox_hash))
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: SMTPEnvelope) -> str:
        meter = server.header_meter if isinstance(server, InboundSMTP) else None
        if meter is not None and meter.exceeded:
            return "552 5.3.4 Message header size exceeds fixed maximum header size"
        now = datetime.now(UTC)
        recipients = self.recipients.get(envelope, [])
        tls_version, tls_cipher = describe(session.ssl)
        ours = Envelope(
            queue_id=new_queue_id(),
            mail_from=reverse_path(envelope.mail_from or ""),
            recipients=tuple(recipients),
            client_address=format_peer(client_peer(session)),
            helo=session.host_name or "",
            tls=session.ssl is not None,
            tls_version=tls_version,
            tls_cipher=tls_cipher,
            received_at=rfc3339(now.timestamp()),
        )
        content = envelope.original_content or b""  # as stored: dot-stuffing undone, bare LFs made CRLF (smtp.py)
        if self.auth_policy is not None:
            streams = {r.stream for r in recipients}
            ip = peer_ip(client_peer(session))
            refusal = await self.auth_policy.at_data(content, streams, ip, ours.mail_from, ours.helo)
            if refusal is not None:
                return refusal
        message = received_header(self.settings.hostname, session, ours, now) + content
        # From here until the spool has it, the message is held once, as the data budget counts it: not
        # also as the envelope's copy and this one, across the wait.
        envelope.content = envelope.original_content = None
        del content
        answered = server.hand_over_data() if isinstance(server, InboundSMTP) else lambda: None
        self.in_flight += 1
        try:
            await self.spool_writer.put(ours, message, answered)
        except SpoolError as exc:
            log.error("queue_id=%s stage=receive spool failed: %s", ours.queue_id, exc)
            return "451 4.3.0 Temporary local problem, please try again later"
        finally:
            self.in_flight -= 1
        log.info(
            "queue_id=%s stage=receive spooled size=%d from=<%s> rcpts=%d client=%s",
            ours.queue_id,
            len(message),
            ours.mail_from,
            len(recipients),
            ours.client_address,
        )
        self.on_spooled()
        metrics.ACCEPTED.inc()
        return f"250 2.0.0 Ok: queued as {ours.queue_id}"


# aiosmtpd reads the EHLO hook's signature for every session (to tell its two forms apart): computed once.
setattr(InboundHandler.handle_EHLO, "__signature__", inspect.signature(InboundHandler.handle_EHLO))  # noqa: B010

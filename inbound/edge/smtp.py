"""Receive: the SMTP protocol of the edge, aiosmtpd's ``SMTP`` with the small tweaks it needs.

Input: SMTP sessions. What happens to the mail -- routing, the sender checks, the
spool and the 250 only for a message it holds durably -- is the handler's
(:mod:`.handler`), kept apart from the protocol as aiosmtpd intends.

The edge's replies (with RFC 3463 enhanced status codes), from both:

* RCPT to a configured domain but unknown mailbox: ``550 5.1.1``; to any other
  domain: ``550 5.7.1`` (we are never a relay); too many: ``452 4.5.3``.
* ``MAIL FROM ... SIZE=`` or DATA over ``smtp.max_message_size`` (DATA as stored, each bare LF
  a CRLF), or a header section over ``smtp.max_header_size`` (headersize.py): ``552 5.3.4``.
* Spool write failed: ``451 4.3.0`` -- the sender keeps the message and retries.
* Shutting down: new connections get ``421 4.3.2``.
* SPF fail / DMARC p=reject fail, for streams that refuse them: ``550 5.7.1``
  (the checks and when they apply: authpolicy.py).

Lines longer than RFC 5321's 1000 octets are accepted (up to the size limit),
as Postfix does: aiosmtpd's permanent 500 would bounce real-world mail.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections import defaultdict
from collections.abc import Awaitable, Callable
from email._header_value_parser import get_addr_spec, get_angle_addr
from email.errors import HeaderParseError
from typing import TYPE_CHECKING, Any

from aiosmtpd.proxy_protocol import get_proxy
from aiosmtpd.smtp import SMTP, Session, TLSSetupException, syntax

from .. import metrics
from ..addresses import AddressRefused, parse_path, split_path
from ..config import SmtpSettings
from ..printable import CONTROLS
from .headersize import HeaderMeter, with_crlf_line_ends
from .limits import counted, counted_as

if TYPE_CHECKING:
    from .handler import InboundHandler

log = logging.getLogger(__name__)

# aiosmtpd's own replies whose text is better said otherwise, by their start (the code added with it).
_REWORDED = {
    "552 Error: message size exceeds": "552 5.3.4 Message size exceeds fixed maximum message size",
    "552 Error: Too much mail data": "552 5.3.4 Message size exceeds fixed maximum message size",
    "530 Must issue a STARTTLS": "530 5.7.0 Must issue a STARTTLS command first",
    "220 Ready to start TLS": "220 2.0.0 Ready to start TLS",
    "454 TLS not available": "454 4.7.0 TLS not available due to temporary reason",
}

# RFC 2034: with ENHANCEDSTATUSCODES advertised, every 2xx, 4xx and 5xx reply carries one (RFC 3463),
# but the greeting and the answers to HELO and EHLO. aiosmtpd's own replies have none: what each
# of its codes means there, else the class's generic one (X.0.0).
_ENHANCED_BY_REPLY_CODE = {
    "214": "2.0.0",  # HELP
    "252": "2.5.0",  # VRFY: cannot verify, will accept
    "500": "5.5.2",  # unrecognised command
    "501": "5.5.4",  # bad arguments
    "502": "5.5.1",  # not implemented
    "503": "5.5.1",  # bad sequence
    "504": "5.5.4",  # parameter not implemented
    "538": "5.7.11",  # encryption required for the AUTH mechanism
    "555": "5.5.4",  # MAIL/RCPT parameters not recognised
}
_HAS_ENHANCED_CODE = re.compile(r"\d{3}[ -][245]\.\d{1,3}\.\d{1,3}(?: |$)")
# An echoed argument may hold any byte but CR LF (a bare CR, NUL, undecodable bytes): each such one
# becomes '?', so a reply stays one well-formed line.
_UNSAFE_IN_REPLY = str.maketrans({chr(c): "?" for c in (*range(0x20), 0x7F) if c != 0x09})


def _with_enhanced_code(reply: str) -> str:
    """*reply* with an enhanced status code after its code, when it lacks one and should have one."""
    code = reply[:3]
    if code[:1] not in ("2", "4", "5") or code == "220" or _HAS_ENHANCED_CODE.match(reply):
        return reply
    detail = _ENHANCED_BY_REPLY_CODE.get(code, f"{code[0]}.0.0")
    return f"{reply[:4]}{detail} {reply[4:]}" if len(reply) > 4 else f"{code} {detail}"


# RFC 5321 4.5.3.1.10: the answer to each recipient past smtp.max_recipients. Its client sends the message
# to those taken and the rest later: not a refusal that counts against smtp.max_errors.
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
PROXY_TIMEOUT = 10.0  # seconds a load balancer has to send its PROXY header
# Seconds a connection we close has to take its last replies before it is cut. A client that reads
# none fills the socket's buffers, and close() waits for them to be sent: for ever, the connection
# counted all the while (15 addresses took all 300 places until a restart).
CLOSE_GRACE = 5.0
# The most DATA read as one block. asyncio's reader buffers up to twice its limit before it stops
# reading the socket, so this, not the message size, is what a connection holds beyond its budget.
DATA_BLOCK = 256 * 1024
DATA_END = b"\r\n.\r\n"
# SIZE= as RFC 1870 writes it: ASCII digits (str.isdigit, which aiosmtpd asks, takes "²" too, and int() then
# raises), and no more of them than a size can have.
_SIZE_PARAM = re.compile(r"SIZE=(?![0-9]{1,20}(?:\s|$))\S*", re.IGNORECASE)


_REFLECTED: dict[type, list[str]] = {}


def reflected_names(cls: type) -> list[str]:
    """What aiosmtpd's ``SMTP.__init__`` looks for by reflection, once per class instead of per session.

    It builds its command, hook and AUTH tables from ``dir()`` and ``inspect.getmembers()`` of the
    session and the handler, which reads every attribute of both: about half of a new connection's
    cost in a profile. Only the ``smtp_`` and ``handle_`` prefixes matter to it, and they are
    methods of the class. Its AUTH is left out (the command, and the ``auth_`` mechanisms it would
    advertise once TLS is up): an MX authenticates nobody, and aiosmtpd's LOGIN and PLAIN always fail.
    """
    if cls not in _REFLECTED:
        names = (name for name in dir(cls) if name.startswith(("smtp_", "handle_")) and name != "smtp_AUTH")
        _REFLECTED[cls] = sorted(names)
    return _REFLECTED[cls]


class InboundSMTP(SMTP):
    """aiosmtpd's protocol with long DATA lines accepted, short command lines, enhanced codes and a draining state.

    Two limits, because one reader serves both: a command line is capped at
    ``smtp.max_command_line`` (so a client that never ends a line holds 4 KiB,
    not the message size); a DATA line may be as long as the whole message,
    as Postfix accepts, since aiosmtpd's permanent 500 would bounce real mail.
    DATA is read in blocks, not lines (:meth:`_read_data`), and the tables
    aiosmtpd builds by reflection cost one ``dir()`` per class (``__dir__``).
    """

    def __init__(self, handler: InboundHandler, settings: SmtpSettings, **kwargs: Any) -> None:
        # Read by the StreamReader made inside SMTP.__init__, hence set first: the reader's limit
        # is the command line's. DATA raises it while it reads (smtp_DATA below).
        self.line_length_limit = settings.max_command_line
        super().__init__(
            handler,
            hostname=settings.hostname,
            timeout=settings.command_timeout,
            tls_context=handler.tls.current if handler.tls else None,
            require_starttls=bool(settings.tls and settings.tls.require_tls),
            ident="inbound ESMTP",
            data_size_limit=settings.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            **kwargs,
        )
        self.inbound_handler = handler
        self.settings = settings
        self.errors = 0  # refusals in this session, against settings.max_errors
        self.client = ""  # the client's address, as the logs name it
        self.counted_as = ""  # ...and as the connection limits and the data budget count it (counted_as)
        self.header_meter: HeaderMeter | None = None  # while DATA is read
        self.answering_hello = False
        # The reader's limit is the one cap of a command line. aiosmtpd checks each line against caps
        # of its own as well: 512 bytes, and for MAIL a class-wide allowance that every EHLO raises and
        # every new connection resets, whoever's session it is. Here per session, and never below ours.
        self.command_size_limit = settings.max_command_line
        self.command_size_limits = defaultdict(lambda: settings.max_command_line)
        self.data_held = 0  # bytes of this session's DATA counted in the handler's data_budget
        self.ended = False  # connection_lost has run

    def __dir__(self) -> list[str]:
        return reflected_names(type(self))

    def _create_session(self) -> Session:
        # aiosmtpd starts a new session after STARTTLS (RFC 3207 4.2), but the PROXY header came once,
        # at the start of the connection: without it the load balancer would pass for the client.
        session = super()._create_session()
        if self.session is not None:
            session.proxy_data = self.session.proxy_data
        return session

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # aiosmtpd 1.4.6 declares a typing.Protocol class inside its _getaddr on every call, 36 of
        # the 58 µs it takes, and MAIL and RCPT each call it: the same parse, without the class.
        if not arg:
            return "", ""
        parse = get_angle_addr if arg.lstrip().startswith("<") else get_addr_spec
        try:
            address, rest = parse(arg)
        except (HeaderParseError, IndexError):  # IndexError: the stdlib's parser on some inputs ("a\r@")
            return None, None
        mailbox: str = address.addr_spec
        if self.local_part_limit and len(mailbox.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return mailbox, rest

    def _set_reader_limit(self, limit: int) -> None:
        # asyncio.StreamReader has no public way to change its limit; it reads ``_limit`` on every call.
        setattr(self._reader, "_limit", limit)  # noqa: B010 -- private attribute, set on purpose

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        # aiosmtpd's checks before the 354, as it makes them.
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        self._set_reader_limit(DATA_BLOCK)
        self.header_meter = HeaderMeter(self.settings.max_header_size)
        try:
            content = await self._read_data_in_time()
            if isinstance(content, str):
                status = content
            else:
                self.envelope.content = self.envelope.original_content = content
                del content  # the envelope's alone, which the handler empties before it waits for the spool
                status = await self._call_handler_hook("DATA")
        finally:
            self._give_back_data()  # refused or cut off before the spool writer had it (hand_over_data)
            # The message is dropped whatever happened, a hook that raised included: an idle session
            # kept it, out of the data budget's sight, once its share had been given back.
            self._set_post_data_state()  # type: ignore[no-untyped-call]  # aiosmtpd leaves it unannotated
            self.header_meter = None
            self._set_reader_limit(self.command_size_limit)
            if self.transport is not None:  # idle from here, unless the client is gone
                self._reset_timeout()
        await self.push(status)

    async def _read_data_in_time(self) -> bytes | str:
        """:meth:`_read_data` within ``smtp.data_timeout`` for the whole of it, however slowly it drips.

        That deadline is the only one while DATA streams: the idle timer (``command_timeout``, which
        aiosmtpd started at the DATA command) would cut a message still arriving. Neither runs once
        the message is read and handed on to be spooled: a 421 then could be for a message the spool
        keeps, which its sender would send again. It gets the 250, or the spool's 451.
        """
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
        deadline = self.loop.call_later(
            self.settings.data_timeout, self._close_with, "421 4.4.2 DATA took too long, closing connection"
        )
        try:
            return await self._read_data()
        finally:
            deadline.cancel()

    async def _read_data(self) -> bytes | str:
        """The message up to the CRLF.CRLF that ends DATA, as stored (dot-stuffing undone, bare LFs made
        CRLF); or the reply refusing it.

        Read in blocks, each up to that CRLF.CRLF or of ``DATA_BLOCK`` bytes, rather than line by
        line as aiosmtpd does. The end itself is what the reader looks for: looking for every
        ``.CRLF`` instead made a message of lines ending in a dot cost a block each (5 MB of
        ``x.CRLF`` took 2.2 s of the event loop). What follows the end stays in the reader for the
        commands pipelined after it. A message over ``smtp.max_message_size``, or one that would
        take the edge over ``smtp.max_data_in_memory``, is read to its end all the same (the reply
        comes after the data, RFC 5321 4.2.5) but not kept. A line may be as long as the message.
        """
        assert self.header_meter is not None
        blocks: list[bytes] = []
        size = stored = 0  # the message's bytes as read, and as stored (each bare LF made CRLF)
        refusal, after_cr = "", False
        # DATA starts after a line end, so it may end at once (".CRLF"): the reader is given that
        # line end to find, and the first block gives it back.
        self._reader_buffer()[0:0] = b"\r\n"
        start = 2
        while True:
            try:
                block = await self._reader.readuntil(DATA_END)
            except asyncio.LimitOverrunError as exc:  # no end within the reader's limit: take what it holds
                block = await self._reader.read(exc.consumed)
            ended = block.endswith(DATA_END)
            block = block[start : -3 if ended else None]  # the ".CRLF" that ends DATA is not the message's
            start = 0
            grown = len(block) + bare_lfs(block, after_cr)
            after_cr = block.endswith(b"\r")
            size += len(block)
            stored += grown
            self.header_meter.feed(block)
            refusal = refusal or self._keep(blocks, block, stored, grown)
            if ended:
                break
        if refusal:
            return refusal
        content = b"".join(blocks)
        blocks.clear()  # now, not on return: the message is held twice at most while it is put together
        # RFC 5321 4.5.2: a line that starts with a dot lost one dot; lines end at CRLF only.
        content = (content[1:] if content.startswith(b".") else content).replace(b"\r\n.", b"\r\n")
        # So a bare LF or CR never ends DATA. A bare LF is then taken as the CRLF its sender meant, as
        # Postfix 3.9 does by default (smtpd_forbid_bare_newline = normal): every reader downstream splits
        # the message one way. Counted as the blocks came, so a message without one is not scanned again.
        return with_crlf_line_ends(content) if stored > size else content

    def _keep(self, blocks: list[bytes], block: bytes, stored: int, grown: int) -> str:
        """Keep *block*, which brought the message to *stored* bytes as stored (*grown* of them its own), in
        *blocks*; or the refusal, once the message may not be kept whole (nothing of it is kept then, and
        its share of memory is given back).

        ``smtp.max_message_size`` is the size as stored, which every limit behind the edge is sized by: a
        bare LF counted as the one byte it came as made a message of them twice that. Our Received: header
        is not counted: the limit is the one advertised in EHLO's SIZE, and a message within the size its
        sender declared is not refused for what we add to it.
        """
        budget = self.inbound_handler.data_budget
        if self.data_size_limit and stored > self.data_size_limit:
            refusal = "552 5.3.4 Message size exceeds fixed maximum message size"
        elif budget.take(self.counted_as, share := counted(stored, grown)):
            self.data_held += share
            blocks.append(block)
            return ""
        else:
            refusal = "452 4.3.1 Insufficient system storage, try again later"
            log.warning(
                "stage=receive client=%s DATA refused: %d bytes of DATA held already (%d by this client),"
                " smtp.max_data_in_memory allows %d (%d a client)",
                self.client,
                budget.held,
                budget.by_client[self.counted_as],
                budget.limit,
                budget.per_client,
            )
        blocks.clear()  # the rest is read and dropped
        self._give_back_data()
        return refusal

    def _give_back_data(self) -> None:
        """This session's share of the handler's data budget, given back: nothing of its DATA is held."""
        self.inbound_handler.data_budget.give_back(self.counted_as, self.data_held)
        self.data_held = 0

    def hand_over_data(self) -> Callable[[], None]:
        """This session's share of the data budget, handed over with its message; what gives it back.

        The spool writer holds the message from here until its write is answered, whatever becomes
        of this session: a client that leaves before its 250 ends the session at once, and giving
        the share back then let the writer's queue grow past ``smtp.max_data_in_memory``.
        """
        share = functools.partial(self.inbound_handler.data_budget.give_back, self.counted_as, self.data_held)
        self.data_held = 0
        return share

    def _reader_buffer(self) -> bytearray:
        # asyncio.StreamReader has no public way to put bytes back; its buffer is read on every call.
        buffer: bytearray = getattr(self._reader, "_buffer")  # noqa: B009 -- private attribute, on purpose
        return buffer

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException):
            # The client's doing, not a bug of ours: no TLS version in common, no TLS at all, gone
            # mid-handshake. aiosmtpd closes the connection instead of sending this reply.
            log.info("stage=receive closed client=%s: TLS handshake failed: %r", self.client, error.__cause__)
            return "454 4.7.0 TLS handshake failed"
        return await super().handle_exception(error)

    def connection_lost(self, error: Exception | None) -> None:
        # Once per connection, from asyncio, aiosmtpd (a failed handshake) or _cut, whichever comes first.
        if self.ended:
            return
        self.ended = True
        if self.counted_as:
            self.inbound_handler.limits.closed(self.counted_as)
        super().connection_lost(error)

    def _timeout_cb(self) -> None:
        # The idle timer runs on after any close of ours or aiosmtpd's (only connection_lost stops it):
        # a connection still there when it fires is one whose client reads nothing.
        if self.transport is not None and self.transport.is_closing():
            log.info("stage=receive cut client=%s: closed, but it read none of what was left to send", self.client)
            self._cut()
        else:
            # RFC 5321 4.5.3.2: say why before closing an idle connection.
            self._close_with("421 4.4.2 Timeout, closing connection")

    def _close_with(self, reply: str) -> None:
        """Send *reply* and close, from a coroutine or a timer alike (nothing else is sent after it);
        cut the connection if it has not gone within ``CLOSE_GRACE``."""
        if self._tls_protocol is not None and self.session is not None and self.session.ssl is None:
            # A STARTTLS handshake under way (aiosmtpd sets session.ssl once it is done): no reply
            # can be said in it, and closing it would never end the session.
            log.info("stage=receive cut client=%s mid-handshake, for %r", self.client, reply)
            self._cut()
            return
        if isinstance(self.transport, asyncio.WriteTransport):
            self.transport.write(reply.encode() + b"\r\n")
            self.transport.close()
            self._reset_timeout(CLOSE_GRACE)
        log.info("stage=receive closed client=%s reply=%r", self.client, reply)

    def _cut(self) -> None:
        """Close the connection at once, whatever it has not sent yet, and end the session."""
        # The socket's own transport: after STARTTLS, self.transport is the TLS layer's over it, which a
        # second close() detaches from it (and its abort() would then do nothing).
        transport = self._original_transport or self.transport
        if isinstance(transport, asyncio.WriteTransport):
            transport.abort()
        # asyncio never tells the protocol of a STARTTLS handshake under way that its connection is gone,
        # so that session would wait on for ever, counted: ended here, and asyncio's own call, when one
        # comes, finds it ended.
        self.connection_lost(None)

    async def _refused_argument(self, arg: str | None) -> bool:
        """Refuse an argument that would reach our Received: header or a log line broken or unwritable.

        A control character would break a line for some reader (CR, LF, NUL; VT, NEL, U+2028 for those
        that split lines on them) or drive a terminal (ESC). A byte that is not UTF-8 aiosmtpd keeps as a
        lone surrogate (surrogateescape), which the header, written in UTF-8 once the whole message is
        read, cannot encode: the sender would get a 451 for it only after sending its message, again and
        again.
        """
        if arg is None:
            return False
        if CONTROLS & set(arg):
            await self.push("501 5.5.2 Syntax error: control characters are not allowed in a command")
            return True
        if not arg.isascii() and not _is_utf8(arg):
            await self.push("501 5.5.2 Syntax error: a command must be UTF-8")
            return True
        return False

    async def smtp_HELO(self, hostname: str) -> None:
        if not await self._refused_argument(hostname):
            await self._answer_hello(super().smtp_HELO(hostname))

    async def smtp_EHLO(self, hostname: str) -> None:
        if not await self._refused_argument(hostname):
            await self._answer_hello(super().smtp_EHLO(hostname))

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:
        # aiosmtpd answers 220 inside TLS too, and starts a handshake within the one under way.
        if self._tls_protocol is not None:
            await self.push("503 5.5.1 Error: TLS already active")
            return
        await super().smtp_STARTTLS(arg)

    async def _answer_hello(self, answer: Awaitable[None]) -> None:
        # Replies to HELO and EHLO carry no enhanced code (RFC 2034): EHLO's lines are keywords.
        self.answering_hello = True
        try:
            await answer
        finally:
            self.answering_hello = False

    async def smtp_MAIL(self, arg: str | None) -> None:
        if await self._refused_argument(arg) or await self._refused_path(arg, "FROM:", sender=True):
            return
        if arg and _SIZE_PARAM.search(arg):
            await self.push("501 5.5.4 Syntax error: SIZE= takes a number of bytes")
            return
        await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str | None) -> None:
        if not await self._refused_argument(arg) and not await self._refused_path(arg, "TO:", sender=False):
            await super().smtp_RCPT(arg)

    async def _refused_path(self, arg: str | None, keyword: str, *, sender: bool) -> bool:
        """Refuse a path that is not a plain ``<local@domain>`` (see :mod:`inbound.addresses`).

        Only once aiosmtpd would take the command (session state, the keyword): its own replies
        for those come first, as before.
        """
        rest = self._strip_command_keyword(keyword, arg or "")
        session, envelope = self.session, self.envelope
        in_order = (
            session is not None
            and envelope is not None
            and session.host_name is not None
            and (envelope.mail_from is None if sender else envelope.mail_from is not None)
        )
        if rest is None or not in_order:
            return False
        try:
            parse_path(split_path(rest)[0], sender=sender)
        except AddressRefused as refused:
            await self.push(refused.reply)
            return True
        return False

    async def push(self, status: Any) -> None:
        text = status.decode() if isinstance(status, bytes) else str(status)
        text = next((new for old, new in _REWORDED.items() if text.startswith(old)), text)
        if not self.answering_hello:
            text = _with_enhanced_code(text)
        if not (text.isascii() and text.isprintable()):  # our own replies are; an echoed argument may not be
            text = text.encode("utf-8", "replace").decode().translate(_UNSAFE_IN_REPLY)
        metrics.SMTP_REPLIES.labels(text[:3]).inc()
        refusal = text[:1] in ("4", "5")
        if refusal:
            # Every refusal, once, with who was refused; as repr, so an echoed byte cannot break the line.
            peer = format_peer(client_peer(self.session) if self.session else None)
            log.info("stage=receive refused client=%s reply=%r", peer, text)
        # Counted, the 20th extra recipient of a message ended its session before DATA: nothing taken.
        counted = refusal and not text.startswith(TOO_MANY_RECIPIENTS)
        if counted:
            self.errors += 1
        await super().push(text)
        if counted and self.errors == self.settings.max_errors and self.transport is not None:
            # Probing (harvesting addresses, fuzzing commands) gets a budget, not a free session.
            self._close_with("421 4.7.0 Too many errors, closing connection")

    async def _handle_client(self) -> None:
        if self.inbound_handler.draining:
            self._close_with("421 4.3.2 Service shutting down, try again later")
            return
        if self.settings.proxy_protocol and not await self._read_proxy_header():
            return
        assert self.session is not None
        self.client = peer_ip(client_peer(self.session))  # counted once: STARTTLS keeps the connection
        self.counted_as = counted_as(self.client)
        metrics.SMTP_CONNECTIONS.inc()
        refusal = self.inbound_handler.limits.opened(self.counted_as)
        if refusal is not None:
            self._close_with(refusal)
            return
        await super()._handle_client()

    async def _read_proxy_header(self) -> bool:
        """Behind a load balancer: the PROXY header (v1 or v2) names the real client; without one, close."""
        assert self.session is not None
        self._reset_timeout(PROXY_TIMEOUT)
        proxy = await get_proxy(self._reader)
        # A header with no source address (v2 LOCAL, v1 UNKNOWN) is the load balancer's own health check:
        # served, as the PROXY protocol asks, with the connection's own addresses (client_peer).
        if not proxy:
            log.info("stage=receive closed client=%s: no valid PROXY header", format_peer(self.session.peer))
            if self.transport is not None:
                self.transport.close()
            return False
        self.session.proxy_data = proxy
        self._reset_timeout()
        return True


def bare_lfs(block: bytes, after_cr: bool) -> int:
    """How many LFs of *block* end no CRLF (*after_cr*: the block before ended with a CR)."""
    return block.count(b"\n") - block.count(b"\r\n") - (after_cr and block.startswith(b"\n"))


def _is_utf8(text: str) -> bool:
    """Whether *text* came from valid UTF-8: it holds none of the surrogates surrogateescape makes of other bytes."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def client_peer(session: Session) -> Any:
    """The client's (address, port): from the PROXY header behind a load balancer, else the socket's."""
    proxy = session.proxy_data
    if proxy is not None and proxy.src_addr is not None:
        return (str(proxy.src_addr), proxy.src_port)
    return session.peer


def peer_ip(peer: Any) -> str:
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)


def format_peer(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)

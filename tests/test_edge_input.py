"""What a hostile client types never reaches our output: control characters, endless command lines.

A real ``InboundSMTP`` on a loopback port (aiosmtpd's ``Controller`` runs it on
a thread, as aiosmtpd's own tests do) with a real spool; raw sockets, so the
bytes sent are exactly the bytes meant.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import socket
import struct
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiosmtpd.smtp import SMTP

from inbound.config import SmtpSettings, load_settings
from inbound.edge import limits, smtp
from inbound.edge.handler import InboundHandler
from inbound.edge.headersize import HeaderMeter, with_crlf_line_ends
from inbound.edge.limits import DataBudget
from inbound.edge.smtp import DATA_BLOCK, InboundSMTP
from inbound.edge.spool import Spool
from inbound.envelope import Envelope
from inbound.errors import ConfigError

from .edge_harness import Client, EdgeServers, Server
from .harness import stream_toml, wait_for


@pytest.mark.parametrize(
    "command",
    [
        b"EHLO evil.example\rX-Injected: above our trace header",
        b"HELO evil\x00.example",
        b"MAIL FROM:<a\rb@sender.test>",
        b'RCPT TO:<"x\rReceived: forged"@in.test>',
        b"RCPT TO:<x@in.test>\x00",
        # What other readers take for a line end, or a terminal for a command: VT, ESC, NEL, U+2028.
        b"EHLO evil\x0bX-Injected: yes",
        b"EHLO evil\x1b[2Jx",
        "EHLO evil\x85X-Injected: yes".encode(),
        'RCPT TO:<"a\u2028X-Forged: 1"@in.test>'.encode(),
    ],
)
def test_control_characters_in_a_command_are_refused(
    client: Client, command: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    if command.startswith(b"RCPT"):
        assert client.say(b"EHLO client.test\r\n").startswith(b"250")
        assert client.say(b"MAIL FROM:<a@sender.test>\r\n").startswith(b"250")
    with caplog.at_level(logging.INFO, logger="inbound.edge.smtp"):
        assert client.say(command + b"\r\n").startswith(b"501 5.5.2")
    assert client.say(b"NOOP\r\n").startswith(b"250")  # the session goes on
    (refusal,) = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refusal.startswith("stage=receive refused client=127.0.0.1:")
    assert refusal.endswith("reply='501 5.5.2 Syntax error: control characters are not allowed in a command'")


@pytest.mark.parametrize(
    "command",
    [
        b"EHLO h\xe9te.example",
        b"HELO h\xe9te.example",
        b"MAIL FROM:<j\xfcrgen@sender.test>",
        b"RCPT TO:<j\xfcrgen@in.test>",
    ],
    ids=["ehlo", "helo", "mail", "rcpt"],
)
def test_a_byte_that_is_not_utf8_in_a_command_is_refused(
    client: Client, command: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """Latin-1 here. aiosmtpd keeps such a byte as a surrogate, which no UTF-8 output takes: in a HELO name
    or a recipient, writing our Received: header failed after DATA (451 4.3.0 and a traceback, every try)."""
    if command.startswith(b"RCPT"):
        assert client.say(b"EHLO client.test\r\n").startswith(b"250")
        assert client.say(b"MAIL FROM:<a@sender.test>\r\n").startswith(b"250")
    with caplog.at_level(logging.INFO):
        assert client.say(command + b"\r\n") == b"501 5.5.2 Syntax error: a command must be UTF-8\r\n"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert client.say(b"EHLO h\xc3\xa9te.example\r\n").startswith(b"250")  # the same name in UTF-8 is fine


def test_a_message_whose_data_hook_raised_is_not_kept_by_its_session(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its share of the data budget is given back at once, so its bytes must go too: an idle session
    held the whole message where no cap could see it."""
    protocols: list[SMTP] = []

    async def broken(handler: InboundHandler, protocol: SMTP, *args: object) -> str:
        protocols.append(protocol)
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(InboundHandler, "handle_DATA", broken)
    client = Client(server[0])
    assert _send_data(client, b"Subject: x\r\n\r\n" + lines(100)).startswith(b"451 4.3.0")
    (protocol,) = protocols
    assert protocol.envelope is not None
    assert (protocol.envelope.content, protocol.envelope.original_content) == (None, None)
    assert client.say(b"NOOP\r\n").startswith(b"250")
    client.close()


ENHANCED = rb"\d{3} [245]\.\d{1,3}\.\d{1,3} "


@pytest.mark.parametrize(
    "command",
    [b"FOO bar", b"EXPN staff", b"VRFY someone", b"HELP", b"MAIL FROM:", b"RCPT TO:<x@in.test>", b"DATA", b"QUIT"],
)
def test_every_reply_but_the_greeting_and_hellos_carries_an_enhanced_code(client: Client, command: bytes) -> None:
    """RFC 2034: ENHANCEDSTATUSCODES is advertised, so aiosmtpd's own replies get one too."""
    assert client.greeting.startswith(b"220 ")
    assert not re.match(ENHANCED, client.greeting)
    hello = client.say(b"EHLO client.test\r\n").splitlines()
    assert b"250-ENHANCEDSTATUSCODES" in hello  # EHLO's lines are keywords: no code in them
    assert all(not re.match(ENHANCED, line + b" ") for line in hello)
    reply = client.say(command + b"\r\n")
    assert re.match(ENHANCED, reply), reply


@pytest.mark.parametrize(
    ("argument", "echoed"),
    [(b"(\xd9\xff\rb", b"(???b"), (b"a\rHELP\t@", b"a?HELP\t@")],  # the second made the stdlib's parser raise
)
def test_an_echoed_argument_cannot_break_a_reply_or_raise(
    client: Client, caplog: pytest.LogCaptureFixture, argument: bytes, echoed: bytes
) -> None:
    """aiosmtpd echoes VRFY's argument: undecodable bytes made it raise (a traceback, and the
    exception's text sent back), and a bare CR went back as it came."""
    assert client.say(b"EHLO client.test\r\n").startswith(b"250")
    with caplog.at_level(logging.INFO):
        reply = client.say(b"VRFY " + argument + b"\r\n")
    assert reply == b"502 5.5.1 Could not VRFY " + echoed + b"\r\n"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert client.say(b"NOOP\r\n").startswith(b"250")


HOSTILE_COMMANDS = [
    b"EHLO x", b"HELO y", b"MAIL FROM:<a@sender.test>", b"MAIL FROM:<>", b"RCPT TO:<u@in.test>",
    b"RCPT TO:<x@elsewhere.test>", b"DATA", b"RSET", b"NOOP", b"VRFY a", b"EXPN b", b"HELP", b"STARTTLS",
    b"AUTH PLAIN AGF1AHA=", b"BDAT 10", b"MAIL FROM:<a@b> SIZE=99999999999999999999", b"RCPT TO:", b"\x00\x01",
]  # fmt: skip
REPLY_LINE = re.compile(rb"\d{3}[ -][\x20-\x7e\t]*\r\n")


def test_random_hostile_sessions_get_one_line_replies_with_codes_and_raise_nothing(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """What four runs of 1,500 random sessions against a running edge checked, kept small: 60 seeded sessions."""
    rnd = random.Random(1)
    with caplog.at_level(logging.INFO):
        for _ in range(60):
            client = Client(server[0])
            try:
                for _ in range(rnd.randint(1, 12)):
                    command = rnd.choice(HOSTILE_COMMANDS)
                    junk = bytes(rnd.choice([*range(1, 10), *range(11, 256)]) for _ in range(rnd.randint(0, 30)))
                    reply = client.say(command + (junk if rnd.random() < 0.4 else b"") + b"\r\n")
                    if reply.startswith(b"354"):
                        reply = client.say(b"Subject: fuzz\r\n\r\n" + junk.replace(b"\r", b"") + b"\r\n.\r\n")
                    lines = reply.splitlines(keepends=True)
                    assert lines, f"no reply to {command!r}"
                    assert all(REPLY_LINE.fullmatch(line) for line in lines), reply
                    if not command.startswith((b"EHLO", b"HELO")) and reply[:1] in b"245":
                        assert re.match(ENHANCED, reply), reply
                    if reply.startswith((b"221", b"421")):
                        break
            finally:
                client.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    client = Client(server[0])
    try:
        assert client.say(b"EHLO client.test\r\n").startswith(b"250")
    finally:
        client.close()


def test_a_command_that_raises_is_a_temporary_failure_that_tells_the_client_nothing(
    server: Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug of ours: aiosmtpd sent the exception's text back as a permanent 500."""

    async def broken(*args: object) -> str:
        raise RuntimeError("internal detail")

    monkeypatch.setattr(InboundHandler, "handle_MAIL", broken)
    client = Client(server[0])
    try:
        assert client.say(b"EHLO client.test\r\n").startswith(b"250")
        with caplog.at_level(logging.INFO):
            assert client.say(b"MAIL FROM:<a@sender.test>\r\n") == b"451 4.3.0 Local error in processing\r\n"
        assert client.say(b"NOOP\r\n").startswith(b"250")
    finally:
        client.close()
    (failure,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert failure.getMessage() == "stage=receive a command failed"
    assert failure.exc_info is not None
    assert "internal detail" in str(failure.exc_info[1])


def test_an_endless_command_line_is_refused_and_not_kept(client: Client) -> None:
    assert client.say(b"EHLO " + b"x" * 1_000_000 + b"\r\n").startswith(b"500 5.5.2 Command line too long")
    assert client.say(b"NOOP\r\n").startswith(b"250")


def test_a_command_line_may_be_as_long_as_the_cap_whoever_else_connects(server: Server) -> None:
    """aiosmtpd cut lines at its own 512 bytes, below smtp.max_command_line, and kept MAIL's allowance in
    one dict for every session, which each new connection reset and each EHLO raised."""
    cap = server[0].max_command_line

    def mail(size: int) -> bytes:  # a MAIL line of *size* bytes, its CRLF counted as RFC 5321 counts it
        return b"MAIL FROM:<" + b"a" * (size - 26) + b"@sender.test>\r\n"

    first = Client(server[0])
    assert first.say(b"EHLO client.test\r\n").startswith(b"250")
    second = Client(server[0])
    assert second.say(b"EHLO client.test\r\n").startswith(b"250")
    assert first.say(mail(cap)).startswith(b"250 2.1.0")
    assert first.say(b"RSET\r\n").startswith(b"250")
    assert first.say(b"NOOP " + b"x" * (cap - 7) + b"\r\n").startswith(b"250")
    assert first.say(mail(cap + 2)).startswith(b"500 5.5.2 Command line too long")
    for client in (first, second):
        client.close()


def test_data_lines_may_still_be_long_and_the_trace_header_is_clean(
    server: tuple[SmtpSettings, Spool], client: Client
) -> None:
    long_line = b"y" * 200_000
    client.begin_data()
    reply = client.say(b"Subject: long\r\n\r\n" + long_line + b"\r\n.\r\n")
    assert reply.startswith(b"250 2.0.0 Ok: queued as"), reply
    (entry,) = list(server[1].entries())
    head = entry.message.split(b"\r\n\r\n", 1)[0]
    received = head.split(b"\r\nSubject:")[0]
    assert b"\r" not in received.replace(b"\r\n", b"")
    assert b"\x00" not in received
    assert long_line in entry.message


def test_the_limit_is_configurable(tmp_path: Path) -> None:
    config = tmp_path / "inbound.toml"
    config.write_text("[smtp]\nmax_command_line = 100\n")
    with pytest.raises(ConfigError, match=r"smtp\.max_command_line: must be between 1024 and 65536 bytes"):
        load_settings(config)


RELAY = b"550 5.7.1"
MALFORMED = b"501 5.1.3"


@pytest.mark.parametrize(
    ("path", "reply"),
    [
        ("<@relay.test,@in.test:user@in.test>", RELAY),  # source route
        ("<user%elsewhere.test@in.test>", RELAY),  # the percent hack
        ("<elsewhere.test!user@in.test>", RELAY),  # a bang path
        ('<"user@elsewhere.test"@in.test>', RELAY),  # a quoted local part holding @
        ('<"user%elsewhere.test"@in.test>', RELAY),
        ("<user@[127.0.0.1]>", RELAY),  # an address literal
        ("<>", MALFORMED),
        ("<user>", MALFORMED),
        ("<a..b@in.test>", MALFORMED),
        ("<user@in..test>", MALFORMED),
        ("user@in.test", MALFORMED),  # no angle brackets
        ("<user@\u212ailo.example.test>", MALFORMED),  # KELVIN SIGN: looks like kilo, is not
        ("<x@ex\u0430mple.test>", b"550 5.7.1 Relaying denied: we do not"),  # Cyrillic a: another domain
    ],
)
def test_recipients_are_parsed_strictly_on_wildcard_domains_too(client: Client, path: str, reply: bytes) -> None:
    assert client.say(b"EHLO client.test\r\n").startswith(b"250")
    assert client.say(b"MAIL FROM:<a@sender.test> SMTPUTF8\r\n").startswith(b"250")
    assert client.say(f"RCPT TO:{path}\r\n".encode()).startswith(reply)
    assert client.say(b"RCPT TO:<user@in.test>\r\n").startswith(b"250")  # the session goes on


@pytest.mark.parametrize(
    "path", ["<sales@\u00cfN.example.test>", "<sales@xn--n-mga.example.test>", "<a@KILO.example.test>"]
)
def test_domains_are_compared_in_their_a_label_form(
    server: tuple[SmtpSettings, Spool], client: Client, path: str
) -> None:
    assert client.say(b"EHLO client.test\r\n").startswith(b"250")
    assert client.say(b"MAIL FROM:<a@sender.test> SMTPUTF8\r\n").startswith(b"250")
    assert client.say(f"RCPT TO:{path}\r\n".encode()).startswith(b"250")
    assert client.say(b"DATA\r\n").startswith(b"354")
    assert client.say(b"Subject: idn\r\n\r\nhi\r\n.\r\n").startswith(b"250")
    (entry,) = list(server[1].entries())
    assert [r.stream for r in entry.envelope.recipients] == ["sales"]


@pytest.mark.parametrize(
    ("path", "reply"),
    [("<a\u0000b@sender.test>", b"501 5.5.2"), ("<@x.test:a@sender.test>", RELAY), ("<a@>", b"501 5.1.7")],
)
def test_senders_are_parsed_strictly(client: Client, path: str, reply: bytes) -> None:
    assert client.say(b"EHLO client.test\r\n").startswith(b"250")
    assert client.say(f"MAIL FROM:{path}\r\n".encode()).startswith(reply)
    assert client.say(b"MAIL FROM:<>\r\n").startswith(b"250")  # the null sender of bounces is fine


def test_a_bounce_from_the_null_sender_is_spooled_and_a_second_mail_after_it_is_nested(
    server: Server, client: Client
) -> None:
    """aiosmtpd takes an empty sender for "no MAIL yet": every RCPT of a bounce got 503, and a second
    MAIL went past the strict parse of a first one."""
    assert client.say(b"EHLO client.test\r\n").startswith(b"250")
    assert client.say(b"MAIL FROM:<>\r\n").startswith(b"250 2.1.0")
    assert client.say(b'MAIL FROM:<"odd sender"@[192.0.2.1]>\r\n').startswith(b"503 5.5.1 Error: nested MAIL")
    assert client.say(b"RCPT TO:<x@in.test>\r\n").startswith(b"250 2.1.5")
    assert client.say(b"DATA\r\n").startswith(b"354")
    assert client.say(b"Subject: bounce\r\n\r\nundeliverable\r\n.\r\n").startswith(b"250 2.0.0")
    (entry,) = list(server[1].entries())
    assert entry.envelope.mail_from == ""


SMUGGLED = b"MAIL FROM:<evil@attacker.test>\r\nRCPT TO:<victim@in.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nx\r\n"


@pytest.mark.parametrize(
    "fake_end", [b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\r", b"\r\n\x00.\r\n", b"\r\n.\n"], ids=repr
)
def test_one_data_is_one_message_whatever_it_smuggles(
    server: tuple[SmtpSettings, Spool], client: Client, fake_end: bytes
) -> None:
    client.begin_data()
    reply = client.say(b"Subject: real\r\n\r\nbody" + fake_end + SMUGGLED + b".\r\n")
    assert reply.startswith(b"250 2.0.0 Ok: queued as")
    assert client.say(b"NOOP\r\n").startswith(b"250")  # the next reply is NOOP's: DATA had exactly one
    (entry,) = list(server[1].entries())  # one message, the "commands" only text inside it
    assert entry.envelope.mail_from == "a@sender.test"
    assert [r.address for r in entry.envelope.recipients] == ["x@in.test"]
    assert SMUGGLED in entry.message


def test_a_bare_lf_is_read_as_the_crlf_its_sender_meant(server: tuple[SmtpSettings, Spool], client: Client) -> None:
    client.begin_data()
    assert client.say(b"Subject: unix\nX-Lines: lf\n\nline one\nline two\r\n.\r\n").startswith(b"250")
    (entry,) = list(server[1].entries())
    assert entry.message.endswith(b"Subject: unix\r\nX-Lines: lf\r\n\r\nline one\r\nline two\r\n")


def _send_data(client: Client, content: bytes) -> bytes:
    client.begin_data()
    return client.say(content + b".\r\n")


@pytest.mark.parametrize("line_end", [b"\r\n", b"\n"], ids=["crlf", "bare-lf"])
def test_a_header_section_over_the_cap_is_refused_and_the_session_goes_on(
    make_server: Callable[..., Server], line_end: bytes
) -> None:
    settings, spool = make_server(max_header_size=4096)
    client = Client(settings)
    field = b"X-Filler: " + b"f" * 90 + line_end  # 102 bytes as stored, either way
    # DATA ends only at CRLF.CRLF, so each message's last line ends in CRLF.
    fits = field * 40 + line_end + field * 100 + b"end\r\n"  # 4 KB of header; the body may be larger
    assert _send_data(client, fits).startswith(b"250 2.0.0 Ok: queued as")
    too_big = field * 41 + line_end + b"body\r\n"
    assert _send_data(client, too_big).startswith(b"552 5.3.4 Message header size exceeds")
    without_body = field * 41 + b"end\r\n"  # no empty line: the whole message is header
    assert _send_data(client, without_body).startswith(b"552 5.3.4")
    assert client.say(b"NOOP\r\n").startswith(b"250")
    (stored,) = list(spool.entries())
    assert stored.message.endswith(with_crlf_line_ends(fits))
    client.close()


def test_every_bare_lf_and_only_a_bare_lf_becomes_crlf() -> None:
    """Against the definition (an LF not after CR), over random mixes of the bytes that matter."""
    bare_lf = re.compile(rb"(?<!\r)\n")
    rng = random.Random(7)
    for _ in range(20_000):
        data = bytes(rng.choice(b"\r\nx.") for _ in range(rng.randrange(30)))
        assert with_crlf_line_ends(data) == bare_lf.sub(b"\r\n", data), data
        cut = rng.randrange(len(data) + 1)  # and counted in two blocks, cut anywhere, as DATA is read
        first, second = data[:cut], data[cut:]
        counted = smtp.bare_lfs(first, False) + smtp.bare_lfs(second, first.endswith(b"\r"))
        assert counted == len(bare_lf.findall(data)), (first, second)


@pytest.mark.parametrize("line_end", [b"\r\n", b"\n"], ids=["crlf", "bare-lf"])
def test_the_header_meter_finds_the_header_end_wherever_the_blocks_split_it(line_end: bytes) -> None:
    message = b"Subject: x" + line_end + b"X-A: y" + line_end + line_end + b"body" + line_end * 3
    header = len(with_crlf_line_ends(message).partition(b"\r\n\r\n")[0]) + 2
    for split in range(len(message) + 1):
        meter = HeaderMeter(limit=header)
        meter.feed(message[:split])
        meter.feed(message[split:])
        assert (meter.size, meter.exceeded) == (header, False), split


DOTS = b"Subject: dots\r\n\r\n.leading dot\r\n..two\r\nends with a dot.\r\n.\r\nx.\r\n \r\n.\r\n"


@pytest.mark.parametrize("packet", [1, 2, 3, 5, 4096])
def test_data_is_the_same_message_however_the_packets_split_it(
    server: tuple[SmtpSettings, Spool], client: Client, packet: int
) -> None:
    """Dot-stuffed lines, lines ending in a dot and the final CRLF.CRLF, cut at every size."""
    stuffed = DOTS.replace(b"\r\n.", b"\r\n..") + b".\r\n"
    client.begin_data()
    client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for start in range(0, len(stuffed), packet):
        client.sock.sendall(stuffed[start : start + packet])
    assert client.reply().startswith(b"250 2.0.0")
    (entry,) = list(server[1].entries())
    assert entry.message.endswith(b"\r\n" + DOTS)


def test_an_empty_message_and_one_over_the_size_limit(make_server: Callable[..., Server]) -> None:
    settings, spool = make_server(max_message_size=10_000)
    client = Client(settings)
    assert _send_data(client, b"").startswith(b"250 2.0.0")  # DATA ended by its first line
    assert _send_data(client, b"x" * 20_000 + b"\r\n").startswith(b"552 5.3.4")
    assert _send_data(client, b"y" * 9_000 + b"\r\n").startswith(b"250 2.0.0")  # the session goes on
    empty, full = (entry.message for entry in spool.entries())
    assert empty.startswith(b"Received: ")
    assert empty.count(b"\r\n") == empty.count(b"\r\n\t") + 1  # our trace header alone
    assert full.endswith(b"\r\n" + b"y" * 9_000 + b"\r\n")
    client.close()


def test_the_size_limit_is_on_the_message_as_stored(make_server: Callable[..., Server]) -> None:
    """Each bare LF is stored as CRLF: a message of max_message_size bytes of them was answered 250 and
    stored twice as large, past the limits behind the edge that max_message_size sizes."""
    settings, spool = make_server(max_message_size=10_000)
    client = Client(settings)
    assert _send_data(client, b"\n" * 5_000 + b"\r\n").startswith(b"552 5.3.4")  # 5,002 bytes sent, 10,002 stored
    assert _send_data(client, b"\n" * 4_999 + b"\r\n").startswith(b"250 2.0.0")  # 10,000 stored: the limit
    (entry,) = spool.entries()
    assert entry.message.endswith(b"\r\n" * 5_000)
    assert entry.message.count(b"\r\n") == entry.message.count(b"\r\n\t") + 1 + 5_000  # our header, then those
    client.close()


def lines(count: int) -> bytes:
    """DATA of this many 1,000-byte lines."""
    return (b"x" * 998 + b"\r\n") * count


SUBJECT = b"Subject: x\r\n\r\n"
UNCOUNTED = 100_000  # what the tests below make the uncounted start of a message
BLOCK = 4096  # and the edge's DATA block: what it has read but not yet counted stays small
UNREAD = 2 * BLOCK + len(b"\r\n.\r\n")  # the most of a message sent that its edge may not have counted


@pytest.fixture
def data_server(make_server: EdgeServers, monkeypatch: pytest.MonkeyPatch) -> tuple[SmtpSettings, Spool, DataBudget]:
    """An edge holding at most 1,000,000 bytes of DATA beyond each message's first 100,000, 900,000 an address."""
    monkeypatch.setattr(limits, "UNCOUNTED", UNCOUNTED)
    monkeypatch.setattr(smtp, "DATA_BLOCK", BLOCK)
    settings, spool = make_server(max_message_size=900_000, max_data_in_memory=1_000_000)
    budget = make_server.handlers[-1].data_budget
    assert budget.per_client == 900_000  # half the cap is less than one message of the largest size
    return settings, spool, budget


def _hold(client: Client, budget: DataBudget, count: int) -> None:
    """Start a message of *count* lines on *client* without ending it; return once the edge counted it."""
    before = budget.held
    client.sock.sendall(SUBJECT + lines(count))
    share = len(SUBJECT) + 1000 * count - UNCOUNTED
    wait_for(lambda: budget.held >= before + share - UNREAD, timeout=10, what="the message's bytes to be counted")


def test_data_held_across_sessions_is_capped_and_beyond_it_is_a_temporary_refusal(
    data_server: tuple[SmtpSettings, Spool, DataBudget],
) -> None:
    settings, spool, budget = data_server
    first, second = Client(settings, source="127.0.0.2"), Client(settings, source="127.0.0.3")
    first.begin_data()
    _hold(first, budget, 600)  # about 500,000 held
    refused = _send_data(second, b"Subject: second\r\n\r\n" + lines(700))  # and 600,000 more
    assert refused.startswith(b"452 4.3.1 Insufficient system storage")
    assert first.say(b".\r\n").startswith(b"250 2.0.0")
    assert budget.held == 0  # given back before the reply went out
    assert _send_data(second, b"Subject: again\r\n\r\n" + lines(700)).startswith(b"250 2.0.0")  # it goes on
    assert budget.held == 0
    subjects = [re.findall(rb"Subject: (\w+)", e.message) for e in spool.entries()]
    assert sorted(subjects) == [[b"again"], [b"x"]]
    assert sorted(e.message.count(lines(1)) for e in spool.entries()) == [600, 700]
    first.close()
    second.close()


def test_one_address_holds_at_most_its_share_and_mail_of_ordinary_size_passes_a_full_cap(
    data_server: tuple[SmtpSettings, Spool, DataBudget],
) -> None:
    settings, _, budget = data_server
    large, large_again = Client(settings, source="127.0.0.2"), Client(settings, source="127.0.0.2")
    other, small = Client(settings, source="127.0.0.3"), Client(settings, source="127.0.0.4")
    large.begin_data()
    _hold(large, budget, 880)  # about 780,000 of its address's 900,000
    assert _send_data(large_again, SUBJECT + lines(300)).startswith(b"452 4.3.1")  # 200,000 more: over its share
    other.begin_data()
    _hold(other, budget, 230)  # another address: about 910,000 held, 90,000 left
    assert _send_data(small, SUBJECT + lines(95)).startswith(b"250 2.0.0")  # counted from 100,000 on: nothing
    assert _send_data(small, SUBJECT + lines(300)).startswith(b"452 4.3.1")  # 200,000 would go over
    assert large.say(b".\r\n").startswith(b"250 2.0.0")
    assert other.say(b".\r\n").startswith(b"250 2.0.0")
    assert (budget.held, dict(budget.by_client)) == (0, {})
    for client in (large, large_again, other, small):
        client.close()


def test_lines_ending_in_a_dot_are_read_in_blocks_not_one_at_a_time(
    server: Server, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every ".CRLF" was a block of its own: 5 MB of "x.CRLF" took 2.2 s of the event loop."""
    blocks = []

    class CountingMeter(HeaderMeter):
        def feed(self, block: bytes) -> None:
            blocks.append(len(block))
            super().feed(block)

    monkeypatch.setattr(smtp, "HeaderMeter", CountingMeter)
    content = b"Subject: dots\r\n\r\n" + b"x.\r\n" * 250_000
    assert _send_data(client, content).startswith(b"250 2.0.0")
    assert sum(blocks) == len(content)
    assert len(blocks) < 20  # a megabyte in blocks of 256 KiB, not 250,000 of 4 bytes
    (entry,) = server[1].entries()
    assert entry.message.endswith(content)


def test_data_is_counted_as_it_arrives_and_a_session_cut_off_gives_its_share_back(
    make_server: EdgeServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message that never ends, with no line ending in a dot: it holds memory all the same."""
    monkeypatch.setattr(limits, "UNCOUNTED", 0)
    settings, _ = make_server(max_message_size=2_000_000, max_data_in_memory=4_000_000)
    budget = make_server.handlers[-1].data_budget
    undotted = (b"x" * 998 + b"\r\n") * 1200
    client = Client(settings)
    client.begin_data()
    client.sock.sendall(undotted)
    # What the edge's reader buffers before it stops reading the socket: twice its limit at most.
    counted = len(undotted) - 2 * DATA_BLOCK
    wait_for(lambda: budget.held >= counted, timeout=10, what="the message's bytes to be counted")
    client.close()
    wait_for(lambda: budget.held == 0, timeout=10, what="the cut-off session's bytes to be given back")


@pytest.mark.parametrize("line_end", [b"\r\n", b"\n"], ids=["crlf", "bare-lf"])
def test_a_message_waiting_for_the_spool_is_held_once_and_counted_as_stored(
    make_server: EdgeServers, monkeypatch: pytest.MonkeyPatch, line_end: bytes
) -> None:
    """The envelope's copy, a second one with bare LFs made CRLF and the message to spool were all held
    while the spool wrote, the budget counting the bytes as read: with smtp.max_data_in_memory 32 MiB,
    six sessions held 105 MiB (bare LFs) and 72 MiB (CRLF)."""
    monkeypatch.setattr(limits, "UNCOUNTED", 0)
    settings, _ = make_server(max_message_size=8_000_000, max_data_in_memory=8_000_000)
    handler, loop = make_server.handlers[-1], make_server.controllers[-1].loop
    waiting, written = [], asyncio.Event()
    spool = handler.spool_writer.put

    async def slow_spool(envelope: Envelope, message: bytes, answered: Callable[[], None]) -> None:
        waiting.append(message)
        await written.wait()
        await spool(envelope, message, answered)

    monkeypatch.setattr(handler.spool_writer, "put", slow_spool)
    content = b"Subject: held\r\n\r\n" + (b"x" * 98 + line_end) * 40_000
    stored, data = with_crlf_line_ends(content), content + b"\r\n.\r\n"
    client = Client(settings)
    client.begin_data()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        client.sock.sendall(data)
        (message,) = wait_for(lambda: waiting, timeout=10, what="the message to wait for the spool")
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    stored += b"\r\n"  # the line end before the dot that ends DATA
    assert message.endswith(b"\r\n" + stored)
    assert handler.data_budget.held == len(stored)
    assert len(stored) < held < 1.5 * len(stored)  # the message to spool, and no other copy of it
    loop.call_soon_threadsafe(written.set)
    assert client.reply().startswith(b"250 2.0.0")
    assert handler.data_budget.held == 0
    client.close()


def test_the_data_held_in_memory_is_four_messages_by_default_and_never_less_than_one(tmp_path: Path) -> None:
    config = tmp_path / "inbound.toml"
    stream = stream_toml("support", ["*@in.test"], "https://hooks.example.test/")
    config.write_text("[smtp]\nmax_message_size = 10000000\n" + stream)
    assert load_settings(config).smtp.max_data_in_memory == 40_000_000
    config.write_text("[smtp]\nmax_message_size = 10000000\nmax_data_in_memory = 9999999\n" + stream)
    with pytest.raises(ConfigError, match=r"smtp\.max_data_in_memory: must be at least smtp\.max_message_size"):
        load_settings(config)


def test_the_header_cap_is_configured_in_smtp(tmp_path: Path) -> None:
    config = tmp_path / "inbound.toml"
    config.write_text("[smtp]\nmax_header_size = 100\n")
    with pytest.raises(ConfigError, match=r"smtp\.max_header_size: must be at least 1024 bytes"):
        load_settings(config)


def test_commands_pipelined_after_data_wait_for_its_end(server: tuple[SmtpSettings, Spool], client: Client) -> None:
    """RFC 2920: everything after DATA up to CRLF.CRLF is the message, however it was batched."""
    assert client.say(b"EHLO client.test\r\n").startswith(b"250")
    client.sock.sendall(b"MAIL FROM:<a@sender.test>\r\nRCPT TO:<x@in.test>\r\nDATA\r\n")
    assert [client.reply()[:3] for _ in range(3)] == [b"250", b"250", b"354"]
    client.sock.sendall(b"Subject: one\r\n\r\nhi\r\n.\r\nMAIL FROM:<b@sender.test>\r\nRCPT TO:<y@in.test>\r\n")
    assert [client.reply()[:3] for _ in range(3)] == [b"250", b"250", b"250"]
    assert client.say(b"RSET\r\n").startswith(b"250")
    assert [e.envelope.mail_from for e in server[1].entries()] == ["a@sender.test"]


def test_idle_connections_from_one_address_leave_room_for_everyone_else(make_server: Callable[..., Server]) -> None:
    settings, _ = make_server()
    idle = [Client(settings, source="127.0.0.2") for _ in range(200)]
    try:
        greetings = [c.greeting[:9] for c in idle]
        assert greetings.count(b"220 mx.te") == settings.max_connections_per_ip == 20
        assert greetings.count(b"421 4.7.0") == 180
        legit = Client(settings, source="127.0.0.3", timeout=5)  # a deadline: fails if not served in time
        assert legit.greeting.startswith(b"220")
        legit.begin_data()
        assert legit.say(b"Subject: hi\r\n\r\nhi\r\n.\r\n").startswith(b"250 2.0.0 Ok: queued as")
        legit.close()
    finally:
        for client in idle:
            client.close()


def test_the_total_is_capped_and_a_closed_connection_frees_its_place(make_server: Callable[..., Server]) -> None:
    settings, _ = make_server(max_connections=3)
    first = [Client(settings, source=f"127.0.0.{n}") for n in (4, 5, 6)]
    over = Client(settings, source="127.0.0.7")
    assert over.greeting.startswith(b"421 4.7.0 Too many connections")
    assert over.file.readline() == b""  # closed
    over.close()
    first[0].close()
    assert first[1].say(b"NOOP\r\n").startswith(b"250")  # the server has seen the close by now
    again = Client(settings, source="127.0.0.7")
    assert again.greeting.startswith(b"220")
    for connection in [*first[1:], again]:
        connection.close()


def test_an_error_budget_ends_a_probing_session(make_server: Callable[..., Server]) -> None:
    settings, _ = make_server(max_errors=3)
    client = Client(settings)
    assert client.say(b"EHLO client.test\r\n").startswith(b"250")
    assert client.say(b"MAIL FROM:<a@sender.test>\r\n").startswith(b"250")
    assert client.say(b"RCPT TO:<nobody@elsewhere.test>\r\n").startswith(b"550 5.7.1")
    assert client.say(b"RCPT TO:<bad path>\r\n").startswith(b"501")
    assert client.say(b"XYZZY\r\n").startswith(b"500")
    assert client.reply().startswith(b"421 4.7.0 Too many errors")
    assert client.file.readline() == b""
    client.close()


def test_recipients_over_the_cap_are_told_to_wait_and_the_message_goes_to_the_others(
    make_server: Callable[..., Server],
) -> None:
    """RFC 5321 4.5.3.1.10: its sender sends to the rest later. Each 452 was counted as an error: the
    20th of a 130-recipient message ended the session before its DATA, and nothing was taken."""
    settings, spool = make_server(max_recipients=5, max_errors=3)
    client = Client(settings)
    assert client.say(b"EHLO client.test\r\n").startswith(b"250")
    recipients = b"".join(b"RCPT TO:<user%d@in.test>\r\n" % n for n in range(12))
    client.sock.sendall(b"MAIL FROM:<a@sender.test>\r\n" + recipients + b"DATA\r\n")
    replies = [client.reply()[:9] for _ in range(14)]
    assert replies == [b"250 2.1.0", *[b"250 2.1.5"] * 5, *[b"452 4.5.3"] * 7, b"354 End d"]
    assert client.say(b"Subject: many\r\n\r\nhi\r\n.\r\n").startswith(b"250 2.0.0")
    (entry,) = spool.entries()
    assert [r.address for r in entry.envelope.recipients] == [f"user{n}@in.test" for n in range(5)]
    client.close()


def test_idle_and_slow_data_are_cut_with_421(make_server: Callable[..., Server]) -> None:
    settings, _ = make_server(command_timeout=0.5, data_timeout=0.5)
    idle = Client(settings)
    assert idle.reply().startswith(b"421 4.4.2 Timeout")
    idle.close()
    settings, _ = make_server(command_timeout=30.0, data_timeout=0.5)
    slow = Client(settings)
    slow.begin_data()
    slow.sock.sendall(b"Subject: drip\r\n")
    assert slow.reply().startswith(b"421 4.4.2 DATA took too long")
    slow.close()


def test_a_client_that_reads_no_reply_is_cut_and_frees_its_place(
    make_server: EdgeServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its replies filled the socket's buffers, and the timeout's close waited for them to be sent: for
    ever, the connection counted all the while (15 addresses took all 300 places until a restart)."""
    monkeypatch.setattr(smtp, "CLOSE_GRACE", 0.2)
    settings, _ = make_server(command_timeout=0.5)
    connections = make_server.handlers[-1].limits
    deaf = socket.socket()
    deaf.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    deaf.connect((settings.host, settings.port))
    deaf.setblocking(False)
    with contextlib.suppress(BlockingIOError):  # until the edge, its replies unread, reads no more either
        while True:
            deaf.send(b"EHLO client.test\r\n" * 50)
    assert connections.total == 1
    wait_for(lambda: connections.total == 0, timeout=10, what="the connection to be cut")
    deaf.close()


def test_a_data_still_streaming_has_the_whole_of_data_timeout_and_then_idles_as_before(
    make_server: Callable[..., Server],
) -> None:
    """The idle timer aiosmtpd starts at each command ran on through DATA: a message arriving steadily was
    cut at command_timeout, though data_timeout is the whole of one DATA."""
    settings, spool = make_server(command_timeout=0.5, data_timeout=30.0)
    client = Client(settings)
    client.begin_data()
    client.sock.sendall(b"Subject: steady\r\n\r\n")
    streaming_until = time.monotonic() + 3 * settings.command_timeout
    while time.monotonic() < streaming_until:  # a slow client: a line every 50 ms, never idle that long
        client.sock.sendall(b"line\r\n")
        time.sleep(0.05)
    assert client.say(b".\r\n").startswith(b"250 2.0.0")
    assert len(list(spool.entries())) == 1
    assert client.reply().startswith(b"421 4.4.2 Timeout")  # idle after DATA: command_timeout again
    client.close()


def proxy_v1(client: str, port: int = 56324) -> bytes:
    return f"PROXY TCP4 {client} 192.0.2.1 {port} 25\r\n".encode()


def proxy_v2(client: str, port: int = 56324) -> bytes:
    addresses = socket.inet_aton(client) + socket.inet_aton("192.0.2.1") + struct.pack("!HH", port, 25)
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", len(addresses)) + addresses


@pytest.mark.parametrize("header", [proxy_v1("203.0.113.7"), proxy_v2("203.0.113.7")], ids=["v1", "v2"])
def test_behind_a_load_balancer_the_real_client_is_recorded(make_server: EdgeServers, header: bytes) -> None:
    settings, spool = make_server(proxy_protocol=True)
    client = Client(settings, proxy=header)
    assert client.greeting.startswith(b"220")
    client.begin_data()
    assert client.say(b"Subject: via lb\r\n\r\nhi\r\n.\r\n").startswith(b"250")
    client.close()
    (entry,) = list(spool.entries())
    assert entry.envelope.client_address == "203.0.113.7:56324"
    assert entry.message.startswith(b"Received: from client.test ([203.0.113.7])")


@pytest.mark.parametrize(
    "header",
    [b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x20, 0x00]) + struct.pack("!H", 0), b"PROXY UNKNOWN\r\n"],
    ids=["v2-local", "v1-unknown"],
)
def test_a_load_balancer_s_own_health_check_is_served(make_server: EdgeServers, header: bytes) -> None:
    """A PROXY header without a source (LOCAL, UNKNOWN) is the balancer's own check: the protocol asks that
    it be served, with the connection's own addresses. Closed, it marked every backend down."""
    settings, _ = make_server(proxy_protocol=True)
    client = Client(settings, proxy=header)
    assert client.greeting.startswith(b"220")
    assert client.say(b"QUIT\r\n").startswith(b"221")
    client.close()


def test_an_ipv6_client_is_written_as_an_ipv6_literal(make_server: EdgeServers) -> None:
    settings, spool = make_server(proxy_protocol=True)
    client = Client(settings, proxy=b"PROXY TCP6 2001:db8::7 2001:db8::1 1001 25\r\n")
    client.begin_data()
    assert client.say(b"Subject: x\r\n\r\nhi\r\n.\r\n").startswith(b"250")
    client.close()
    (entry,) = list(spool.entries())
    assert entry.message.startswith(b"Received: from client.test ([IPv6:2001:db8::7])")  # RFC 5321 4.1.3


def test_without_a_proxy_header_the_connection_is_closed(make_server: EdgeServers) -> None:
    settings, _ = make_server(proxy_protocol=True)
    client = Client(settings, proxy=b"EHLO client.test\r\n")
    assert client.greeting == b""  # closed, never greeted
    client.close()


def test_limits_count_the_real_client_behind_the_load_balancer(make_server: EdgeServers) -> None:
    settings, _ = make_server(proxy_protocol=True, max_connections_per_ip=1)
    first = Client(settings, proxy=proxy_v1("198.51.100.1", 1001))
    second = Client(settings, proxy=proxy_v1("198.51.100.1", 1002))
    other = Client(settings, proxy=proxy_v1("198.51.100.2", 1003))
    assert [c.greeting[:9] for c in (first, second, other)] == [b"220 mx.te", b"421 4.7.0", b"220 mx.te"]
    for connection in (first, second, other):
        connection.close()


@pytest.mark.parametrize(
    ("first", "second"),
    [("2001:db8:1:2::1", "2001:db8:1:2:ffff::2"), ("198.51.100.1", "::ffff:198.51.100.1")],
    ids=["one-ipv6-network", "ipv4-mapped"],
)
def test_one_client_is_counted_once_whatever_address_it_shows(
    make_server: EdgeServers, first: str, second: str
) -> None:
    """A host has a whole IPv6 /64 to connect from: counted by address, it was 2**64 clients."""
    settings, _ = make_server(proxy_protocol=True, max_connections_per_ip=1)
    headers = [f"PROXY TCP6 {address} 2001:db8::25 {port} 25\r\n" for address, port in ((first, 1001), (second, 1002))]
    if ":" not in first:
        headers[0] = proxy_v1(first, 1001).decode()
    one, other = (Client(settings, proxy=header.encode()) for header in headers)
    assert one.greeting.startswith(b"220")
    assert other.greeting.startswith(b"421 4.7.0")
    one.close()
    other.close()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b'[smtp]\nhostname = "mx\xff"\n', "not UTF-8: byte 0xff at offset 21"),
        (b"x = " + b"[" * 100_000 + b"]" * 100_000 + b"\n", "nested too deeply"),
        (b"", "streams: no [[streams]]: inbound would accept no mail"),
    ],
    ids=["latin-1", "nested", "empty"],
)
def test_a_config_that_cannot_be_read_is_one_line_naming_the_file(tmp_path: Path, content: bytes, problem: str) -> None:
    config = tmp_path / "inbound.toml"
    config.write_bytes(content)
    with pytest.raises(ConfigError) as raised:
        load_settings(config)
    message = str(raised.value)
    assert message.startswith(str(config))
    assert problem in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "arg",
    ["", "<a@b.test>", "<a@b.test> SIZE=10 BODY=8BITMIME", "a@b.test", "<>", "<@relay:a@b.test>", "<a b@c>",
     '<"q u"@b.test>', "<" + "x" * 70 + "@b.test>", "<unclosed@b.test", "no at sign", "<a@b.test>>"],
)  # fmt: skip
@pytest.mark.parametrize("local_part_limit", [0, 64])
def test_our_address_parse_for_mail_and_rcpt_is_aiosmtpd_s(arg: str, local_part_limit: int) -> None:
    """The override only drops the class aiosmtpd declares on every call; what it returns is the same."""
    session = SimpleNamespace(local_part_limit=local_part_limit)
    assert InboundSMTP._getaddr(session, arg) == SMTP._getaddr(session, arg)


def test_a_size_in_digits_that_are_not_ascii_is_a_syntax_error_not_a_bug_of_ours(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """aiosmtpd took "²" for a digit (str.isdigit), then int() raised: a 451 and a traceback for each."""
    assert client.say(b"EHLO client.test\r\n").startswith(b"250")
    with caplog.at_level(logging.INFO):
        assert client.say("MAIL FROM:<a@sender.test> SIZE=\u00b2\r\n".encode()).startswith(b"501 5.5.4")
        assert client.say(b"MAIL FROM:<a@sender.test> SIZE=1024\r\n").startswith(b"250")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_recipient_given_twice_is_one_recipient(server: Server, client: Client) -> None:
    assert client.say(b"EHLO client.test\r\n").startswith(b"250")
    assert client.say(b"MAIL FROM:<a@sender.test>\r\n").startswith(b"250")
    for recipient in (b"x@in.test", b"x@in.test", b"X@IN.test", b"y@in.test"):
        assert client.say(b"RCPT TO:<" + recipient + b">\r\n").startswith(b"250 2.1.5")
    assert client.say(b"DATA\r\n").startswith(b"354")
    assert client.say(b"Subject: x\r\n\r\nhi\r\n.\r\n").startswith(b"250")
    (entry,) = list(server[1].entries())
    assert [r.address for r in entry.envelope.recipients] == ["x@in.test", "y@in.test"]

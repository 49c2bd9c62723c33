"""A real SMTP edge on a loopback port for in-process tests, and a raw client to talk to it.

aiosmtpd's ``Controller`` runs ``InboundSMTP`` on a thread with a real spool, as
aiosmtpd's own tests do: the protocol is the real one, no process is started.
conftest.py loads this module as a plugin, so its fixtures serve every test.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from inbound.config import SmtpSettings, StreamSettings
from inbound.datadir import DataDir
from inbound.edge.handler import InboundHandler
from inbound.edge.smtp import InboundSMTP
from inbound.edge.spool import Spool
from inbound.envelope import Envelope
from inbound.ids import new_queue_id
from inbound.routing import RoutingTable

from .harness import SECRET, free_port


def spool_envelope() -> Envelope:
    """An envelope for a spool entry of a test: a new queue id; nothing else of it matters there."""
    return Envelope(new_queue_id(), "a@sender.test", (), "127.0.0.1:1", "h", False, "t")


class InboundController(Controller):
    def __init__(self, handler: InboundHandler, settings: SmtpSettings) -> None:
        super().__init__(handler, hostname=settings.host, port=settings.port)
        self.settings = settings

    def factory(self) -> InboundSMTP:
        assert isinstance(self.handler, InboundHandler)
        return InboundSMTP(self.handler, self.settings)

    def _trigger_server(self) -> None:
        """aiosmtpd's start-up connection, with the PROXY header an edge behind a load balancer waits for."""
        with socket.create_connection((self.settings.host, self.settings.port), 1.0) as probe:
            if self.settings.proxy_protocol:
                probe.sendall(b"PROXY TCP4 127.0.0.1 127.0.0.1 1 1\r\n")
            probe.recv(1024)


Server = tuple[SmtpSettings, Spool]


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[EdgeServers]:
    """Starts edges with ``SmtpSettings`` fields changed; all stopped after the test."""
    servers = EdgeServers(tmp_path)
    yield servers
    for controller in servers.controllers:
        controller.stop()


class EdgeServers:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.controllers: list[Controller] = []
        self.handlers: list[InboundHandler] = []

    def __call__(self, **smtp: Any) -> Server:
        settings = SmtpSettings(
            port=free_port(), hostname="mx.test.example", **{"max_message_size": 1024 * 1024, **smtp}
        )
        spool = Spool(DataDir(self.tmp_path / f"edge{len(self.controllers)}"))
        self.handlers.append(InboundHandler(settings, ROUTING, spool))
        self.controllers.append(InboundController(self.handlers[-1], settings))
        self.controllers[-1].start()
        return settings, spool


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    return make_server()


def _routing() -> RoutingTable:
    support = StreamSettings("support", ("*@in.test",), "https://hooks.example.test/", SECRET)
    sales = StreamSettings(
        "sales", ("sales@ÏN.example.test", "*@kilo.example.test"), "https://hooks.example.test/", SECRET
    )
    return RoutingTable.from_streams([support, sales])


ROUTING = _routing()


def any_certificate() -> ssl.SSLContext:
    """A client context that takes the test's self-signed certificates."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class Client:
    """One raw SMTP connection: send exactly these bytes, read one (possibly multi-line) reply."""

    def __init__(
        self, settings: SmtpSettings, source: str = "127.0.0.1", timeout: float = 10, proxy: bytes = b""
    ) -> None:
        self.sock = socket.create_connection((settings.host, settings.port), timeout, source_address=(source, 0))
        self.sock.sendall(proxy)  # what a load balancer sends first, when it speaks the PROXY protocol
        self.file = self.sock.makefile("rb")
        self.greeting = self.reply()

    def reply(self) -> bytes:
        lines = []
        while True:
            line = self.file.readline()
            lines.append(line)
            if len(line) < 4 or line[3:4] != b"-":
                return b"".join(lines)

    def say(self, data: bytes) -> bytes:
        self.sock.sendall(data)
        return self.reply()

    def begin_data(self) -> None:
        """EHLO, MAIL, RCPT and DATA of a plain message, each accepted: what DATA sends comes next."""
        assert self.say(b"EHLO client.test\r\n").startswith(b"250")
        assert self.say(b"MAIL FROM:<a@sender.test>\r\n").startswith(b"250")
        assert self.say(b"RCPT TO:<x@in.test>\r\n").startswith(b"250")
        assert self.say(b"DATA\r\n").startswith(b"354")

    def begin_tls(self) -> None:
        """EHLO and STARTTLS, each accepted, then the handshake (taking the test's self-signed certificate)."""
        assert self.say(b"EHLO client.test\r\n").startswith(b"250")
        assert self.say(b"STARTTLS\r\n").startswith(b"220")
        self.starttls(any_certificate())

    def starttls(self, context: ssl.SSLContext) -> None:
        """Encrypt this connection (after a 220 to STARTTLS); replies are read from the TLS stream then."""
        self.file.close()
        self.sock = context.wrap_socket(self.sock, server_hostname="mx.test.example")
        self.file = self.sock.makefile("rb")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def client(server: tuple[SmtpSettings, Spool]) -> Iterator[Client]:
    connection = Client(server[0])
    assert connection.greeting.startswith(b"220")
    yield connection
    connection.close()

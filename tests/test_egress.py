"""SSRF-safe webhook connections (issue 9, part 3): checked addresses, no redirects, capped bodies,
one deadline per attempt -- for deliveries and alerts alike.

The config-time rule is pure and tested directly. The connect-time tests use a
real HTTP server on loopback (in a thread) and the real client the deliverer
uses, with a resolver the test controls: what matters is what reaches the
socket.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import trustme

from inbound.config import Settings, StreamSettings, WebhookSettings, check_webhook_url
from inbound.delivery.deliver import Deliverer
from inbound.delivery.egress import Resolver, system_resolver, webhook_transport
from inbound.delivery.outbox import Delivery, Outbox
from inbound.delivery.retry import Answer
from inbound.delivery.webhook import ERROR_LENGTH, AttemptResult, WebhookClient
from inbound.netpolicy import ip_of, is_public

from .harness import SECRET, wait_for
from .test_delivery import Bus, Clock, Inline

LOOPBACK_SPELLINGS = ["127.1", "2130706433", "0x7f.0.0.1", "0177.0.0.1", "127.000.000.001", "0", "localhost."]
NOT_PUBLIC = [
    "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1", "224.0.0.1", "240.0.0.1",
    "0.0.0.0", "::1", "::", "fd00::1", "fe80::1", "ff02::1", "::ffff:127.0.0.1", "64:ff9b::a00:1", "2002:c0a8:101::",
    "64:ff9b:1:a9fe:a9:fe00:808:808", "64:ff9b:1::808:808", "fec0::1",
]  # fmt: skip


@pytest.mark.parametrize("host", [*LOOPBACK_SPELLINGS, "[::ffff:7f00:1]", "LOCALHOST", "x.localhost"])
def test_every_spelling_of_loopback_is_refused_at_config_time(host: str) -> None:
    with pytest.raises(ValueError, match="allow_private"):
        check_webhook_url(f"https://{host}/hook", allow_private=False)
    check_webhook_url(f"https://{host}/hook", allow_private=True)


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_non_public_addresses_and_their_ipv6_forms(address: str) -> None:
    ip = ip_of(address)
    assert ip is not None
    assert not is_public(ip)


@pytest.mark.parametrize("host", ["hooks.example.com", "93.184.216.34", "[2606:4700::1]", "1e3.example"])
def test_public_hosts_and_names_pass_the_config_check(host: str) -> None:
    check_webhook_url(f"https://{host}/hook", allow_private=False)


def test_a_host_that_is_not_a_valid_address_is_refused() -> None:
    with pytest.raises(ValueError, match="neither a name nor an IPv4 address"):
        check_webhook_url("https://1.2.3.4.5/hook", allow_private=False)


def gzipped(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip format
    return packer.compress(data) + packer.flush()


BOMB = gzipped(gzipped(bytes(64 * 1024 * 1024)))  # a few hundred bytes on the wire, 64 MiB once unpacked


class Endpoint(BaseHTTPRequestHandler):
    """/ok 200; /redirect 302; /flood 100 MB; /bomb gzip twice over (see BOMB); /drip a body byte every
    0.2 s; /slow-headers ditto; /garbage a status line of 20 KB of junk; /hang 200 once released."""

    protocol_version = "HTTP/1.1"
    requests: ClassVar[list[str]] = []
    released: ClassVar[threading.Event] = threading.Event()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        Endpoint.requests.append(self.path)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client hung up, as it should
            getattr(self, "answer_" + self.path.strip("/").replace("-", "_"))()

    def answer_ok(self) -> None:
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def answer_redirect(self) -> None:
        self.send_response(302)
        self.send_header("location", "http://169.254.169.254/latest/meta-data/")
        self.send_header("content-length", "0")
        self.end_headers()

    def answer_flood(self) -> None:
        self.send_response(200)
        self.send_header("content-length", str(100 * 1024 * 1024))
        self.end_headers()
        block = b"x" * (1024 * 1024)
        for _ in range(100):
            self.wfile.write(block)

    def answer_bomb(self) -> None:
        self.send_response(200)  # compressed although the request said accept-encoding: identity
        self.send_header("content-encoding", "gzip, gzip")
        self.send_header("content-length", str(len(BOMB)))
        self.end_headers()
        self.wfile.write(BOMB)

    def answer_hang(self) -> None:
        Endpoint.released.wait(30)
        self.answer_ok()

    def answer_garbage(self) -> None:
        self.wfile.write(b"\x00\xff" * 10_000 + b"\r\n\r\n")

    def answer_drip(self) -> None:
        self.send_response(200)
        self.send_header("content-length", "1000")
        self.end_headers()
        self.drip(b"x" * 1000)

    def answer_slow_headers(self) -> None:
        self.drip(b"HTTP/1.1 200 OK\r\n" + b"x-slow: " + b"x" * 1000)

    def drip(self, data: bytes) -> None:
        for byte in data:
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            time.sleep(0.2)  # the endpoint under test is slow on purpose; nothing waits on it

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    Endpoint.requests = []
    Endpoint.released = threading.Event()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    Endpoint.released.set()
    httpd.shutdown()
    httpd.server_close()


def delivery_to(stream: StreamSettings, n: int = 1) -> Delivery:
    return Delivery(f"01JD{n:022d}-{stream.name}", stream.name, f"01JD{n:022d}", 0, b"{}", 0, 0, 0.0)


def post(
    url: str,
    *,
    allow_private: bool,
    resolve: Resolver = system_resolver,
    timeout: float = 5.0,
    ca_file: Path | None = None,
) -> AttemptResult:
    stream = StreamSettings("support", ("*@in.test",), url, SECRET)
    with webhook_transport(allow_private=allow_private, resolve=resolve, ca_file=ca_file) as transport:
        return WebhookClient(transport, timeout).post(stream, delivery_to(stream))


def port_of(server: ThreadingHTTPServer) -> int:
    return int(server.server_address[1])


@pytest.mark.e2e
def test_a_name_resolving_to_loopback_never_receives_a_request(server: ThreadingHTTPServer) -> None:
    url = f"http://hooks.customer.test:{port_of(server)}/ok"
    rebinding = lambda host, port: ["93.184.216.34", "127.0.0.1"]  # noqa: E731 -- one public, one not
    result = post(url, allow_private=False, resolve=rebinding)
    assert Endpoint.requests == []
    assert result.answer is Answer.FAILED
    assert result.error == (
        "AddressRefused: hooks.customer.test is 127.0.0.1: not a public address (webhooks.allow_private is false)"
    )


@pytest.mark.e2e
def test_the_connection_goes_to_the_checked_address_without_a_second_lookup(server: ThreadingHTTPServer) -> None:
    # The system resolver knows no such name: the POST arriving proves the checked address was used.
    result = post(
        f"http://hooks.customer.test:{port_of(server)}/ok", allow_private=True, resolve=lambda h, p: ["127.0.0.1"]
    )
    assert (result.status_code, result.answer, Endpoint.requests) == (200, Answer.ACCEPTED, ["/ok"])


@pytest.mark.e2e
@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
def test_every_spelling_of_loopback_is_refused_at_connect_time(server: ThreadingHTTPServer, host: str) -> None:
    result = post(f"http://{host}:{port_of(server)}/ok", allow_private=False)
    assert Endpoint.requests == []
    assert result.status_code is None
    assert result.error
    # Refused by the address check, or by httpx's own URL parser (which rejects octal spellings):
    # either way a recorded failure of this attempt.
    assert result.error.startswith(("AddressRefused: ", "InvalidURL: Invalid IPv4 address"))


@pytest.mark.e2e
def test_a_redirect_is_a_failed_attempt_and_is_not_followed(server: ThreadingHTTPServer) -> None:
    result = post(f"http://127.0.0.1:{port_of(server)}/redirect", allow_private=True)
    assert Endpoint.requests == ["/redirect"]
    assert (result.status_code, result.answer) == (302, Answer.FAILED)
    assert result.error == "HTTP 302: redirect to http://169.254.169.254/latest/meta-data/ not followed"


@pytest.mark.e2e
def test_an_answer_that_is_no_http_is_a_failed_attempt_with_a_short_reason(server: ThreadingHTTPServer) -> None:
    """The protocol error quotes what came (64 KiB of repr): the reason is stored, logged and alerted on."""
    result = post(f"http://127.0.0.1:{port_of(server)}/garbage", allow_private=True)
    assert (result.status_code, result.answer) == (None, Answer.FAILED)
    assert result.error is not None
    assert result.error.startswith("RemoteProtocolError: ")
    assert len(result.error) == ERROR_LENGTH
    assert result.error.endswith("…")


@pytest.mark.e2e
@pytest.mark.parametrize("path", ["/flood", "/bomb"])
def test_a_huge_answer_is_not_read_into_memory(server: ThreadingHTTPServer, path: str) -> None:
    """Neither 100 MB sent nor 64 MiB packed into a few hundred bytes: the body is read as it came, capped."""
    tracemalloc.start()
    try:
        result = post(f"http://127.0.0.1:{port_of(server)}{path}", allow_private=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.answer is Answer.ACCEPTED
    assert peak < 5 * 1024 * 1024


@pytest.mark.e2e
@pytest.mark.parametrize("path", ["/drip", "/slow-headers"])
def test_a_slow_drip_ends_at_the_attempt_s_one_deadline(server: ThreadingHTTPServer, path: str) -> None:
    started = time.monotonic()
    result = post(f"http://127.0.0.1:{port_of(server)}{path}", allow_private=True, timeout=1.0)
    elapsed = time.monotonic() - started
    assert result.error == "timeout after 1s"
    assert elapsed < 10  # the drip lasts 200 s; generous for a busy machine


def test_a_slow_name_lookup_ends_at_the_attempt_s_deadline() -> None:
    answered = threading.Event()

    def slow_name_server(host: str, port: int) -> list[str]:
        answered.wait(10)  # the customer's name server, far slower than webhooks.timeout
        return ["127.0.0.1"]

    started = time.monotonic()
    try:
        result = post("http://hooks.customer.test:9/hook", allow_private=True, resolve=slow_name_server, timeout=1.0)
    finally:
        answered.set()
    assert (result.status_code, result.answer) == (None, Answer.UNREACHABLE)
    assert result.error == (
        "could not connect: cannot resolve hooks.customer.test: no answer before the attempt's deadline"
    )
    assert time.monotonic() - started < 5  # the lookup was abandoned at the deadline, not waited for


AlertingTo = Callable[[str, float], Deliverer]


@pytest.fixture
def alerting_to(tmp_path: Path) -> Iterator[AlertingTo]:
    """A deliverer whose stream's silence alert, POSTed to a URL, is due on its next dispatch pass; its
    alerts' thread started, as Deliverer.start starts it."""
    clock = Clock()
    outbox = Outbox(tmp_path / "outbox.db", clock=clock)
    transport = webhook_transport(allow_private=True)

    def build(url: str, timeout: float) -> Deliverer:
        settings = Settings(
            tmp_path / "inbound.toml",
            webhooks=WebhookSettings(timeout=timeout, alert_url=url, alert_signing_secret=SECRET),
            streams=(StreamSettings("support", ("*@in.test",), "http://127.0.0.1:9/", SECRET, silence_alert_after=60),),
        )
        deliverer = Deliverer(settings, outbox, Bus(), transport, clock=clock, pool=lambda stream, n: Inline())
        deliverer.alerter.start()
        clock.now += 3600
        return deliverer

    yield build
    transport.close()
    outbox.close()


@pytest.mark.e2e
def test_a_dripping_alert_url_holds_up_no_dispatch_pass_and_its_post_ends_at_the_timeout(
    server: ThreadingHTTPServer, alerting_to: AlertingTo, caplog: pytest.LogCaptureFixture
) -> None:
    deliverer = alerting_to(f"http://127.0.0.1:{port_of(server)}/drip", 1.0)
    started = time.monotonic()
    deliverer.dispatch_due()  # what the dispatcher's thread runs on every pass
    passed = time.monotonic() - started
    try:
        wait_for(lambda: "alert=stream_silent not posted to alert_url: timeout after 1s" in caplog.text, 10, "it")
    finally:
        deliverer.alerter.stop(5)
    assert Endpoint.requests == ["/drip"]
    # The POST takes the whole 1 s timeout: a pass shorter than that did not wait for it.
    assert passed < 1.0
    assert time.monotonic() - started < 5  # the drip lasts 200 s


@pytest.mark.e2e
@pytest.mark.parametrize("path", ["/flood", "/bomb"])
def test_an_alert_url_s_huge_answer_is_not_read_into_memory(
    server: ThreadingHTTPServer, alerting_to: AlertingTo, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    deliverer = alerting_to(f"http://127.0.0.1:{port_of(server)}{path}", 5.0)
    tracemalloc.start()
    try:
        deliverer.dispatch_due()
        deliverer.alerter.stop(10)  # sends what is queued, then ends
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not deliverer.alerter.sender.is_alive()
    assert Endpoint.requests == [path]
    assert "not posted to alert_url" not in caplog.text  # a 200: posted, its answer dropped
    assert peak < 5 * 1024 * 1024


@pytest.mark.e2e
def test_an_alert_url_s_redirect_is_not_followed(
    server: ThreadingHTTPServer, alerting_to: AlertingTo, caplog: pytest.LogCaptureFixture
) -> None:
    deliverer = alerting_to(f"http://127.0.0.1:{port_of(server)}/redirect", 5.0)
    deliverer.dispatch_due()
    deliverer.alerter.stop(10)
    assert Endpoint.requests == ["/redirect"]
    assert (
        "alert=stream_silent not posted to alert_url: HTTP 302: redirect to http://169.254.169.254/latest/meta-data/"
        " not followed"
    ) in caplog.text


@pytest.mark.e2e
def test_endpoints_that_hang_take_no_connection_from_another_stream(server: ThreadingHTTPServer) -> None:
    """Each stream bounds its own attempts (concurrency_per_stream); the shared transport adds no bound."""
    hanging = StreamSettings("hanging", ("*@hanging.test",), f"http://127.0.0.1:{port_of(server)}/hang", SECRET)
    healthy = StreamSettings("healthy", ("*@healthy.test",), f"http://127.0.0.1:{port_of(server)}/ok", SECRET)
    with webhook_transport(allow_private=True) as transport, ThreadPoolExecutor(10) as pool:
        try:
            # Two streams at a concurrency of 5 whose endpoints hang, each attempt replaced by the next as
            # it ends: modelled as attempts outlasting the healthy one's deadline.
            outlasting = WebhookClient(transport, 30.0)
            stuck = [pool.submit(outlasting.post, hanging, delivery_to(hanging, n)) for n in range(10)]
            wait_for(lambda: Endpoint.requests.count("/hang") == 10, 10, "ten POSTs hanging")
            result = WebhookClient(transport, 2.0).post(healthy, delivery_to(healthy))
        finally:
            Endpoint.released.set()
        assert [future.result().answer for future in stuck] == [Answer.ACCEPTED] * 10
    assert (result.answer, result.error) == (Answer.ACCEPTED, None)


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[ThreadingHTTPServer, Path]]:
    """An HTTPS endpoint whose certificate, for hooks.customer.test, comes from a private CA."""
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("hooks.customer.test").configure_cert(context)
    Endpoint.requests = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd, ca_file
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.e2e
def test_tls_is_verified_against_the_host_name_while_connecting_to_the_checked_address(
    tls_server: tuple[ThreadingHTTPServer, Path],
) -> None:
    server, ca_file = tls_server
    to_loopback: Resolver = lambda host, port: ["127.0.0.1"]  # noqa: E731
    ok = post(
        f"https://hooks.customer.test:{port_of(server)}/ok", allow_private=True, resolve=to_loopback, ca_file=ca_file
    )
    assert (ok.status_code, Endpoint.requests) == (200, ["/ok"])
    # Without the private CA, or under a name the certificate is not for, nothing is sent.
    untrusted = post(f"https://hooks.customer.test:{port_of(server)}/ok", allow_private=True, resolve=to_loopback)
    wrong_name = post(
        f"https://other.customer.test:{port_of(server)}/ok", allow_private=True, resolve=to_loopback, ca_file=ca_file
    )
    assert Endpoint.requests == ["/ok"]
    assert "CERTIFICATE_VERIFY_FAILED" in (untrusted.error or "")
    assert "CERTIFICATE_VERIFY_FAILED" in (wrong_name.error or "")

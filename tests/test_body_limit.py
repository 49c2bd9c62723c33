"""Request bodies are capped before anything reads them: the API served by uvicorn, over a real socket.

Each request is written by hand, so the test decides what is sent and what is
not: an answer that arrives while the body is still unsent (or unfinished)
proves the body was never waited for, let alone held in memory.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from dataclasses import replace

import pytest
from starlette.exceptions import HTTPException
from starlette.types import Message, Receive, Scope, Send

from inbound.web.backends import Backends
from inbound.web.bodylimit import MAX_BODY, BodyLimit
from inbound.web.problems import MEDIA_TYPE
from inbound.web.server import ApiServer

from .harness import wait_for
from .test_api import ACT, backends

__all__ = ["backends"]

pytestmark = pytest.mark.e2e

FORM = "application/x-www-form-urlencoded"
ANONYMOUS: dict[str, str] = {}
ACTOR = {"authorization": f"Bearer {ACT}"}


@pytest.fixture
def port(backends: Backends) -> Iterator[int]:
    settings = backends.settings
    served = replace(backends, settings=replace(settings, http=replace(settings.http, port=0)))
    server = ApiServer(served)
    server.start()
    try:
        wait_for(lambda: server.server.started, 10, "uvicorn to start")
        yield int(server.socket.getsockname()[1])
    finally:
        server.stop()


def answer(port: int, path: str, headers: dict[str, str], sent: bytes) -> tuple[str, dict[str, str], bytes]:
    """The status line, headers and body that answer a POST whose head is *headers* and whose bytes are *sent*."""
    head = f"POST {path} HTTP/1.1\r\nhost: inbound.test\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(head.encode() + b"\r\n" + sent)
        reply = client.makefile("rb")
        status = reply.readline().decode().strip()
        fields = {}
        while line := reply.readline().strip():
            name, _, value = line.decode().partition(":")
            fields[name.lower()] = value.strip()
        return status, fields, reply.read(int(fields.get("content-length", 0)))


def assert_too_large(status: str, headers: dict[str, str], body: bytes) -> None:
    assert status == "HTTP/1.1 413 Request Entity Too Large"
    assert headers["content-type"] == MEDIA_TYPE
    assert json.loads(body) == {
        "type": "about:blank",
        "title": "Content Too Large",
        "status": 413,
        "detail": f"a request body may hold at most {MAX_BODY} bytes",
    }


@pytest.mark.parametrize(
    ("path", "headers"),
    [("/login", {"content-type": FORM}), ("/v1/replay", {"content-type": "application/json", **ACTOR})],
)
def test_a_body_whose_length_is_over_the_cap_is_refused_unsent(port: int, path: str, headers: dict[str, str]) -> None:
    assert_too_large(*answer(port, path, {**headers, "content-length": str(MAX_BODY + 1)}, b""))


@pytest.mark.parametrize("credentials", [ANONYMOUS, {"authorization": "Bearer not-a-token-of-this-service"}])
def test_a_request_without_a_good_token_is_refused_for_it_whatever_length_it_declares(
    port: int, credentials: dict[str, str]
) -> None:
    """The token is checked before the body: 401, not 413, and still no byte of the body sent."""
    headers = {"content-type": "application/json", "content-length": str(MAX_BODY + 1), **credentials}
    status, fields, _ = answer(port, "/v1/replay", headers, b"")
    assert status == "HTTP/1.1 401 Unauthorized"
    assert fields["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/login", {"content-type": FORM}, "HTTP/1.1 413 Request Entity Too Large"),
        ("/v1/replay", {"content-type": "application/json", **ACTOR}, "HTTP/1.1 413 Request Entity Too Large"),
        # Not even counted: an anonymous request is answered before its body is read.
        ("/v1/replay", {"content-type": "application/json", **ANONYMOUS}, "HTTP/1.1 401 Unauthorized"),
    ],
)
def test_a_streamed_body_is_refused_once_past_the_cap(
    port: int, path: str, headers: dict[str, str], status: str
) -> None:
    """No Content-Length: one chunk, one byte over the cap, its end never sent."""
    chunk = f"{MAX_BODY + 1:x}\r\n".encode() + b"a" * (MAX_BODY + 1)
    answered = answer(port, path, {**headers, "transfer-encoding": "chunked"}, chunk)
    assert answered[0] == status
    if status.startswith("HTTP/1.1 413"):
        assert_too_large(*answered)


def test_a_body_within_the_cap_is_read(port: int) -> None:
    form = f"token={ACT}&padding=".encode().ljust(MAX_BODY, b"a")
    status, headers, _ = answer(port, "/login", {"content-type": FORM, "content-length": str(MAX_BODY)}, form)
    assert (status, headers["location"]) == ("HTTP/1.1 303 See Other", "/")


def test_a_length_of_more_digits_than_python_makes_an_int_of_is_refused_unread() -> None:
    """In process: a server in front might pass such a header on, and int() of it raises."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()

    async def receive() -> Message:
        raise AssertionError("the body was read")

    async def send(message: Message) -> None:
        raise AssertionError("the middleware answered, not the app's handlers")

    scope: Scope = {"type": "http", "method": "POST", "path": "/login", "headers": [(b"content-length", b"9" * 5000)]}
    with pytest.raises(HTTPException) as refused:
        asyncio.run(BodyLimit(app)(scope, receive, send))
    assert refused.value.status_code == 413

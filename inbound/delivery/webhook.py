"""One POST of one delivery to its stream's webhook: signed, timed, and classified.

The HTTP side of delivery and nothing else: it knows how to sign and send a
body and how to describe what came back, and nothing about schedules, health
or the bus. Every way an attempt can end -- any status, a timeout, a refused
connection, a refused address (:mod:`.egress`), a redirect (never followed), an
error of a kind nobody foresaw -- comes back as an
:class:`AttemptResult`, never as an exception, so a strange endpoint can never
make the deliverer loop over the same delivery. The alerts (:mod:`.alerts`) go
out through the same POST, so an alert endpoint is held to the same bounds.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import httpx

from ..config import StreamSettings
from ..printable import cut
from .egress import attempt_deadline
from .outbox import Delivery
from .retry import Answer, answer_of
from .signing import signed_headers

USER_AGENT = "inbound-webhooks/0.1"
BODY_READ_LIMIT = 64 * 1024  # of an endpoint's answer, read (so a connection can be reused) and dropped
# Characters of an error kept: it is stored with every attempt, logged and alerted on, and a
# protocol error quotes what the endpoint sent (an illegal status line of 16 KiB, repr'd).
ERROR_LENGTH = 300


@dataclass(frozen=True, slots=True)
class AttemptResult:
    status_code: int | None  # None when no response came
    error: str | None  # why it did not count as delivered; None for 2xx
    latency_ms: float
    answer: Answer  # what it means (the one place a status or an error is classified)


class WebhookClient:
    """POSTs on an httpx transport, not a client: nothing of the client layer (cookies, auth,
    redirects, hooks) is wanted here, and it cost about 0.2 ms of CPU a POST."""

    def __init__(self, transport: httpx.BaseTransport, timeout: float) -> None:
        self.transport = transport
        self.timeout = timeout
        self.timeouts = httpx.Timeout(timeout).as_dict()  # each read and write; the attempt's own in .egress

    def post(self, stream: StreamSettings, delivery: Delivery) -> AttemptResult:
        headers = signed_headers(stream.signing_secrets, delivery.delivery_id, delivery.payload, delivery.content_type)
        return self.send(delivery.url or stream.webhook_url, delivery.payload, headers)

    def send(self, url: str, body: bytes, headers: dict[str, str]) -> AttemptResult:
        """POST *body* to *url* as a delivery goes (deadline, capped raw read, no redirect): alerts too."""
        headers["user-agent"] = USER_AGENT
        headers["accept-encoding"] = "identity"  # the answer is dropped: asked not to compress it
        started = time.monotonic()
        status_code: int | None = None
        connected = True
        try:
            with attempt_deadline(self.timeout):
                status_code, location = self._send(url, body, headers)
            error = None if 200 <= status_code < 300 else f"HTTP {status_code}"
            if location is not None:
                error = f"HTTP {status_code}: redirect to {location[:200]} not followed"
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            connected = False  # refused, no route, DNS, TLS: the endpoint, not this message
            error = f"could not connect: {exc}" if str(exc) else "could not connect"
        except httpx.TimeoutException:
            error = f"timeout after {self.timeout:g}s"
        except Exception as exc:  # noqa: BLE001 -- whatever the endpoint did, it is this attempt's failure
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        latency_ms = (time.monotonic() - started) * 1000
        error = cut(error, ERROR_LENGTH) if error is not None else None
        return AttemptResult(status_code, error, latency_ms, answer_of(status_code, connected=connected))

    def _send(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str | None]:
        """The status and, for a redirect, where to; the body is read up to a cap and dropped.

        Read raw: an endpoint may compress its answer whatever the request asked, and a few
        hundred bytes of gzip twice over unpack to gigabytes in one chunk, before any cap.
        """
        extensions = {"timeout": self.timeouts}
        request = httpx.Request("POST", _parsed(url), content=body, headers=headers, extensions=extensions)
        response = self.transport.handle_request(request)
        try:
            read = 0
            # An answer already read whole (an in-process transport builds it so) has nothing left to drain.
            for chunk in () if response.is_stream_consumed else response.iter_raw():
                read += len(chunk)
                if read >= BODY_READ_LIMIT:
                    break  # nobody reads it: enough to finish a small answer, never a flood
            location = response.headers.get("location") if response.is_redirect else None
            return response.status_code, location
        finally:
            response.close()


@functools.lru_cache(maxsize=256)
def _parsed(url: str) -> httpx.URL:
    """A webhook URL, parsed once: a stream's URL is POSTed to again and again, and httpx parsing it
    was half of building each request (31 -> 14 us, measured alone)."""
    return httpx.URL(url)

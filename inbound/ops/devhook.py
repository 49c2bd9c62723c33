"""A development webhook receiver: prints each payload it gets and whether its signature verifies.

``inbound devhook --config FILE`` listens where the example config's stream
posts. For a user wiring up a real endpoint it shows exactly what arrives:
the Standard Webhooks headers, a summary of the payload, and the verdict of
verifying the signature with that stream's secret. It answers 200 to a valid
signature and 401 otherwise, as a real endpoint should.
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import click

from ..config import Settings
from ..delivery.signing import verify
from ..printable import printable


def summarise(payload: dict[str, Any]) -> str:
    sender = payload.get("from") or {}
    fields = [
        f"id:          {payload.get('id')}",
        f"stream:      {payload.get('stream')}",
        f"from:        {sender.get('email')}",
        f"to:          {', '.join(payload.get('envelope', {}).get('rcpt_to', []))}",
        f"subject:     {payload.get('subject')}",
        f"attachments: {len(payload.get('attachments', []))}",
    ]
    lines = [printable(field) for field in fields]  # a stranger's subject: one line, no escape sequence
    text = (payload.get("stripped_text") or payload.get("text") or "").strip()
    if text:
        lines.append("text:        " + printable(text[:200], lines=True).replace("\n", "\n             "))
    return "\n".join(lines)


def describe(headers: dict[str, str], body: bytes) -> str:
    """The summary of an ``inbound``-format body; of any other format, its content type and size."""
    content_type = headers.get("content-type", "")
    try:
        payload = json.loads(body) if content_type == "application/json" else None
    except ValueError:
        payload = None
    if isinstance(payload, dict) and "queue_id" in payload:
        return summarise(payload)
    return f"content-type: {content_type}, {len(body)} bytes"


def make_server(settings: Settings, host: str, port: int, out: Callable[[str], None]) -> ThreadingHTTPServer:
    secrets = {s.name: s.signing_secrets for s in settings.streams}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            headers = {k.lower(): v for k, v in self.headers.items()}
            webhook_id = headers.get("webhook-id", "")
            # The delivery id is <queue_id>-<stream>: the stream, and so the secret, whatever the payload format.
            stream_secrets = secrets.get(webhook_id.partition("-")[2], ())
            valid = any(verify(secret, body, headers) for secret in stream_secrets)
            verdict = "signature OK" if valid else "signature INVALID"
            out(f"--- POST {self.path} webhook-id={webhook_id} {verdict}\n{describe(headers, body)}")
            self.send_response(200 if valid else 401)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the summary above says it all

    # As the API binds: a host with a colon is an IPv6 literal, which an AF_INET socket cannot take.
    return (_IPv6Server if ":" in host else ThreadingHTTPServer)((host, port), Handler)


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def serve(settings: Settings, host: str, port: int) -> None:
    """Print what arrives until Ctrl-C; a port taken or a host unknown is the command's error, naming the address."""
    address = f"[{host}]" if ":" in host else host
    try:
        server = make_server(settings, host, port, lambda text: print(text, flush=True, file=sys.stdout))
    except OSError as exc:  # socket.gaierror too: a name that does not resolve
        raise click.ClickException(f"cannot listen on {address}:{port}: {exc}") from None
    print(f"devhook listening on http://{address}:{server.server_port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()

"""A cap on every request's body, kept before anything reads one.

The bodies this service takes are small (a login form, a replay window), but
whatever reads one reads it whole into memory, and the login form is read
before its token is known to be good: an anonymous 300 MB POST grew the
process by 573 MB. So a body over :data:`MAX_BODY` is refused with ``413``
when the app first asks for it: at once, unread, when its Content-Length says
so; as its bytes arrive when it has none (chunked). Not before: a request the
app answers without its body keeps that answer (an anonymous API request's
``401``, whatever it declares).
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY = 64 * 1024
TOO_LARGE = f"a request body may hold at most {MAX_BODY} bytes"


class BodyLimit:
    """ASGI middleware: no request body over :data:`MAX_BODY` bytes reaches the app.

    Refused with an HTTPException from the app's ``receive``: it passes through FastAPI's body
    parsing and the app's own handlers alike, and comes out as problem details.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        # Compared as digits first: Python makes no int of more than 4,300 of them.
        too_long = declared.isdigit() and (len(declared) > len(str(MAX_BODY)) or int(declared) > MAX_BODY)
        received = 0

        async def counted() -> Message:
            nonlocal received
            if too_long:
                raise HTTPException(413, TOO_LARGE)  # before a byte is read (nor a 100 Continue sent)
            message = await receive()
            received += len(message.get("body", b""))
            if received > MAX_BODY:
                raise HTTPException(413, TOO_LARGE)
            return message

        await self.app(scope, counted, send)

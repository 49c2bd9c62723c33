"""Standard Webhooks signatures (https://www.standardwebhooks.com) over the exact body bytes.

The signature is ``v1,`` + base64(HMAC-SHA256(key, f"{id}.{timestamp}." + body)),
where the key is the base64 part of the stream's ``whsec_`` secret. The
``webhook-id`` is the delivery id, the same on every attempt, so a receiver
can drop repeats.

The reference library (``standardwebhooks``) signs and verifies text only: it
decodes the body as UTF-8, which a ``multipart/form-data`` body with a binary
attachment is not. So the HMAC is taken here over bytes; for a UTF-8 body it
is the library's signature exactly (tests/test_formats.py checks both ways).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime

# A signature older or newer than this is refused, as the reference library does.
TOLERANCE = 5 * 60


def _signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signed_headers(
    secrets: tuple[str, ...], webhook_id: str, body: bytes, content_type: str, now: datetime | None = None
) -> dict[str, str]:
    """The POST's headers: *content_type* (the record's) and the three Standard Webhooks headers.

    One signature per secret, space-separated, as Standard Webhooks allows: during a key rotation
    a receiver holding either the new or the old key verifies the same POST.
    """
    timestamp = int((now or datetime.now(UTC)).timestamp())
    return {
        "content-type": content_type,
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(_signature(secret, webhook_id, timestamp, body) for secret in secrets),
    }


def verify(secret: str, body: bytes, headers: dict[str, str]) -> bool:
    """True if *headers* carry a valid, recent signature of *body* under *secret*."""
    try:
        webhook_id, timestamp = headers["webhook-id"], int(headers["webhook-timestamp"])
        expected = _signature(secret, webhook_id, timestamp, body)
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > TOLERANCE:
        return False
    return any(hmac.compare_digest(expected, given) for given in headers.get("webhook-signature", "").split())

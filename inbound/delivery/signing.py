"""Standard Webhooks signatures (https://www.standardwebhooks.com), via the reference library.

The signature is ``v1,`` + base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}")),
where the key is the base64 part of the stream's ``whsec_`` secret. The
``webhook-id`` is the delivery id, the same on every attempt, so a receiver
can drop repeats.
"""

from __future__ import annotations

from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def signed_headers(secret: str, webhook_id: str, body: bytes, now: datetime | None = None) -> dict[str, str]:
    timestamp = (now or datetime.now(UTC)).replace(microsecond=0)
    signature = Webhook(secret).sign(webhook_id, timestamp, body.decode())
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signature,
    }


def verify(secret: str, body: bytes, headers: dict[str, str]) -> bool:
    """True if *headers* carry a valid, recent signature of *body* under *secret*."""
    try:
        Webhook(secret).verify(body.decode(), headers)
    except (WebhookVerificationError, ValueError, KeyError):
        return False
    return True

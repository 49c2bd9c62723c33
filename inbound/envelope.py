"""The SMTP envelope of one accepted transaction, as kept in the spool and on the bus.

The envelope is what the SMTP conversation said (as opposed to the headers,
which the sender wrote). It travels with the raw message from the SMTP edge to
the processor, so it is serialised to plain JSON-compatible dicts here and
nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Recipient:
    """One accepted RCPT TO, already resolved to the stream that owns it."""

    address: str  # as given in RCPT TO
    stream: str
    mailbox_hash: str | None  # the part after "+" in the local part, if any

    def to_json(self) -> dict[str, Any]:
        return {"address": self.address, "stream": self.stream, "mailbox_hash": self.mailbox_hash}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Recipient:
        return cls(str(data["address"]), str(data["stream"]), data.get("mailbox_hash"))


@dataclass(frozen=True, slots=True)
class Envelope:
    queue_id: str  # our id for the accepted message, as in "250 Ok: queued as <id>"
    mail_from: str  # "" for the null reverse-path (bounces)
    recipients: tuple[Recipient, ...]
    client_address: str  # "ip:port" of the connecting client
    helo: str
    tls: bool
    received_at: str  # RFC 3339, UTC, when DATA completed

    def streams(self) -> list[str]:
        """The streams this message goes to, in the order their first recipient came."""
        return list(dict.fromkeys(r.stream for r in self.recipients))

    def recipients_of(self, stream: str) -> tuple[Recipient, ...]:
        return tuple(r for r in self.recipients if r.stream == stream)

    def to_json(self) -> dict[str, Any]:
        return {
            "queue_id": self.queue_id,
            "mail_from": self.mail_from,
            "recipients": [r.to_json() for r in self.recipients],
            "client_address": self.client_address,
            "helo": self.helo,
            "tls": self.tls,
            "received_at": self.received_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Envelope:
        return cls(
            queue_id=str(data["queue_id"]),
            mail_from=str(data["mail_from"]),
            recipients=tuple(Recipient.from_json(r) for r in data["recipients"]),
            client_address=str(data["client_address"]),
            helo=str(data["helo"]),
            tls=bool(data["tls"]),
            received_at=str(data["received_at"]),
        )

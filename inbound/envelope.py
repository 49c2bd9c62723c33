"""The SMTP envelope of one accepted transaction, as kept in the spool and on the bus.

The envelope is what the SMTP conversation said (as opposed to the headers,
which the sender wrote). It travels with the raw message from the SMTP edge to
the processor; :mod:`inbound.records` encodes it, for the spool and the bus.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Recipient:
    """One accepted RCPT TO, already resolved to the stream that owns it."""

    address: str  # as given in RCPT TO
    stream: str
    mailbox_hash: str | None  # the part after "+" in the local part, if any


@dataclass(frozen=True, slots=True)
class Envelope:
    queue_id: str  # our id for the accepted message, as in "250 Ok: queued as <id>"
    mail_from: str  # "" for the null reverse-path (bounces)
    recipients: tuple[Recipient, ...]
    client_address: str  # "ip:port" of the connecting client
    helo: str
    tls: bool
    received_at: str  # RFC 3339, UTC, when DATA completed
    tls_version: str | None = None  # e.g. "TLSv1.3", when the session was encrypted with STARTTLS
    tls_cipher: str | None = None  # e.g. "TLS_AES_256_GCM_SHA384"

    def streams(self) -> list[str]:
        """The streams this message goes to, in the order their first recipient came."""
        return list(dict.fromkeys(r.stream for r in self.recipients))

    def recipients_of(self, stream: str) -> tuple[Recipient, ...]:
        return tuple(r for r in self.recipients if r.stream == stream)

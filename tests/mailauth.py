"""Real sender authentication for tests and the bench: RSA keys made at test time, dkimpy signing and ARC sealing.

:class:`SenderDomain` is a domain that publishes its DKIM key, SPF and DMARC
records on a :class:`tests.dnsserver.DnsServer` and signs mail the way its
outgoing server would.
"""

from __future__ import annotations

import base64
import functools

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.dnsserver import DnsServer
from tests.harness import simple_message

SIGNED_HEADERS = [b"from", b"to", b"subject", b"date", b"message-id"]


@functools.cache
def rsa_key(name: str) -> tuple[bytes, str]:
    """(private key PEM, public key base64 DER) for *name*; one 2048-bit key per name per run."""
    del name  # the cache key: each name gets its own key
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, base64.b64encode(public).decode()


class SenderDomain:
    def __init__(self, dns: DnsServer, domain: str, selector: str = "s1", key: str | None = None) -> None:
        self.domain = domain
        self.selector = selector
        self.private_key, public = rsa_key(key or domain)  # domains may share a key (the bench's many)
        dns.txt(f"{selector}._domainkey.{domain}", f"v=DKIM1; k=rsa; p={public}")
        self.dns = dns

    def spf(self, record: str) -> SenderDomain:
        self.dns.txt(self.domain, record)
        return self

    def dmarc(self, record: str) -> SenderDomain:
        self.dns.txt(f"_dmarc.{self.domain}", record)
        return self

    def sign(self, message: bytes) -> bytes:
        signature = dkim.sign(
            message,
            self.selector.encode(),
            self.domain.encode(),
            self.private_key,
            include_headers=SIGNED_HEADERS,
        )
        return bytes(signature) + message

    def arc_seal(self, message: bytes, upstream_results: str) -> bytes:
        """Forward *message* as this domain's mailing list would: record what it saw, then seal (RFC 8617)."""
        message = f"Authentication-Results: {self.domain}; {upstream_results}\r\n".encode() + message
        seal = dkim.arc_sign(
            message,
            self.selector.encode(),
            self.domain.encode(),
            self.private_key,
            self.domain.encode(),
            include_headers=SIGNED_HEADERS,
        )
        return b"".join(seal) + message


def message(from_: str = "alice@example.org", **fields: str) -> bytes:
    """A plain message from *from_* (see ``simple_message`` for the other fields)."""
    return simple_message(sender=from_, **fields)

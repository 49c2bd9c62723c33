"""STARTTLS for the SMTP edge: the server's TLS context, made from PEM files and reloaded on HUP.

Certificates are renewed every few weeks, so a renewal must not need a
restart: :meth:`TlsContexts.reload` reads the files again and, if they make a
valid context, new connections use it; connections already encrypted keep
theirs, and nothing is dropped. A bad file on reload (half-written by a
renewal job, a key that does not match) keeps the context that works and logs
why. At start-up the same problems are configuration errors naming the key
(``config/sections.py`` calls :func:`server_context` while validating).
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import TlsSettings

log = logging.getLogger(__name__)

VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


def server_context(cert_file: Path, key_file: Path, min_version: str) -> ssl.SSLContext:
    """A server context from the PEM files (a chain is allowed); ssl.SSLError or OSError if they do not make one."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = VERSIONS[min_version]
    # Senders rarely present client certificates, and opportunistic TLS must not refuse them.
    context.verify_mode = ssl.CERT_NONE
    context.load_cert_chain(cert_file, key_file)
    return context


class TlsContexts:
    """The context new connections get: the latest one made from the files that worked."""

    def __init__(self, settings: TlsSettings) -> None:
        self.settings = settings
        self.current = server_context(settings.cert_file, settings.key_file, settings.min_version)

    def reload(self) -> bool:
        """Read the files again; True if the new context is in use, False if the old one stays."""
        try:
            self.current = server_context(self.settings.cert_file, self.settings.key_file, self.settings.min_version)
        except (ssl.SSLError, OSError) as exc:
            log.error(
                "TLS reload failed, keeping the certificate in use: %s / %s: %s",
                self.settings.cert_file,
                self.settings.key_file,
                exc,
            )
            return False
        log.info("TLS certificate reloaded from %s", self.settings.cert_file)
        return True


def describe(session_ssl: dict[str, object] | None) -> tuple[str | None, str | None]:
    """(protocol version, cipher name) of an encrypted session, from aiosmtpd's ``session.ssl``."""
    if not session_ssl:
        return None, None
    ssl_object = session_ssl.get("ssl_object")
    version = ssl_object.version() if isinstance(ssl_object, ssl.SSLObject) else None
    cipher = session_ssl.get("cipher")
    name = str(cipher[0]) if isinstance(cipher, tuple) and cipher else None
    return version, name

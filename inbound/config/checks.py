"""Checks of single values, shared by the reader and by commands that take such values (``replay --to``).

Each raises ValueError saying what is wrong; the reader turns that into a problem
naming the key.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from urllib.parse import urlsplit

from ..addresses import canonical_domain
from ..netpolicy import refusal


def split_ip_port(value: str) -> tuple[str, int]:
    """``ip:port`` (``[v6]:port`` too): a DNS server is named by address, as in resolv.conf."""
    host, port = split_host_port(value)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{value!r} is not ip:port (a DNS server is given by its address)") from None
    return host, port


def split_host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not host:port")
    return host.strip("[]"), int(port)


def valid_pattern(pattern: str) -> bool:
    local, at, domain = pattern.rpartition("@")
    try:
        canonical_domain(domain)
    except ValueError:
        return False
    return bool(at and local and "." in domain and " " not in pattern)


def check_dsn(dsn: str) -> None:
    """A libpq connection string (``host=... dbname=...`` or ``postgresql://...``), checked without connecting."""
    from psycopg import ProgrammingError  # imported only for a PostgreSQL store
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(dsn)
    except ProgrammingError as exc:
        raise ValueError(f"is not a libpq connection string: {exc}") from None


def check_signing_secret(secret: str) -> None:
    if not secret.startswith("whsec_"):
        raise ValueError('must start with "whsec_" followed by base64 (a Standard Webhooks secret)')
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except binascii.Error:
        raise ValueError('the part after "whsec_" is not valid base64') from None
    if not 24 <= len(key) <= 64:
        raise ValueError("the key must decode to 24-64 bytes")


def check_webhook_url(url: str, allow_private: bool) -> None:
    """Refuse URLs that are not http(s), and (unless allowed) hosts that are not public in any spelling.

    A name is checked again at every connection (inbound.delivery.egress); this catches at once
    what needs no DNS: ``127.1``, ``0x7f.0.0.1``, ``[::ffff:127.0.0.1]``, ``localhost.`` and the like.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL")
    why = None if allow_private else refusal(parts.hostname)
    if why:
        raise ValueError(f"{why} (set webhooks.allow_private = true to allow it)")

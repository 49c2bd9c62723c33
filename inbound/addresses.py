"""Addresses as inbound accepts them: strictly, and with domains compared as DNS sees them.

Used by the SMTP edge (the paths of MAIL FROM and RCPT TO) and by routing
(which stream owns a domain), so both read a domain the same way.

Why strict: on a domain we own, every old routing trick is a way to make us
deliver to an address nobody configured -- or to relay. So a recipient path
must be ``<local@domain>`` and nothing more:

==============================================  =====================  ======================
form                                            example                RCPT reply
==============================================  =====================  ======================
source route                                    ``<@a,@b:user@ours>``  ``550 5.7.1``
percent hack                                    ``<user%other@ours>``  ``550 5.7.1``
bang path                                       ``<other!user@ours>``  ``550 5.7.1``
quoted local part holding ``@`` or ``%``        ``<"a@b"@ours>``       ``550 5.7.1``
address literal                                 ``<user@[127.0.0.1]>`` ``550 5.7.1``
empty, no ``@``, bad characters, bad domain     ``<>``, ``<user>``     ``501 5.1.3``
==============================================  =====================  ======================

A sender (MAIL FROM) may be ``<>``; otherwise the same syntax applies and a
malformed one gets ``501 5.1.7``.

Domains are compared in their IDNA A-label form after UTS #46 mapping (the
``idna`` package), so ``ÏN.example.test`` and ``xn--n-mga.example.test`` are the
same domain. A label written in non-ASCII that maps to plain ASCII (the KELVIN
SIGN in ``\\u212ailo.example.test`` becomes ``kilo``) is a look-alike, not a
spelling: it is refused, so it never reaches an ASCII domain's stream.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import idna

# RFC 5321 Dot-string of atext (RFC 5322), plus UTF-8 (RFC 6531) for SMTPUTF8 senders.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]+"
_DOT_STRING = re.compile(rf"{_ATEXT}(\.{_ATEXT})*")
_QUOTED = re.compile(r'"([\x20\x21\x23-\x5b\x5d-\x7e\u0080-\U0010ffff]|\\[\x20-\x7e])*"')
_RELAY_MARKS = ("%", "!")


class AddressRefused(ValueError):
    """An address we will not take; ``reply`` is the SMTP reply that says why."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


@dataclass(frozen=True, slots=True)
class Mailbox:
    local: str  # as given (its case kept: the part after "+" is the mailbox hash)
    domain: str  # canonical: the A-label form, lower case

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"


@functools.lru_cache(maxsize=4096)  # 25 µs a call, twice a message, for the same few domains (errors are not kept)
def canonical_domain(domain: str) -> str:
    """*domain* in A-label form after UTS #46 mapping; ValueError if invalid or a look-alike of ASCII."""
    if not domain or domain.startswith("["):
        raise ValueError(f"{domain!r} is not a domain name")
    try:
        labels = idna.encode(domain.rstrip("."), uts46=True).decode("ascii").split(".")
    except idna.IDNAError as exc:
        raise ValueError(f"{domain!r} is not a valid domain name: {exc}") from None
    for given, mapped in zip(domain.rstrip(".").split("."), labels, strict=False):
        if not given.isascii() and not mapped.startswith("xn--"):
            raise ValueError(f"{given!r} only looks like {mapped!r}")
    return ".".join(labels)


def split_address(address: str) -> tuple[str, str]:
    """(local part, canonical domain: see :func:`~inbound.addresses.canonical_domain`).

    The local part keeps its case for hashes. A domain that is no domain (or a look-alike)
    comes back empty, which no stream owns.
    """
    local, _, domain = address.strip().strip("<>").rpartition("@")
    try:
        return local, canonical_domain(domain)
    except ValueError:
        return local, ""


def mailbox_key(address: str) -> str:
    """*address* as routing compares it: the local part in lower case, the domain canonical, so that one
    mailbox is one key in every spelling (its A-label for its U-label, another Unicode form, any case):
    a blocked sender's domain gets past in none, and a recipient given twice is kept once."""
    local, domain = split_address(address)
    return f"{local.lower()}@{domain or address.strip().strip('<>').rpartition('@')[2].lower()}"


def split_path(argument: str) -> tuple[str, str]:
    """``<path> PARAMS`` -> (``<path>``, ``PARAMS``): the path ends at the first ``>`` outside quotes."""
    quoted = escaped = False
    for i, char in enumerate(argument):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ">" and not quoted:
            return argument[: i + 1], argument[i + 1 :].strip()
    return argument, ""


def parse_path(path: str, *, sender: bool) -> Mailbox | None:
    """The mailbox in an SMTP path (``<local@domain>``); None for the null sender ``<>``.

    Raises :class:`AddressRefused` with the reply for anything else.
    """
    malformed = "501 5.1.7 Bad sender address syntax" if sender else "501 5.1.3 Bad destination mailbox address syntax"
    relay = "550 5.7.1 Relaying denied: source routes, % and ! addresses and address literals are not accepted"
    path = path.strip()
    if not (path.startswith("<") and path.endswith(">")):
        raise AddressRefused(malformed)
    inner = path[1:-1]
    if not inner:
        if sender:
            return None
        raise AddressRefused(malformed)
    if inner.startswith("@"):
        raise AddressRefused(relay)
    local, at, domain = inner.rpartition("@")
    if not at or not local:
        raise AddressRefused(malformed)
    if domain.startswith("["):
        raise AddressRefused(relay)
    if local.startswith('"'):
        if not _QUOTED.fullmatch(local):
            raise AddressRefused(malformed)
        if "@" in local or "%" in local:
            raise AddressRefused(relay)
    elif not _DOT_STRING.fullmatch(local):
        raise AddressRefused(malformed)
    elif any(mark in local for mark in _RELAY_MARKS):
        raise AddressRefused(relay)
    try:
        return Mailbox(local, canonical_domain(domain))
    except ValueError:
        raise AddressRefused(malformed) from None

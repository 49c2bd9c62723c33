"""Which addresses a webhook may reach: the SSRF rule, as pure functions.

Used twice: by the config reader (a webhook URL naming a non-public address in
any spelling is refused before anything runs) and by the delivery connection
(:mod:`inbound.delivery.egress`: every address a name resolves to is checked
at connect time). No I/O here.

A URL's host is read the way the parties that will use it read it: browsers
(the WHATWG URL standard) and ``inet_aton`` -- which getaddrinfo, curl and most
HTTP stacks call -- take ``127.1``, ``2130706433``, ``0x7f.0.0.1``,
``0177.0.0.1`` and ``0`` as IPv4 addresses, so this module does too. Python's
:mod:`ipaddress` alone accepts only dotted decimal and would wave those
through as "names".
"""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# The well-known NAT64 prefix (RFC 6052): the IPv4 address in the last 32 bits.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# IPv6 ranges never public, whatever the interpreter's ipaddress tables say (3.11.7's count both as
# global): the local-use NAT64 prefix (RFC 8215), a translator of the operator's own that may reach
# any IPv4 address, placed in bits the last-32-bit reading above does not see in a /48; and the
# deprecated site-local range (RFC 3879), which a network may still route.
_NEVER_PUBLIC = (ipaddress.IPv6Network("64:ff9b:1::/48"), ipaddress.IPv6Network("fec0::/10"))


class NotAHost(ValueError):
    """Looks like an IPv4 address (ends in a number) but is not a valid one."""


def _ipv4_part(part: str) -> int | None:
    """One dotted part as inet_aton / WHATWG read it: 0x hex, leading-0 octal, else decimal."""
    if part[:2].lower() == "0x":
        digits, base = part[2:] or "0", 16
    elif len(part) > 1 and part.startswith("0"):
        digits, base = part[1:], 8
    else:
        digits, base = part, 10
    try:
        return int(digits, base) if digits.isalnum() and digits.isascii() else None
    except ValueError:
        return None


def _ipv4(host: str) -> ipaddress.IPv4Address | None:
    parts = host.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()  # a trailing dot
    numbers = [_ipv4_part(p) if p else None for p in parts]
    if numbers[-1] is None:
        return None  # does not end in a number: a name
    if len(parts) > 4 or None in numbers:
        raise NotAHost(f"{host!r} is neither a name nor an IPv4 address")
    *leading, last = [n for n in numbers if n is not None]
    if any(n > 255 for n in leading) or last >= 256 ** (5 - len(parts)):
        raise NotAHost(f"{host!r} is out of range for an IPv4 address")
    value = last
    for index, number in enumerate(leading):
        value += number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def ip_of(host: str) -> IPAddress | None:
    """The IP address *host* (a URL's host, brackets removed) denotes in any spelling; None for a name."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])  # an IPv6 zone never makes a link-local public
    except ValueError:
        return _ipv4(host)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (IPv4-mapped, NAT64, 6to4), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def is_public(ip: IPAddress) -> bool:
    """Unicast and globally routable: not loopback, private (RFC 1918, ULA), link-local, site-local,
    CGNAT, multicast, reserved or unspecified -- nor an IPv6 form of such an IPv4 address, nor one
    for a local NAT64 translator."""
    if isinstance(ip, ipaddress.IPv6Address):
        if any(ip in net for net in _NEVER_PUBLIC):
            return False
        if (inner := embedded_ipv4(ip)) is not None:
            return is_public(inner)
    # is_global already leaves out loopback, RFC 1918/ULA, link-local, CGNAT, unspecified and the
    # documentation ranges; multicast and the reserved ranges count as "global" there.
    return ip.is_global and not (ip.is_multicast or ip.is_reserved)


def is_loopback_name(host: str) -> bool:
    name = host.rstrip(".").lower()
    return name == "localhost" or name.endswith(".localhost")


def refusal(host: str) -> str | None:
    """Why *host* may not be a webhook's host when private addresses are not allowed; None if it may."""
    if is_loopback_name(host):
        return f"{host!r} is loopback"
    try:
        ip = ip_of(host)
    except NotAHost as exc:
        return str(exc)
    if ip is not None and not is_public(ip):
        return f"{host!r} is {ip}, not a public address"
    return None

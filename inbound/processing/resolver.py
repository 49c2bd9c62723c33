"""DNS for the sender verdicts: one dnspython resolver, time-bounded, with a cache that honours TTLs.

Used by :mod:`inbound.processing.auth` (SPF, DKIM, DMARC and ARC lookups), in
the process stage's worker and, for the SMTP-time policies, in a thread off
the SMTP event loop -- never on the loop itself, since a lookup blocks.

Input: names to look up. Output: TXT strings (for DKIM and DMARC) or pyspf's
record tuples. Every lookup is bounded by ``[auth] timeout``; a timeout or a
server failure raises :class:`DnsTemporaryError`, which the verdicts turn into
``temperror``. "No such name" and "no record" are answers (an empty list),
not errors. Answers, negative ones included, are kept for their TTL by
dnspython's thread-safe ``LRUCache``, shared by every message, so a domain
that sends a thousand messages is looked up once per TTL.

The libraries each ask for DNS in their own shape: dkimpy and authheaders
take a function (``dnsfunc``), pyspf none (see :func:`bind_spf_lookups`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver
import spf

# Enough for the domains of a busy MX between two TTLs; least recently used go first.
CACHE_ENTRIES = 50_000


class DnsTemporaryError(Exception):
    """A lookup that got no usable answer in time: the verdict that needed it is ``temperror``.

    Deliberately not a ``dkim.DKIMException``: dkimpy turns those (and its own
    timeout error) into a plain ``fail``, and a DNS outage must not read as a forgery.
    """


class Resolver:
    """Time-bounded, cached lookups against the configured servers (or the system's)."""

    def __init__(self, nameservers: tuple[tuple[str, int], ...], timeout: float) -> None:
        if nameservers:
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port) for host, port in nameservers]
        else:
            resolver = dns.resolver.Resolver()  # /etc/resolv.conf
        resolver.timeout = timeout  # one try of one server
        resolver.lifetime = timeout  # the whole lookup, retries and servers included
        resolver.cache = dns.resolver.LRUCache(CACHE_ENTRIES)
        self._resolver = resolver

    def records(self, name: str, rdtype: str) -> list[Any]:
        """The rdatas of *name*/*rdtype*; [] when the name or the record does not exist."""
        try:
            answer = self._resolver.resolve(name, rdtype, search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return []
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            raise DnsTemporaryError(f"{name} {rdtype}: {exc}") from exc
        except dns.exception.DNSException:
            return []  # a name that cannot exist (empty or over-long label): nothing is published there
        return list(answer.rrset or [])

    def txt(self, name: str) -> list[bytes]:
        """Each TXT record of *name*, its strings joined (RFC 7208 3.3, RFC 6376 3.6.2.2)."""
        return [b"".join(rdata.strings) for rdata in self.records(name, "TXT")]

    def dkim_key(self, name: bytes, timeout: float = 0) -> bytes | None:
        """dkimpy's ``dnsfunc``: the key record at *name* (``s._domainkey.d.``), or None."""
        del timeout  # ours is the resolver's lifetime
        found = self.txt(name.decode("ascii", errors="replace"))
        return found[0] if found else None

    def dmarc_record(self, name: str) -> str | None:
        """authheaders' ``dnsfunc``: the one ``v=DMARC1`` record at *name* (``_dmarc.domain``), or None.

        Several DMARC records at one name count as none (RFC 7489 6.6.3).
        """
        found = [t.decode("utf-8", errors="replace") for t in self.txt(name) if t.startswith(b"v=DMARC1")]
        return found[0] if len(found) == 1 else None

    def spf_lookup(self, name: str, qtype: str) -> list[tuple[tuple[str, str], Any]]:
        """pyspf's ``DNSLookup`` result shape: ``((name, qtype), value)`` per record."""
        try:
            rdatas = self.records(name, qtype)
        except DnsTemporaryError as exc:
            raise spf.TempError(f"DNS {exc}") from exc
        key = (name, qtype)
        if qtype in ("A", "AAAA"):
            return [(key, r.address) for r in rdatas]
        if qtype == "MX":
            return [(key, (r.preference, r.exchange)) for r in rdatas]
        if qtype == "PTR":
            return [(key, r.target.to_text(True)) for r in rdatas]
        return [(key, r.strings) for r in rdatas]  # TXT and SPF


_spf_binding = threading.local()


def _spf_dns_lookup(name: str, qtype: str, strict: bool = True, timeout: float = 0) -> list[Any]:
    del strict, timeout  # as in pyspf's own: strictness is applied by its caller, time is ours
    resolver: Resolver | None = getattr(_spf_binding, "resolver", None)
    if resolver is None:
        raise spf.TempError("DNS: no resolver bound for this SPF check")
    return resolver.spf_lookup(name, qtype)


@contextmanager
def bind_spf_lookups(resolver: Resolver) -> Iterator[None]:
    """Make pyspf's lookups in this thread go to *resolver*.

    pyspf has no per-call DNS hook: it calls its module-level ``DNSLookup``
    (which uses dnspython's global default resolver). We install one function
    there that answers from the resolver bound to the calling thread, so every
    SPF check still uses its own configured servers and cache.
    """
    spf.DNSLookup = _spf_dns_lookup
    _spf_binding.resolver = resolver
    try:
        yield
    finally:
        _spf_binding.resolver = None

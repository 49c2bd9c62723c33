"""DNS for the sender verdicts: one dnspython resolver, time-bounded, with a cache that honours TTLs.

Used by :mod:`inbound.processing.auth` (SPF, DKIM, DMARC and ARC lookups), in
the process stage's worker and, for the SMTP-time policies, in a thread off
the SMTP event loop -- never on the loop itself, since a lookup blocks.

Input: names to look up. Output: TXT strings (for DKIM and DMARC) or pyspf's
record tuples. All lookups of one message (:class:`MessageLookups`) share one
deadline, ``[auth] timeout`` from its start; a timeout or a server failure
raises :class:`DnsTemporaryError`, which the verdicts turn into
``temperror``. "No such name" and "no record" are answers (an empty list),
not errors. Answers, negative ones included, are kept for their TTL by
dnspython's thread-safe ``LRUCache``, shared by every message, so a domain
that sends a thousand messages is looked up once per TTL.

The libraries each ask for DNS in their own shape: dkimpy and authheaders
take a function (``dnsfunc``), pyspf none (see :func:`bind_spf_lookups`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor
from concurrent.futures import wait as wait_all
from contextlib import contextmanager
from typing import Any

import dns.exception
import dns.name
import dns.nameserver
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import spf

from ..errors import ConfigError

# Enough for the domains of a busy MX between two TTLs; least recently used go first.
CACHE_ENTRIES = 50_000


class DnsTemporaryError(Exception):
    """A lookup that got no usable answer in time: the verdict that needed it is ``temperror``.

    Deliberately not a ``dkim.DKIMException``: dkimpy turns those (and its own
    timeout error) into a plain ``fail``, and a DNS outage must not read as a forgery.
    """


class Resolver:
    """Time-bounded, cached lookups against the configured servers (or the system's); shared by threads."""

    def __init__(
        self, nameservers: tuple[tuple[str, int], ...], timeout: float, system_config: str = "/etc/resolv.conf"
    ) -> None:
        if nameservers:
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port) for host, port in nameservers]
        else:
            try:
                resolver = dns.resolver.Resolver(filename=system_config)
            except dns.resolver.NoResolverConfiguration as exc:
                problem = f"the system names no DNS server ({exc}); list some in [auth] resolvers"
                raise ConfigError(system_config, "auth.resolvers", problem) from None
        resolver.timeout = timeout  # one try of one server
        resolver.lifetime = timeout  # the whole lookup, retries and servers included
        resolver.cache = dns.resolver.LRUCache(CACHE_ENTRIES)
        self._resolver = resolver

    def records(self, name: str, rdtype: str, lifetime: float) -> list[Any]:
        """The rdatas of *name*/*rdtype*; [] when the name or the record does not exist."""
        try:
            answer = self._resolver.resolve(name, rdtype, search=False, raise_on_no_answer=False, lifetime=lifetime)
        except dns.resolver.NXDOMAIN:
            return []
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            raise DnsTemporaryError(f"{name} {rdtype}: {exc}") from exc
        except dns.exception.DNSException:
            return []  # a name that cannot exist (empty or over-long label): nothing is published there
        return list(answer.rrset or [])

    def cached(self, name: str, rdtype: str) -> bool:
        """Whether an answer (or "no such name") for *name*/*rdtype* is in the cache, unexpired."""
        try:
            qname = dns.name.from_text(name)
        except dns.exception.DNSException:
            return True  # not a name: records() answers [] without asking anyone
        cache = self._resolver.cache
        if cache.get((qname, dns.rdatatype.from_text(rdtype), dns.rdataclass.IN)) is not None:
            return True
        negative = cache.get((qname, dns.rdatatype.ANY, dns.rdataclass.IN))
        return negative is not None and negative.response.rcode() == dns.rcode.NXDOMAIN


class MessageLookups:
    """One message's lookups: its deadline, its prefetch, and the adapters each library wants.

    Every lookup gets what is left of the message's time, so the verdicts of one
    message take at most ``[auth] timeout`` however many lookups they make; a name
    that already failed for this message fails again at once instead of waiting again.
    The deadline bounds the waiting for servers only: an answer in the cache is given after it too.
    """

    def __init__(self, resolver: Resolver, timeout: float) -> None:
        self.resolver = resolver
        self.deadline = time.monotonic() + timeout
        self.failed: set[tuple[str, str]] = set()  # added to from prefetch threads: set.add is atomic

    def prefetch(self, pool: Executor, wanted: Iterable[tuple[str, str]]) -> None:
        """Look up at once, concurrently, every name in *wanted* that the cache does not hold.

        The checks then run one after another in the caller's thread and find
        their first lookups answered: a message waits for its slowest lookup,
        not their sum, and a message whose answers are cached hands nothing to
        another thread at all.
        """
        missing = [(n, t) for n, t in dict.fromkeys(wanted) if not self.resolver.cached(n, t)]
        jobs = [pool.submit(self._prefetch_one, name, rdtype) for name, rdtype in missing]
        wait_all(jobs, timeout=max(self.deadline - time.monotonic(), 0))

    def _prefetch_one(self, name: str, rdtype: str) -> None:
        with contextlib.suppress(DnsTemporaryError):  # remembered in self.failed; the check reports it
            self.records(name, rdtype)

    def records(self, name: str, rdtype: str) -> list[Any]:
        if (name, rdtype) in self.failed:
            raise DnsTemporaryError(f"{name} {rdtype}: failed already for this message")
        # 0 once the time is up: dnspython looks in its cache first, and then, with no time left, asks no server.
        left = max(self.deadline - time.monotonic(), 0)
        try:
            return self.resolver.records(name, rdtype, lifetime=left)
        except DnsTemporaryError:
            self.failed.add((name, rdtype))
            raise

    def txt(self, name: str) -> list[bytes]:
        """Each TXT record of *name*, its strings joined (RFC 7208 3.3, RFC 6376 3.6.2.2)."""
        return [b"".join(rdata.strings) for rdata in self.records(name, "TXT")]

    def dkim_key(self, name: bytes, timeout: float = 0) -> bytes | None:
        """dkimpy's ``dnsfunc``: the key record at *name* (``s._domainkey.d.``), or None."""
        del timeout  # ours is the message's deadline
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
    lookups: MessageLookups | None = getattr(_spf_binding, "lookups", None)
    if lookups is None:
        raise spf.TempError("DNS: no lookups bound for this SPF check")
    return lookups.spf_lookup(name, qtype)


@contextmanager
def bind_spf_lookups(lookups: MessageLookups) -> Iterator[None]:
    """Make pyspf's lookups in this thread go to *lookups*.

    pyspf has no per-call DNS hook: it calls its module-level ``DNSLookup``
    (which uses dnspython's global default resolver). We install one function
    there that answers from the lookups bound to the calling thread, so every
    SPF check still uses the configured servers, the cache and its message's deadline.
    """
    spf.DNSLookup = _spf_dns_lookup
    _spf_binding.lookups = lookups
    try:
        yield
    finally:
        _spf_binding.lookups = None

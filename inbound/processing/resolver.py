"""DNS for the sender verdicts: one dnspython resolver, time-bounded, with a cache that honours TTLs.

Used by :mod:`inbound.processing.auth` (SPF, DKIM, DMARC and ARC lookups), in
the process stage's worker and, for the SMTP-time policies, in a thread off
the SMTP event loop -- never on the loop itself, since a lookup blocks.

Input: names to look up. Output: TXT strings (for DKIM and DMARC) or pyspf's
record tuples. All lookups of one message (:class:`MessageLookups`) share one
deadline, ``[auth] timeout`` from its start; a timeout or a server failure
raises :class:`DnsTemporaryError`, which the verdicts turn into
``temperror``. "No such name" and "no record" are answers (an empty list),
not errors. Answers, negative ones included, are kept for their TTL (an hour
at most) in :class:`AnswerCache`, bounded by the memory they take, shared by every
message, so a domain that sends a thousand messages is looked up once per TTL.

The libraries each ask for DNS in their own shape: dkimpy takes a function
(``dnsfunc``), pyspf none (see :func:`bind_spf_lookups`); DMARC's record is
read in auth.py.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
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

# The cache's bound, in bytes of memory: some 16,000 answers of a usual size (SPF, DKIM and DMARC answers
# are 100 bytes to 1.5 KB on the wire), the domains of a busy MX between two TTLs. Least recently used go first.
CACHE_BYTES = 64 * 2**20
# What an answer costs in memory, measured with tracemalloc: some 3 KiB of dnspython's objects whatever its
# size, and 2.2 bytes for each byte of its wire (kept as received, and parsed into rdatas).
ANSWER_OBJECTS_BYTES = 3 * 2**10
BYTES_PER_WIRE_BYTE = 2.2
# An answer larger than this on the wire is not kept (it is asked for again when needed): none that the checks
# need comes near, and a sender that answers every name under its domain with a 60 KB TXT record would fill the
# cache with its own.
MAX_CACHED_ANSWER = 16 * 2**10
# However long the TTL a sender's server gives: a key or policy changed is seen within the hour.
MAX_CACHED_SECONDS = 3600.0


class DnsTemporaryError(Exception):
    """A lookup that got no usable answer in time: the verdict that needed it is ``temperror``.

    Deliberately not a ``dkim.DKIMException``: dkimpy turns those (and its own
    timeout error) into a plain ``fail``, and a DNS outage must not read as a forgery.
    """


class AnswerCache(dns.resolver.CacheBase):
    """dnspython's cache interface, least recently used out first, bounded by the memory its answers take.

    dnspython's own ``LRUCache`` bounds the number of answers only: senders' 60 KB
    TXT answers with a week's TTL, 200 names to a message, grew the process by
    390 MiB in 15 messages, and would have reached some 6 GiB at its 50,000. Not a
    subclass of it: its ``get`` drops expired answers where a count of bytes cannot see.
    Thread-safe under the lock of ``CacheBase``, which also keeps its statistics.
    """

    def __init__(self, max_bytes: int, max_answer_bytes: int, max_seconds: float) -> None:
        super().__init__()
        self.max_bytes = max_bytes
        self.max_answer_bytes = max_answer_bytes
        self.max_seconds = max_seconds
        self.data: OrderedDict[dns.resolver.CacheKey, tuple[dns.resolver.Answer, int]] = OrderedDict()
        self.bytes = 0  # what the answers in data cost in memory, estimated

    def get(self, key: dns.resolver.CacheKey) -> dns.resolver.Answer | None:
        with self.lock:
            entry = self.data.get(key)
            if entry is not None and entry[0].expiration > time.time():
                self.data.move_to_end(key)
                self.statistics.hits += 1
                return entry[0]
            self._remove(key)  # expired, if there at all
            self.statistics.misses += 1
            return None

    def put(self, key: dns.resolver.CacheKey, value: dns.resolver.Answer) -> None:
        wire_bytes = len(value.response.wire or value.response.to_wire())  # as received; built if it never was
        size = ANSWER_OBJECTS_BYTES + int(wire_bytes * BYTES_PER_WIRE_BYTE)
        value.expiration = min(value.expiration, time.time() + self.max_seconds)
        with self.lock:
            self._remove(key)  # the answer it replaces
            if wire_bytes > self.max_answer_bytes:
                return
            while self.data and self.bytes + size > self.max_bytes:
                self._remove(next(iter(self.data)))
            self.data[key] = (value, size)
            self.bytes += size

    def _remove(self, key: dns.resolver.CacheKey) -> None:
        _, size = self.data.pop(key, (None, 0))
        self.bytes -= size


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
        resolver.cache = AnswerCache(CACHE_BYTES, MAX_CACHED_ANSWER, MAX_CACHED_SECONDS)
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
        """The one ``v=DMARC1`` record at *name* (``_dmarc.domain``), or None.

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

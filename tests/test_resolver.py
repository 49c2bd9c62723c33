"""The DNS lookups of the sender verdicts (inbound/processing/resolver.py) against a DNS server on loopback."""

from __future__ import annotations

import gc
import time
import tracemalloc

import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.rrset
import pytest
from dns.rdtypes.ANY.TXT import TXT as TXTRecord

from inbound.processing.resolver import (
    MAX_CACHED_ANSWER,
    MAX_CACHED_SECONDS,
    AnswerCache,
    DnsTemporaryError,
    MessageLookups,
    Resolver,
)
from tests.dnsserver import DnsServer


def test_a_cached_answer_is_given_after_the_message_s_time_for_dns_is_up(dns_server: DnsServer) -> None:
    """A sender's SPF include that never answered used the whole deadline: the prefetched DMARC record was refused."""
    dns_server.txt("_dmarc.bank.example", "v=DMARC1; p=reject")
    resolver = Resolver((("127.0.0.1", dns_server.port),), 5.0)
    MessageLookups(resolver, 5.0).txt("_dmarc.bank.example")
    MessageLookups(resolver, 5.0).txt("nowhere.bank.example")  # "no such name" is cached too
    asked = len(dns_server.queries)

    late = MessageLookups(resolver, 0.0)  # a message whose time is up
    assert late.dmarc_record("_dmarc.bank.example") == "v=DMARC1; p=reject"
    assert late.txt("nowhere.bank.example") == []
    with pytest.raises(DnsTemporaryError):
        late.txt("uncached.bank.example")
    assert len(dns_server.queries) == asked  # no server was asked, cached or not


TXT, IN = dns.rdatatype.TXT, dns.rdataclass.IN


def received(name: str, text: str, ttl: int = 300) -> tuple[dns.resolver.CacheKey, dns.resolver.Answer]:
    """The cache key and the answer dnspython's resolver makes of a server's TXT response (wire kept, as received)."""
    query = dns.message.make_query(name, "TXT")
    response = dns.message.make_response(query)
    strings = [text[i : i + 255].encode() for i in range(0, len(text), 255)]
    response.answer.append(dns.rrset.from_rdata(query.question[0].name, ttl, TXTRecord(IN, TXT, strings)))
    reply = dns.message.from_wire(response.to_wire())
    qname = reply.question[0].name
    return (qname, TXT, IN), dns.resolver.Answer(qname, TXT, IN, reply)


def key(name: str) -> dns.resolver.CacheKey:
    return dns.name.from_text(name), TXT, IN


def test_an_answer_too_large_for_the_cache_is_asked_for_again(dns_server: DnsServer) -> None:
    """A sender's zone answered every name with a 60 KB TXT record: the cache kept up to 50,000 of them (6 GiB)."""
    dns_server.txt("big.evil.test", "A" * 60_000)
    dns_server.txt("evil.test", "v=spf1 -all")
    resolver = Resolver((("127.0.0.1", dns_server.port),), 5.0)
    for _ in range(2):
        assert [len(t) for t in MessageLookups(resolver, 5.0).txt("big.evil.test")] == [60_000]
        assert MessageLookups(resolver, 5.0).txt("evil.test") == [b"v=spf1 -all"]
    assert [dns_server.queries.count((n, "TXT")) for n in ("big.evil.test", "evil.test")] == [2, 1]


def test_the_cache_keeps_the_answers_last_used_within_its_memory() -> None:
    cache = AnswerCache(2**20, MAX_CACHED_ANSWER, MAX_CACHED_SECONDS)
    first, answer = received("first.example", "v=spf1 -all")
    cache.put(first, answer)
    tracemalloc.start()
    try:
        for n in range(300):  # answers of the sizes the checks meet, and some near the largest kept
            cache.put(*received(f"n{n}.example", "k" * (100, 1000, 15_000)[n % 3]))
            assert cache.get(first) is answer  # used again and again: kept
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert cache.bytes <= cache.max_bytes
    assert held <= cache.max_bytes * 1.1  # the estimate of what an answer costs is not short of the truth
    assert cache.get(key("n299.example")) is not None
    assert cache.get(key("n0.example")) is None  # the least recently used went first


def test_the_cache_keeps_an_answer_an_hour_at_most() -> None:
    """A week's TTL, as the big answers had, kept a sender's answers a week."""
    cache = AnswerCache(2**20, MAX_CACHED_ANSWER, MAX_CACHED_SECONDS)
    cache.put(*received("week.example", "v=DMARC1; p=none", ttl=7 * 86_400))
    cache.put(*received("minute.example", "v=DMARC1; p=none", ttl=60))
    now = time.time()
    week, minute = cache.get(key("week.example")), cache.get(key("minute.example"))
    assert week is not None
    assert minute is not None
    assert now + MAX_CACHED_SECONDS - 60 < week.expiration <= now + MAX_CACHED_SECONDS
    assert minute.expiration <= now + 60

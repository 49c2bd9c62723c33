"""The DNS lookups of the sender verdicts (inbound/processing/resolver.py) against a DNS server on loopback."""

from __future__ import annotations

import pytest

from inbound.processing.resolver import DnsTemporaryError, MessageLookups, Resolver
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

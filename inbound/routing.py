"""Routing: which stream owns a recipient address, and which senders a stream blocks.

An immutable table built once from the settings; the SMTP handler asks it at
RCPT time and the processor asks it about senders. Matching is
case-insensitive, compares domains in their IDNA A-label form, and understands plus-addressing: ``local+hash@domain``
matches ``local@domain`` and yields ``hash`` as the mailbox hash. An exact
address wins over a ``*@domain`` wildcard.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from .addresses import mailbox_key, split_address
from .config import StreamSettings


class Verdict(Enum):
    ACCEPT = "accept"
    UNKNOWN_MAILBOX = "unknown_mailbox"  # our domain, no such mailbox: 550 5.1.1
    NOT_OUR_DOMAIN = "not_our_domain"  # we are never a relay: 550 5.7.1


@dataclass(frozen=True, slots=True)
class Route:
    verdict: Verdict
    stream: str | None = None
    mailbox_hash: str | None = None


@dataclass(frozen=True, slots=True)
class RoutingTable:
    exact: dict[str, str]  # "local@domain" -> stream
    wildcard: dict[str, str]  # "domain" -> stream
    domains: frozenset[str]
    blocked: dict[str, tuple[str, ...]]  # stream -> sender patterns, as mailbox_key writes them

    @classmethod
    def from_streams(cls, streams: Sequence[StreamSettings]) -> RoutingTable:
        exact: dict[str, str] = {}
        wildcard: dict[str, str] = {}
        for stream in streams:
            for pattern in stream.addresses:
                local, domain = split_address(pattern)
                if local == "*":
                    wildcard[domain] = stream.name
                else:
                    exact[f"{local.lower()}@{domain}"] = stream.name
        domains = frozenset(wildcard) | frozenset(a.rpartition("@")[2] for a in exact)
        blocked = {s.name: tuple(mailbox_key(p) for p in s.block_senders) for s in streams}
        return cls(exact, wildcard, domains, blocked)

    def route(self, address: str) -> Route:
        local, domain = split_address(address)
        if domain not in self.domains:
            return Route(Verdict.NOT_OUR_DOMAIN)
        base, plus, mailbox_hash = local.partition("+")
        for candidate, hash_ in ((local, None), (base, mailbox_hash if plus else None)):
            stream = self.exact.get(f"{candidate.lower()}@{domain}")
            if stream is not None:
                return Route(Verdict.ACCEPT, stream, hash_ or None)
        stream = self.wildcard.get(domain)
        if stream is not None:
            return Route(Verdict.ACCEPT, stream, (mailbox_hash if plus else None) or None)
        return Route(Verdict.UNKNOWN_MAILBOX)

    def is_blocked(self, stream: str, sender: str) -> bool:
        if not sender.strip().strip("<>"):
            return False
        key = mailbox_key(sender)
        domain = key.rpartition("@")[2]
        return any(p in (key, f"*@{domain}") for p in self.blocked.get(stream, ()))

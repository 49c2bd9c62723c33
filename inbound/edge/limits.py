"""How much the SMTP edge holds: connections, in total and per client address, and DATA in memory.

An MX faces the whole internet: a scanner or a slow-drip attacker may open
hundreds of connections and send nothing. Each connection costs a little
memory and a file descriptor, so both totals are capped (Postfix's defaults:
``smtpd_client_connection_count_limit`` is 50, ``default_process_limit`` 100;
ours are a little higher since a connection here is a coroutine, not a
process). A connection beyond either cap gets ``421 4.7.0`` and is closed at
once, so legitimate clients from other addresses keep their room.

Each message is held in memory from its first byte of DATA until the spool has it, and a client
may send ``smtp.max_message_size`` on each of its connections: 20 connections from one address
held 500 MB, 300 from a few addresses would hold 7.5 GB. So the bytes held across all sessions are
capped too (:class:`DataBudget`): DATA that would go over is read to its end and dropped, and
answered ``452 4.3.1``, a temporary failure its sender retries.

A cap anyone can fill is a way to refuse everyone's mail, so it is shaped: the first
``UNCOUNTED`` bytes of each message are not counted (mail of ordinary size goes through while
large messages fill the cap, at a cost of at most ``smtp.max_connections`` times that), and one
client address may hold at most half of the cap, or one message of the largest size if that is
more (filling it takes several addresses).

Both live on the event loop's thread only: no lock.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass, field

# What one client is, for IPv6: a network of this prefix, the least any site is given, so one host
# cannot be a new client at each of its 2**64 addresses (Postfix 3.8 groups at /84 by default).
IPV6_PREFIX = 64


def counted_as(ip: str) -> str:
    """The client the limits count *ip* as: an IPv4 address as it is (an IPv4-mapped IPv6 one too), an
    IPv6 address as its network of :data:`IPV6_PREFIX`; anything else (no address) as it came."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False))
    return str(address)


@dataclass
class ConnectionLimits:
    max_total: int
    max_per_client: int
    per_client: Counter[str] = field(default_factory=Counter)
    total: int = 0

    def opened(self, client: str) -> str | None:
        """Count a new connection; the refusal to send it when it is one too many, else None."""
        self.total += 1
        self.per_client[client] += 1
        if self.total > self.max_total:
            return "421 4.7.0 Too many connections, try again later"
        if self.per_client[client] > self.max_per_client:
            return "421 4.7.0 Too many connections from your address, try again later"
        return None

    def closed(self, client: str) -> None:
        self.total -= 1
        self.per_client[client] -= 1
        if not self.per_client[client]:
            del self.per_client[client]


# Bytes at the start of each message that DataBudget does not count.
UNCOUNTED = 1024 * 1024


def counted(size: int, block: int) -> int:
    """Of a *block* that brought a message to *size* bytes, how many DataBudget counts."""
    return max(0, size - UNCOUNTED) - max(0, size - block - UNCOUNTED)


@dataclass
class DataBudget:
    """Bytes of DATA held in memory across all sessions (beyond each message's uncounted start)."""

    limit: int
    per_client: int  # of the limit, what one client address may hold
    held: int = 0
    by_client: Counter[str] = field(default_factory=Counter)

    @classmethod
    def of(cls, limit: int, max_message_size: int) -> DataBudget:
        return cls(limit, max(limit // 2, min(limit, max_message_size)))

    def take(self, client: str, size: int) -> bool:
        """Hold *size* more bytes for *client* if both caps allow; whether it did."""
        if self.held + size > self.limit or self.by_client[client] + size > self.per_client:
            return False
        self.held += size
        self.by_client[client] += size
        return True

    def give_back(self, client: str, size: int) -> None:
        self.held -= size
        self.by_client[client] -= size
        if not self.by_client[client]:
            del self.by_client[client]

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

Both live on the event loop's thread only: no lock.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


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


@dataclass
class DataBudget:
    """Bytes of DATA held in memory across all sessions, against a cap."""

    limit: int
    held: int = 0

    def take(self, size: int) -> bool:
        """Hold *size* more bytes if the cap allows; whether it did."""
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def give_back(self, size: int) -> None:
        self.held -= size

"""How many connections the SMTP edge holds, in total and per client address.

An MX faces the whole internet: a scanner or a slow-drip attacker may open
hundreds of connections and send nothing. Each connection costs a little
memory and a file descriptor, so both totals are capped (Postfix's defaults:
``smtpd_client_connection_count_limit`` is 50, ``default_process_limit`` 100;
ours are a little higher since a connection here is a coroutine, not a
process). A connection beyond either cap gets ``421 4.7.0`` and is closed at
once, so legitimate clients from other addresses keep their room.

The table lives on the event loop's thread only: no lock.
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

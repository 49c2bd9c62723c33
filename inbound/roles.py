"""The roles ``inbound serve --roles`` runs, and the check of the data directory before any of them starts.

Apart from :mod:`inbound.service` so that the supervisor, which runs no role itself,
checks the data directory without importing every stage (about 25 MB of memory it
would hold for nothing).
"""

from __future__ import annotations

from collections.abc import Sequence

from .config import Settings
from .ops.integrity import check_databases

ROLES = ("smtp", "publish", "process", "deliver", "record", "api")
DEFAULT_ROLES = ROLES[:-1]  # the pipeline; the API is asked for by name
# Roles that keep state in the data directory (spool, outbox, activity); with the embedded
# bus every role does.
STATEFUL_ROLES = frozenset({"smtp", "publish", "deliver", "record", "api"})


def parse_roles(text: str) -> tuple[str, ...]:
    roles = tuple(r.strip() for r in text.split(",") if r.strip())
    unknown = [r for r in roles if r not in ROLES]
    if unknown or not roles:
        raise ValueError(f"unknown role(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(ROLES)}")
    return roles


def preflight(settings: Settings, roles: Sequence[str] = ROLES) -> None:
    """Refuse a data directory that is missing, unmarked or unwritable; quarantine damaged databases.

    Only where these roles keep state there: with Kafka, a process of the stateless role runs anywhere.
    """
    if settings.bus.backend == "embedded" or STATEFUL_ROLES & set(roles):
        settings.data.check(allow_shared=settings.storage.allow_shared_permissions)
        check_databases(settings.data)

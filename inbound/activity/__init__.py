"""The activity store: what happened to each delivery, as the CLI and the record stage see it.

It is a view rebuilt from the bus (the source of truth), so backends are
interchangeable: ``open_store(settings)`` opens the one ``[activity] backend``
names and every caller uses only :class:`ActivityStore`. A new backend is one
entry in ``_BACKENDS`` (and in ``config.ACTIVITY_BACKENDS``) plus one
parameter in ``tests/test_activity_store.py``.
"""

from __future__ import annotations

from collections.abc import Callable

from ..config import Settings
from ._base import ActivityRecord, ActivityStore, Claimed, RecordedAttempt
from .sqlite import SQLiteActivityStore

__all__ = [
    "BACKENDS",
    "ActivityRecord",
    "ActivityStore",
    "Claimed",
    "RecordedAttempt",
    "SQLiteActivityStore",
    "open_store",
]


def _postgresql(settings: Settings) -> ActivityStore:
    from .postgresql import PostgresActivityStore  # imported lazily: psycopg loads libpq

    return PostgresActivityStore(settings.activity.dsn)


_BACKENDS: dict[str, Callable[[Settings], ActivityStore]] = {
    "sqlite": lambda settings: SQLiteActivityStore(settings.data.activity),
    "postgresql": _postgresql,
}

#: The backend names open_store() accepts.
BACKENDS = tuple(_BACKENDS)


def open_store(settings: Settings) -> ActivityStore:
    """The activity store ``[activity] backend`` names (config validation has checked the name)."""
    return _BACKENDS[settings.activity.backend](settings)

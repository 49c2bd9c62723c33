"""The activity store: what happened to each delivery, as the CLI and the record stage see it.

It is a view rebuilt from the bus (the source of truth), so backends are
interchangeable: ``open_store(backend, data_dir)`` picks one by name and every
caller uses only :class:`ActivityStore`. A new backend is one entry in
``_BACKENDS`` plus one parameter in ``tests/test_activity_store.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ._base import ActivityRecord, ActivityStore, RecordedAttempt
from .sqlite import SQLiteActivityStore

__all__ = ["BACKENDS", "ActivityRecord", "ActivityStore", "RecordedAttempt", "SQLiteActivityStore", "open_store"]

_BACKENDS: dict[str, Callable[[Path], ActivityStore]] = {
    "sqlite": lambda data_dir: SQLiteActivityStore(data_dir / "activity.db"),
}

#: The backend names open_store() accepts.
BACKENDS = tuple(_BACKENDS)


def open_store(backend: str, data_dir: Path) -> ActivityStore:
    """The activity store *backend* keeps under *data_dir*; ValueError for an unknown name."""
    try:
        factory = _BACKENDS[backend]
    except KeyError:
        known = ", ".join(sorted(_BACKENDS))
        raise ValueError(f"unknown activity store backend {backend!r} (known: {known})") from None
    return factory(data_dir)

"""The reading of one TOML table after another: typed getters that note a problem and read on.

The base of the section readers (``sections.py``, ``streams.py``); ``load.py``
puts them together.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ..durations import parse_duration
from .checks import split_host_port

T = TypeVar("T")


class Reader:
    """Walks the parsed TOML, checking each key and remembering where it is.

    It reads on past a problem, so that one pass finds them all (the loader, ``load.py``, then
    raises one ConfigError listing every problem). A key that cannot be read -- missing, of the wrong
    type, not convertible -- is read as a placeholder (its default, mostly) that lets the
    reading go on, and is *unusable*: later checks of it say nothing, since they would only
    judge the placeholder. A placeholder never leaves this class.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[tuple[str, str]] = []  # (key, problem), in the order they are found
        self.unusable: set[str] = set()

    def problem(self, key: str, problem: str) -> None:
        if key not in self.unusable and (key, problem) not in self.problems:
            self.problems.append((key, problem))

    def unreadable(self, key: str, problem: str) -> None:
        """*key*'s value is replaced by a placeholder; *problem* says why."""
        self.problem(key, problem)
        self.unusable.add(key)

    def table(self, raw: dict[str, Any], key: str, allowed: set[str]) -> dict[str, Any]:
        value = raw.get(key, {})
        if not isinstance(value, dict):
            self.unreadable(key, f"must be a table, not {type(value).__name__}")
            return {}
        for unknown in sorted(set(value) - allowed):
            self.problem(f"{key}.{unknown}", f"unknown key (known: {', '.join(sorted(allowed))})")
        return value

    def get(self, table: dict[str, Any], section: str, key: str, kind: type[T], default: T) -> T:
        value = table.get(key, default)
        # bool is an int in Python; a TOML `true` where a number belongs is a mistake.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.unreadable(f"{section}.{key}", f"must be {kind.__name__}, not {type(value).__name__} ({value!r})")
            return default
        return value

    def check(self, key: str, ok: bool, problem: str) -> bool:
        if not ok:
            self.problem(key, problem)
        return ok

    def strings(self, table: dict[str, Any], section: str, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = table.get(key, list(default))
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.unreadable(f"{section}.{key}", "must be a list of strings")
            return default
        return tuple(value)

    def converted(self, key: str, value: str, convert: Callable[[str], T], placeholder: T) -> T:
        try:
            return convert(value)
        except ValueError as exc:
            self.unreadable(key, str(exc))
            return placeholder

    def valid(self, key: str, value: str, check: Callable[[str], object]) -> None:
        """*check* raises ValueError saying what is wrong with *value* (what it returns is not needed)."""
        try:
            check(value)
        except ValueError as exc:
            self.problem(key, str(exc))

    def location(self, t: dict[str, Any], section: str, key: str, default: str) -> Path:
        """A file or directory, relative to the config file's own directory (so the service finds the same
        files wherever it is started); never with a NUL, which no system call takes."""
        given = self.get(t, section, key, str, default)
        if "\0" in given:
            self.unreadable(f"{section}.{key}", "must not contain a NUL character")
            given = default
        path = Path(given)
        return path if path.is_absolute() else self.path.parent / path

    def duration(self, t: dict[str, Any], section: str, key: str, default: str) -> float:
        """A duration such as ``"30s"`` or ``"7d"`` (:func:`parse_duration`) in seconds."""
        given = self.get(t, section, key, str, default)
        return self.converted(f"{section}.{key}", given, parse_duration, parse_duration(default))

    def host_port(self, t: dict[str, Any], section: str, key: str, default: str) -> tuple[str, int]:
        given = self.get(t, section, key, str, default)
        return self.converted(f"{section}.{key}", given, split_host_port, split_host_port(default))

    def number(self, t: dict[str, Any], section: str, key: str) -> float | None:
        """An optional number: TOML's int or float (a bool is not one, nor TOML's inf and nan)."""
        value = t.get(key)
        if value is None:
            return None
        if not isinstance(value, int | float) or isinstance(value, bool):
            self.problem(f"{section}.{key}", "must be a number")
            return None
        try:
            number = float(value)
        except OverflowError:  # an int of more digits than a float holds
            number = math.inf
        return number if self.check(f"{section}.{key}", math.isfinite(number), "must be a finite number") else None

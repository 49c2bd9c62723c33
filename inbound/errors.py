"""Every exception inbound raises on purpose, in one tree.

The split that matters is *temporary* (try again later: SMTP 4xx, a retried
delivery, an uncommitted offset) versus *permanent* (give up: SMTP 5xx, a
Failed record)::

    InboundError
    ├── ConfigError            bad configuration: names the file and the key
    ├── DataDirError           data directory missing, unwritable or not ours
    ├── TemporaryError         the same call may work later
    │   ├── SpoolError         the spool could not make a message durable (451)
    │   ├── BusError           the bus did not take or give records
    │   └── StoreError         the activity store could not be written
    └── PermanentError         the same call will never work
        └── ParseError         a message that cannot be turned into a payload
"""

from __future__ import annotations

from collections.abc import Sequence


class InboundError(Exception):
    """Base of every error inbound raises on purpose."""


class ConfigError(InboundError):
    """The configuration is invalid: one or more problems, each naming the file and the key.

    ``str()`` is one line per problem, ``<file>: <key>: <problem>``, so that whoever fixes
    the file sees every problem at once and a log gets one line for each (:attr:`lines`).
    """

    def __init__(self, path: str, key: str, problem: str, *, more: Sequence[tuple[str, str]] = ()) -> None:
        self.path = path
        self.problems = ((key, problem), *more)  # (key, problem); an empty key: the file as a whole
        super().__init__("\n".join(self.lines))

    @property
    def lines(self) -> list[str]:
        return [
            f"{self.path}: {key}: {problem}" if key else f"{self.path}: {problem}" for key, problem in self.problems
        ]

    def summary(self) -> str:
        """What a command or a process that cannot start prints: a heading, then the problems."""
        count = len(self.problems)
        return f"configuration error: {self}" if count == 1 else f"{count} configuration errors:\n{self}"


class DataDirError(InboundError):
    """The data directory cannot be used (missing, unwritable, or lacks its marker)."""


class TemporaryError(InboundError):
    """Something that may work if tried again later."""


class SpoolError(TemporaryError):
    """A message could not be made durable in the spool."""


class BusError(TemporaryError):
    """The bus did not durably take records, or could not give them."""


class StoreError(TemporaryError):
    """The activity store could not be read or written."""


class PermanentError(InboundError):
    """Something that will fail the same way however often it is tried."""


class ParseError(PermanentError):
    """A message could not be turned into a payload."""

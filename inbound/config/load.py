"""Loading: the file read, every section checked, one Settings -- or one ConfigError listing every problem.

This is the only module that reads the environment: ``INBOUND_CONFIG`` (the
default config path) and ``INBOUND_DATA_DIR`` (overrides ``storage.data_dir``,
so one config file serves containers that each mount their own volume).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .sections import SectionsReader
from .settings import Settings
from .streams import StreamsReader

DEFAULT_CONFIG = "inbound.toml"


def default_config_path() -> Path:
    return Path(os.environ.get("INBOUND_CONFIG", DEFAULT_CONFIG))


def load_settings(path: Path, environ: Mapping[str, str] = os.environ) -> Settings:
    """Read and validate *path*; raise one ConfigError naming every problem and its key."""
    try:
        with path.open("rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(str(path), "", "file not found") from None
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            str(path), "", f"not UTF-8: byte {exc.object[exc.start]:#04x} at offset {exc.start}"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "", f"not valid TOML: {exc}") from None
    except RecursionError:
        # tomllib parses nested arrays and inline tables recursively; a config is never that deep.
        raise ConfigError(str(path), "", "not valid TOML: nested too deeply") from None
    settings = _Reader(path).settings(raw)
    if environ.get("INBOUND_DATA_DIR"):
        storage = replace(settings.storage, data_dir=Path(environ["INBOUND_DATA_DIR"]))
        settings = replace(settings, storage=storage)
    return settings


class _Reader(SectionsReader, StreamsReader):
    """The reader of every section."""

    def settings(self, raw: dict[str, Any]) -> Settings:
        sections = {"smtp", "storage", "bus", "activity", "webhooks", "auth", "spam", "processing", "streams", "http"}
        for unknown in sorted(set(raw) - sections):
            self.problem(unknown, f"unknown section (known: {', '.join(sorted(sections))})")
        # In the order of the file's usual layout (examples/inbound.toml), [[streams]] last, so the
        # problems come in that order too; the streams are checked against the sections they need.
        smtp, storage, bus, activity = self.smtp(raw), self.storage(raw), self.bus(raw), self.activity(raw)
        webhooks, auth, spam = self.webhooks(raw), self.auth(raw), self.spam(raw)
        processing, http = self.processing(raw), self.http(raw)
        settings = Settings(
            path=self.path,
            smtp=smtp,
            storage=storage,
            bus=bus,
            activity=activity,
            webhooks=webhooks,
            auth=auth,
            spam=spam,
            processing=processing,
            streams=self.streams(raw, webhooks.allow_private, auth, spam),
            http=http,
        )
        if self.problems:
            (key, problem), *more = self.problems
            raise ConfigError(str(self.path), key, problem, more=more)
        return settings

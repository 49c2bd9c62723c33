"""What the commands of ``inbound`` share: the ``--config`` option, and settings, the bus and the
activity store opened with errors a reader can act on (click's, exit 2 or 1), not tracebacks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..config import Settings, default_config_path, load_settings
from ..errors import ConfigError, InboundError

if TYPE_CHECKING:
    from ..activity import ActivityStore
    from ..bus import Bus

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Configuration file [default: ./inbound.toml or $INBOUND_CONFIG].",
)


def settings_from(config_path: Path | None) -> Settings:
    try:
        return load_settings(config_path or default_config_path())
    except ConfigError as exc:
        # one problem a line, each naming the file and the key, so that one run shows them all
        raise click.ClickException(exc.summary()) from None


def known_stream(settings: Settings, stream: str | None) -> str | None:
    """*stream* if the configuration has it (or None); else a usage error listing the streams there are."""
    names = [s.name for s in settings.streams]
    if stream is not None and stream not in names:
        raise click.BadParameter(
            f"no stream named {stream!r} in {settings.path} (streams: {', '.join(names) or 'none'})",
            param_hint="--stream",
        )
    return stream


def checked_data_dir(settings: Settings) -> None:
    """Stop the command, as serve stops, if the data directory is not one inbound made and may use:
    opened there, the embedded bus or the SQLite store would be made anew, on what may be an unmounted
    volume's mount point, and act on nothing."""
    try:
        settings.data.check(allow_shared=True)
    except InboundError as exc:
        raise click.ClickException(str(exc)) from None


def bus_of(settings: Settings, *, make_topics: bool = True) -> Bus:
    """The bus, its topics made unless *make_topics* is False (only to read: with Kafka down, no call is made yet)."""
    from ..bus import TOPICS, open_bus

    if settings.bus.backend == "embedded":
        checked_data_dir(settings)
    try:
        bus = open_bus(settings)
        if make_topics:
            bus.ensure_topics(TOPICS)
    except InboundError as exc:
        raise click.ClickException(f"cannot reach the bus: {exc}") from None
    return bus


def store_of(settings: Settings) -> ActivityStore:
    from ..activity import open_store

    if settings.activity.backend == "sqlite":
        checked_data_dir(settings)
    try:
        return open_store(settings)
    except InboundError as exc:
        raise click.ClickException(str(exc)) from None


@contextlib.contextmanager
def bus_and_store(settings: Settings, failure: str) -> Iterator[tuple[Bus, ActivityStore]]:
    """The bus and the activity store, closed afterwards; an InboundError ends the command with *failure*."""
    bus = bus_of(settings)
    store = store_of(settings)
    try:
        yield bus, store
    except InboundError as exc:
        raise click.ClickException(f"{failure}: {exc}") from None
    finally:
        store.close()
        bus.close()

"""``inbound message raw``, ``retry``, ``bypass`` and ``replay``: an accepted message read back, or sent again."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..clock import rfc3339
from ..config import check_webhook_url
from ..errors import InboundError
from .actions import REPLAYABLE
from .cliutil import bus_and_store, bus_of, config_option, known_stream, settings_from

if TYPE_CHECKING:
    from collections.abc import Collection
    from typing import Protocol

    from ..activity import ActivityStore
    from ..bus import Bus

    class Action(Protocol):
        """retry, bypass: the generation queued."""

        def __call__(self, bus: Bus, store: ActivityStore, delivery_id: str, *, streams: Collection[str]) -> int: ...


@click.group()
def message() -> None:
    """One accepted message, read back from the bus."""


@message.command("raw")
@config_option
@click.argument("message_id", metavar="ID")
def message_raw(config_path: Path | None, message_id: str) -> None:
    """Write message ID (delivery id or queue id) as received, to stdout: inbound message raw ID > message.eml

    It can be fetched while the bus holds it: on Kafka for bus.retention.
    """
    from .rawmessage import queue_id_of, raw_message, retention_of

    try:
        queue_id_of(message_id)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="ID") from None
    settings = settings_from(config_path)
    bus = bus_of(settings)
    try:
        raw = raw_message(bus, retention_of(settings.bus), message_id)
    except InboundError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        bus.close()
    sys.stdout.buffer.write(raw)
    sys.stdout.buffer.flush()


@click.command()
@config_option
@click.argument("delivery_id")
def retry(config_path: Path | None, delivery_id: str) -> None:
    """Send a failed message again (a new generation of attempts, same webhook-id)."""
    from .actions import retry as retry_message

    _send_again(config_path, delivery_id, retry_message, "retry", "queued for delivery again")


@click.command()
@config_option
@click.argument("delivery_id")
def bypass(config_path: Path | None, delivery_id: str) -> None:
    """Deliver a Blocked message after all (processed again for its stream, past its block rules)."""
    from .actions import bypass as bypass_message

    _send_again(config_path, delivery_id, bypass_message, "bypass", "queued for delivery past its block rules")


def _send_again(config_path: Path | None, delivery_id: str, action: Action, name: str, said: str) -> None:
    settings = settings_from(config_path)
    with bus_and_store(settings, f"could not queue the {name}") as (bus, store):
        generation = action(bus, store, delivery_id, streams={stream.name for stream in settings.streams})
    click.echo(f"{delivery_id}: {said} (generation {generation})")


def _utc_time(value: str | None) -> str | None:
    """An ISO 8601 time (a zone is required) as the activity store keeps times: RFC 3339, UTC, milliseconds."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time (e.g. 2026-11-23T09:00:00Z)") from None
    if moment.tzinfo is None:
        raise click.BadParameter(f"{value!r} has no time zone (add Z or +01:00)")
    try:
        return rfc3339(moment.timestamp())
    except (ValueError, OverflowError):  # year 1 east of UTC, or 9999 west of it: no such UTC time
        raise click.BadParameter(f"{value!r} is outside the years 1 to 9999 in UTC") from None


@click.command()
@config_option
@click.option("--stream", required=True, help="The stream whose messages to send again.")
@click.option("--since", required=True, help="From this time (ISO 8601 with a zone), by when they were received.")
@click.option("--until", default=None, help="Up to (not including) this time.")
@click.option("--status", type=click.Choice(sorted(REPLAYABLE)), default="all", show_default=True)
@click.option("--to", "to", default=None, help="Send them to this URL instead of the stream's webhook.")
def replay(  # click passes every option by name
    *, config_path: Path | None, stream: str, since: str, until: str | None, status: str, to: str | None
) -> None:
    """Send a time window of a stream's messages again, each with its own webhook-id."""
    from rich.progress import Progress

    from .actions import replay as replay_records
    from .actions import replay_window

    settings = settings_from(config_path)
    known_stream(settings, stream)
    if to is not None:
        try:
            check_webhook_url(to, settings.webhooks.allow_private)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--to") from None
    start, end = _utc_time(since), _utc_time(until)
    assert start is not None
    with bus_and_store(settings, "replay stopped (run it again: a message sent twice keeps its webhook-id)") as (
        bus,
        store,
    ):
        window = replay_window(store, stream, start, end, status)
        with Progress() as progress:
            task = progress.add_task(f"replaying {stream}", total=len(window))
            done = replay_records(bus, store, window, to=to, sent=lambda count: progress.advance(task, count))
    for delivery_id, why in sorted(done.not_sent.items()):
        click.echo(f"{delivery_id}: not sent: {why}", err=True)
    left_out = f"; {len(done.not_sent)} not sent (above)" if done.not_sent else ""
    click.echo(f"{len(done.generations)} message(s) of {stream} queued for delivery again{left_out}")

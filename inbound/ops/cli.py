"""The ``inbound`` command: thin wrappers over the modules, with clear errors and exit codes.

Every command takes ``--config FILE`` (default ``inbound.toml``, or
``$INBOUND_CONFIG``). Errors print one line naming what is wrong and exit 2
(bad input or configuration) or 1 (the operation failed).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .. import cpus as cpu_placement
from .. import log as logsetup
from ..clock import rfc3339
from ..config import Settings, check_webhook_url, default_config_path, load_settings, split_host_port
from ..datadir import private_files
from ..errors import ConfigError, InboundError
from ..events import Status
from ..printable import printable
from ..records import JSON
from .actions import REPLAYABLE

if TYPE_CHECKING:
    from ..activity import ActivityRecord, ActivityStore
    from ..bus import Bus

REPLAY_BATCH = 100  # messages per flush while replaying: the progress bar moves, the bus gets batches

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
        count = len(exc.problems)
        # one problem a line, each naming the file and the key, so that one run shows them all
        raise click.ClickException(
            f"configuration error: {exc}" if count == 1 else f"{count} configuration errors:\n{exc}"
        ) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="inbound")
def main() -> None:
    """inbound: SMTP in, signed webhook JSON out, every message recorded."""
    private_files()  # whatever a command creates under the data directory is its owner's only


@main.command("check-config")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path), required=False)
@config_option
def check_config(file: Path | None, config_path: Path | None) -> None:
    """Validate a configuration file; list every problem, one a line, and exit non-zero if any."""
    settings = settings_from(file or config_path)
    click.echo(f"{settings.path}: OK ({len(settings.streams)} stream(s), bus={settings.bus.backend})")


@main.command()
@config_option
def init(config_path: Path | None) -> None:
    """Create the data directory and its identity marker (safe to run again)."""
    settings = settings_from(config_path)
    created, identity = settings.data.init()
    state = "created" if created else "already initialised"
    click.echo(f"{settings.storage.data_dir}: {state} (id {identity})")


@main.command()
@config_option
@click.option(
    "--roles",
    default=None,
    help="Run only these stages, in this one process (comma-separated: smtp, publish, process, deliver, record)."
    " Default: a supervisor with an edge process (smtp,publish) and a pipeline process (the rest).",
)
@click.option("--log-level", default="INFO", show_default=True)
@click.option("--ready-fd", type=int, default=None, hidden=True, help="Write one byte here once started.")
@click.option("--release-fd", type=int, default=None, hidden=True, help="After draining, wait for EOF here.")
@click.option(
    "--cpus", default=None, hidden=True, help="Run on these CPUs (comma-separated); the parse worker anywhere."
)
@click.option(
    "--log-format",
    type=click.Choice(logsetup.FORMATS),
    default="text",
    show_default=True,
    envvar="INBOUND_LOG_FORMAT",  # so that processes serve starts log alike
    help="json: one object per line (time, level, stage, queue_id, delivery_id, stream, message).",
)
def serve(
    *,  # click passes every option by name
    config_path: Path | None,
    roles: str | None,
    log_level: str,
    ready_fd: int | None,
    release_fd: int | None,
    cpus: str | None,
    log_format: str,
) -> None:
    """Run the service until SIGTERM or SIGINT."""
    settings = settings_from(config_path)
    if settings.data.marker.exists():  # before any stage is imported: metrics count into the data directory
        from ..metrics import use_data_dir

        use_data_dir(settings.storage.data_dir)
    from ..roles import parse_roles, preflight

    try:
        chosen = parse_roles(roles) if roles is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--roles") from None
    try:
        pinned = cpu_placement.parse_cpus(cpus) if cpus is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--cpus") from None
    if pinned is not None and chosen is None:  # the supervisor places its children itself
        raise click.BadParameter("only with --roles", param_hint="--cpus")
    logsetup.configure(log_level, log_format)
    os.environ["INBOUND_LOG_FORMAT"] = log_format  # inherited by any process serve starts
    try:
        if chosen is None:
            from ..supervisor import Supervisor

            preflight(settings)
            placement = cpu_placement.placement(cpu_placement.allowed()) if settings.processing.pin_pipeline else {}
            sys.exit(Supervisor(settings.path, log_level, cpus=placement).run())
        import asyncio  # the supervisor above runs no event loop

        from ..service import Service  # every stage: only in a process that runs roles

        # Before any thread starts, so that every one runs there; the parse worker may run anywhere.
        worker_cpus = cpu_placement.pin(pinned) if pinned is not None else None
        released = (lambda: _until_closed(release_fd)) if release_fd is not None else None
        service = Service(settings, chosen, worker_cpus=worker_cpus)
        asyncio.run(service.run(on_started=lambda: _say_ready(ready_fd), released=released))
    except InboundError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot start: {exc}") from None


def _say_ready(fd: int | None) -> None:
    """Tell the supervisor that started this process that it is serving."""
    if fd is not None:
        os.write(fd, b"1")
        os.close(fd)


async def _until_closed(fd: int) -> None:
    """Return once the supervisor closes its end of *fd* (it has stopped everything else, or died)."""
    import asyncio  # already imported by serve, which runs this

    closed = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(fd, closed.set)
    await closed.wait()
    loop.remove_reader(fd)


@main.command()
@config_option
@click.option("--listen", default="127.0.0.1:8025", show_default=True, help="host:port to listen on.")
def devhook(config_path: Path | None, listen: str) -> None:
    """A development webhook receiver: prints payloads and checks their signatures."""
    from .devhook import serve as serve_devhook

    settings = settings_from(config_path)
    try:
        host, port = split_host_port(listen)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--listen") from None
    serve_devhook(settings, host, port)


@main.group()
def activity() -> None:
    """What happened to each message: list, show."""


def _known_stream(settings: Settings, stream: str | None) -> str | None:
    """*stream* if the configuration has it (or None); else a usage error listing the streams there are."""
    names = [s.name for s in settings.streams]
    if stream is not None and stream not in names:
        raise click.BadParameter(
            f"no stream named {stream!r} in {settings.path} (streams: {', '.join(names) or 'none'})",
            param_hint="--stream",
        )
    return stream


def _when(rfc3339_text: str | None) -> str:
    """A stored time (RFC 3339, UTC) for a table: to the second, and saying its zone."""
    return f"{rfc3339_text[:19].replace('T', ' ')} UTC" if rfc3339_text else ""


def _store(settings: Settings) -> ActivityStore:
    from ..activity import open_store

    try:
        return open_store(settings)
    except InboundError as exc:
        raise click.ClickException(str(exc)) from None


@activity.command("list")
@config_option
@click.option("--status", type=click.Choice([s.value for s in Status]), default=None)
@click.option("--stream", default=None)
@click.option("--limit", type=click.IntRange(1), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def activity_list(config_path: Path | None, status: str | None, stream: str | None, limit: int, as_json: bool) -> None:
    """Messages, newest first."""
    settings = settings_from(config_path)
    stream = _known_stream(settings, stream)
    store = _store(settings)
    try:
        records = store.list(status=Status(status) if status else None, stream=stream, limit=limit)
    except InboundError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        for record in records:
            click.echo(json.dumps(record.to_json()))
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    def cell(value: str) -> Text:
        # Text, not str: rich reads a str as markup, and a subject of "[/b]" failed the whole listing.
        return Text(printable(value))

    table = Table(box=None)
    # The id and status are what a reader acts on (`activity show ID`): never cut them short.
    table.add_column("id", overflow="fold")
    table.add_column("received", no_wrap=True)
    for name in ("stream", "from", "to", "subject"):
        table.add_column(name, overflow="ellipsis", no_wrap=True)
    table.add_column("status", overflow="fold")
    for r in records:
        texts = (r.delivery_id, _when(r.received_at), r.stream, r.mail_from or "", ", ".join(r.to), r.subject or "")
        table.add_row(*map(cell, texts), r.status.value)
    console = Console()
    # Piped output has no width to fit: keep rows whole rather than squeeze them into 80 columns.
    (console if console.is_terminal else Console(width=240)).print(table)


@activity.command("show")
@config_option
@click.argument("message_id", metavar="ID")
@click.option("--payload", "with_payload", is_flag=True, help="Print the webhook body too.")
@click.option("--json", "as_json", is_flag=True)
def activity_show(config_path: Path | None, message_id: str, with_payload: bool, as_json: bool) -> None:
    """One message: status, attempts and attachments. ID: a delivery id, or a queue id (every stream's record)."""
    from .actions import find_all

    store = _store(settings_from(config_path))
    try:
        records = find_all(store, message_id)
    except InboundError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()
    shown = [_shown(record, with_payload) for record in records]
    if as_json:
        whole = shown[0] if records[0].delivery_id == message_id else {"queue_id": message_id, "deliveries": shown}
        click.echo(json.dumps(whole, indent=2, ensure_ascii=False))
        return
    for n, data in enumerate(shown):
        if n:
            click.echo()
        _print_record(data)


def _shown(record: ActivityRecord, with_payload: bool) -> dict[str, Any]:
    data = {**record.to_json(), "attachment_list": _attachments(record), "payload_type": record.payload_type}
    data["verdict_lines"] = record.verdict_lines()
    if with_payload:
        data["payload"] = _readable_payload(record)
    return data


def _print_record(data: dict[str, Any]) -> None:
    def say(line: str) -> None:
        click.echo(printable(line))  # a subject, a file name, an endpoint's error: strangers' text

    for key in ("delivery_id", "status", "stream", "received_at", "from", "to", "subject", "size", "reason",
                "next_attempt_at"):  # fmt: skip
        if data.get(key) not in (None, "", []):
            say(f"{key + ':':<17}{data[key]}")
    for name, text in data["verdict_lines"]:
        say(f"{name + ':':<17}{text}")
    say(f"{'attachments:':<17}{data['attachments'] if data['attachments'] is not None else '-'}")
    for a in data["attachment_list"] or []:
        say(f"  {a['filename'] or '(no name)'}  {a['content_type']}  {a['size']} bytes")
    say("attempts:" if data["attempts"] else "attempts:        none yet")
    for a in data["attempts"]:
        result = a["status_code"] if a["status_code"] is not None else a["error"]
        say(f"  #{a['number']} (gen {a['generation']}) {a['at']}  {result}  {a['latency_ms']}ms")
    if "payload" in data:
        say(f"payload ({data['payload_type']}):")
        payload = data["payload"]
        text = payload if isinstance(payload, str) else json.dumps(payload, indent=2, ensure_ascii=False)
        click.echo(printable(text, lines=True))
    elif data["payload_type"]:
        click.echo(f"payload:         {data['payload_type']} (print it with --payload)")


def _attachments(record: ActivityRecord) -> list[dict[str, Any]] | None:
    """Name, type and size of each attachment, from a JSON webhook body (the schema inbound writes); else None."""
    if record.payload is None or record.payload_type != JSON:
        return None
    try:
        parts = json.loads(record.payload).get("attachments")
        return [{"filename": p.get("filename"), "content_type": p["content_type"], "size": p["size"]} for p in parts]
    except (ValueError, TypeError, KeyError, AttributeError):
        return None  # a body of another shape: the count is all there is


def _readable_payload(record: ActivityRecord) -> Any:
    """The stored webhook body as a reader wants it: JSON as a value, form fields by name, anything else as text."""
    if record.payload is None:
        return None
    if record.payload_type == JSON:
        return json.loads(record.payload)
    content_type = record.payload_type or ""
    if content_type.startswith("multipart/form-data"):
        return _form_fields(content_type, record.payload)
    if content_type == "application/x-www-form-urlencoded":
        from urllib.parse import parse_qsl

        return dict(parse_qsl(record.payload.decode("ascii", "replace"), keep_blank_values=True))
    return record.payload.decode("utf-8", "replace")


def _form_fields(content_type: str, body: bytes) -> dict[str, str]:
    """A form-data body (the mailgun and sendgrid formats) as field -> text, a file as its name, type and size."""
    from email.parser import BytesParser
    from email.policy import default

    form = BytesParser(policy=default).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    fields: dict[str, str] = {}
    for part in form.iter_parts():
        name = str(part.get_param("name", "?", header="content-disposition"))
        content = part.get_payload(decode=True)
        data = content if isinstance(content, bytes) else b""
        filename = part.get_filename()
        if filename is None:
            fields[name] = data.decode("utf-8", "replace")
        else:
            fields[name] = f"<file {filename!r}, {part.get_content_type()}, {len(data)} bytes>"
    return fields


@activity.command("rebuild")
@config_option
def activity_rebuild(config_path: Path | None) -> None:
    """Rebuild the activity store from the bus (the source of truth)."""
    from rich.progress import Progress

    from ..activity.rebuild import rebuild, records_to_replay

    with _bus_and_store(settings_from(config_path), "rebuild stopped (run it again to finish)") as (bus, store):
        with Progress() as progress:
            task = progress.add_task("rebuilding activity", total=records_to_replay(bus))
            seen = rebuild(bus, store, lambda n: progress.advance(task, n))
        counts = store.count_by_status()
    summary = ", ".join(f"{n} {s.value}" for s, n in sorted(counts.items()) if n)
    click.echo(f"rebuilt from {seen} records: {summary or 'no messages'}")


@contextlib.contextmanager
def _bus_and_store(settings: Settings, failure: str) -> Iterator[tuple[Bus, ActivityStore]]:
    """The bus and the activity store, closed afterwards; an InboundError ends the command with *failure*."""
    bus = _open_bus(settings)
    store = _store(settings)
    try:
        yield bus, store
    except InboundError as exc:
        raise click.ClickException(f"{failure}: {exc}") from None
    finally:
        store.close()
        bus.close()


@main.group()
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
    bus = _open_bus(settings)
    try:
        raw = raw_message(bus, retention_of(settings.bus), message_id)
    except InboundError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        bus.close()
    sys.stdout.buffer.write(raw)
    sys.stdout.buffer.flush()


@main.command()
@config_option
@click.argument("delivery_id")
def retry(config_path: Path | None, delivery_id: str) -> None:
    """Send a failed message again (a new generation of attempts, same webhook-id)."""
    from .actions import retry as retry_message

    with _bus_and_store(settings_from(config_path), "could not queue the retry") as (bus, store):
        generation = retry_message(bus, store, delivery_id)
    click.echo(f"{delivery_id}: queued for delivery again (generation {generation})")


@main.command()
@config_option
@click.argument("delivery_id")
def bypass(config_path: Path | None, delivery_id: str) -> None:
    """Deliver a Blocked message after all (processed again for its stream, past its block rules)."""
    from .actions import bypass as bypass_message

    with _bus_and_store(settings_from(config_path), "could not queue the bypass") as (bus, store):
        generation = bypass_message(bus, store, delivery_id)
    click.echo(f"{delivery_id}: queued for delivery past its block rules (generation {generation})")


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
    return rfc3339(moment.timestamp())


@main.command()
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
    _known_stream(settings, stream)
    if to is not None:
        try:
            check_webhook_url(to, settings.webhooks.allow_private)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--to") from None
    start, end = _utc_time(since), _utc_time(until)
    assert start is not None
    with _bus_and_store(settings, "replay stopped (run it again: a message sent twice keeps its webhook-id)") as (
        bus,
        store,
    ):
        window = replay_window(store, stream, start, end, status)
        with Progress() as progress:
            task = progress.add_task(f"replaying {stream}", total=len(window))
            for first in range(0, len(window), REPLAY_BATCH):
                batch = window[first : first + REPLAY_BATCH]
                replay_records(bus, store, batch, to=to)
                progress.advance(task, len(batch))
    click.echo(f"{len(window)} message(s) of {stream} queued for delivery again")


def _open_bus(settings: Settings) -> Bus:
    from ..bus import TOPICS, open_bus

    try:
        bus = open_bus(settings)
        bus.ensure_topics(TOPICS)
    except InboundError as exc:
        raise click.ClickException(f"cannot reach the bus: {exc}") from None
    return bus


def _set_paused(config_path: Path | None, stream: str | None, paused: bool) -> None:
    from ..control import set_paused

    settings = settings_from(config_path)
    _known_stream(settings, stream)
    bus = _open_bus(settings)
    try:
        set_paused(bus, stream, paused)
    except InboundError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        bus.close()
    what = f"stream {stream}" if stream else "processing and delivery"
    click.echo(f"{what}: {'paused (SMTP keeps accepting)' if paused else 'resumed'}")


@main.command()
@config_option
@click.option("--stream", default=None, help="Hold only this stream's deliveries.")
def pause(config_path: Path | None, stream: str | None) -> None:
    """Maintenance mode: hold processing and delivery; SMTP keeps accepting."""
    _set_paused(config_path, stream, True)


@main.command()
@config_option
@click.option("--stream", default=None, help="Resume only this stream.")
def resume(config_path: Path | None, stream: str | None) -> None:
    """End a pause; the backlog catches up."""
    _set_paused(config_path, stream, False)


@main.command()
@config_option
@click.option("--watch", is_flag=True, help="Follow the backlog with a progress bar until it drains.")
@click.option("--json", "as_json", is_flag=True)
def status(config_path: Path | None, watch: bool, as_json: bool) -> None:
    """What runs here and what waits at each stage: spool, bus lag per group, deliveries per stream, quarantine."""
    from rich.console import Console

    from .running import running
    from .status import collect
    from .statusview import render_running, render_status, watch_backlog

    settings = settings_from(config_path)
    # The activity store lives where the record role runs; elsewhere there is none to read.
    store = _store(settings) if settings.activity.backend != "sqlite" or settings.data.activity.exists() else None
    bus = _open_bus(settings)
    try:
        if watch:
            watch_backlog(lambda: collect(settings, bus, store), Console())
            return
        report = collect(settings, bus, store)
    except InboundError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        bus.close()
        if store is not None:
            store.close()
    processes = running(settings.storage.data_dir)
    quarantined = _quarantined(settings)
    if as_json:
        extra = {"running": [asdict(p) for p in processes], "quarantined": [str(p) for p in quarantined]}
        click.echo(json.dumps({**asdict(report), **extra}))
    else:
        console = Console()
        render_running(processes, settings.storage.data_dir, console)
        render_status(report, console)
        if quarantined:
            console.print(f"quarantined files ({len(quarantined)}; `inbound recover` salvages them):", soft_wrap=True)
            for path in quarantined:
                console.print(f"  {path}", highlight=False, soft_wrap=True)


def _quarantined(settings: Settings) -> list[Path]:
    directory = settings.data.quarantine
    return sorted(p for p in directory.iterdir() if p.is_file()) if directory.is_dir() else []


@main.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help='{"saved": [...], "skipped": [...], "lost": [...]}')
def recover(config_path: Path | None, as_json: bool) -> None:
    """Salvage messages from quarantined files and send them on; report what could not be saved."""
    from ..service import spool_for
    from .recover import Recovery

    settings = settings_from(config_path)
    with _bus_and_store(settings, "recovery stopped (run it again to go on)") as (bus, store):
        report = Recovery(settings.data.quarantine, spool_for(settings), bus, store).run()
    if as_json:
        click.echo(json.dumps(asdict(report)))
    else:
        for title, lines in (("saved", report.saved), ("already final", report.skipped), ("NOT saved", report.lost)):
            click.echo(f"{title}: {len(lines)}")
            for line in lines:
                click.echo(f"  {line}")
    if report.lost:
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

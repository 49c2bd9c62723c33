"""``inbound activity``: what happened to each message, read from the activity store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import InboundError
from ..events import Status
from ..printable import printable
from ..records import JSON
from .cliutil import bus_and_store, config_option, known_stream, settings_from, store_of

if TYPE_CHECKING:
    from ..activity import ActivityRecord


@click.group()
def activity() -> None:
    """What happened to each message: list, show; rebuild from the bus."""


def _when(rfc3339_text: str | None) -> str:
    """A stored time (RFC 3339, UTC) for a table: to the second, and saying its zone."""
    return f"{rfc3339_text[:19].replace('T', ' ')} UTC" if rfc3339_text else ""


@activity.command("list")
@config_option
@click.option("--status", type=click.Choice([s.value for s in Status]), default=None)
@click.option("--stream", default=None)
@click.option("--limit", type=click.IntRange(1), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def activity_list(config_path: Path | None, status: str | None, stream: str | None, limit: int, as_json: bool) -> None:
    """Messages, newest first."""
    settings = settings_from(config_path)
    stream = known_stream(settings, stream)
    store = store_of(settings)
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

    store = store_of(settings_from(config_path))
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

    with bus_and_store(settings_from(config_path), "rebuild stopped (run it again to finish)") as (bus, store):
        with Progress() as progress:
            task = progress.add_task("rebuilding activity", total=records_to_replay(bus))
            seen = rebuild(bus, store, lambda n: progress.advance(task, n))
        counts = store.count_by_status()
    summary = ", ".join(f"{n} {s.value}" for s, n in sorted(counts.items()) if n)
    click.echo(f"rebuilt from {seen} records: {summary or 'no messages'}")

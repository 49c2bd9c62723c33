"""The ``inbound`` command: thin wrappers over the modules, with clear errors and exit codes.

Every command takes ``--config FILE`` (default ``inbound.toml``, or
``$INBOUND_CONFIG``). Errors print one line naming what is wrong and exit 2
(bad input or configuration) or 1 (the operation failed).

Here: running the service and looking after it (``serve``, ``init``, ``status``,
``pause``, ``recover``, ...). The activity log's commands are in :mod:`.cli_activity`,
a message read back or sent again in :mod:`.cli_messages`, and what every command
shares in :mod:`.cliutil`.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import asdict
from pathlib import Path

import click

from .. import cpus as cpu_placement
from .. import log as logsetup
from ..config import Settings, split_host_port
from ..datadir import private_files
from ..errors import InboundError
from ..serving import count_into_data_dir, serve_roles, start_failure
from .cli_activity import activity
from .cli_messages import bypass, message, replay, retry
from .cliutil import bus_and_store, bus_of, config_option, known_stream, settings_from, store_of


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
    try:
        created, identity = settings.data.init()
    except (InboundError, OSError) as exc:  # say a file where the directory belongs, or no permission
        raise click.ClickException(f"cannot initialise {settings.storage.data_dir}: {exc}") from None
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
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="INFO",
    show_default=True,
)
@click.option(
    "--log-format",
    type=click.Choice(logsetup.FORMATS),
    default="text",
    show_default=True,
    envvar="INBOUND_LOG_FORMAT",  # so that processes serve starts log alike
    help="json: one object per line (time, level, stage, queue_id, delivery_id, stream, message).",
)
def serve(*, config_path: Path | None, roles: str | None, log_level: str, log_format: str) -> None:
    """Run the service until SIGTERM or SIGINT."""
    # HUP's default action ends a process. Until the service's own handler is in place (Service.run),
    # a HUP waits, blocked, and is taken then: one reload. The supervisor this process may become
    # inherits the mask and the HUP waiting, across exec.
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGHUP])
    settings = settings_from(config_path)
    count_into_data_dir(settings)
    from ..roles import parse_roles, preflight

    try:
        chosen = parse_roles(roles) if roles is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--roles") from None
    logsetup.configure(log_level, log_format)
    os.environ["INBOUND_LOG_FORMAT"] = log_format  # inherited by any process serve starts
    try:
        if chosen is None:
            from ..snapshot import create
            from ..supervisor import become_supervisor

            preflight(settings)
            placement = cpu_placement.placement(cpu_placement.allowed()) if settings.processing.pin_pipeline else {}
            become_supervisor(create(settings), log_level, log_format, placement)
        serve_roles(settings, chosen)
    except (InboundError, OSError) as exc:
        raise click.ClickException(start_failure(exc)) from None


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


def _set_paused(config_path: Path | None, stream: str | None, paused: bool) -> None:
    from ..control import set_paused

    settings = settings_from(config_path)
    known_stream(settings, stream)
    bus = bus_of(settings)
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
    bus = bus_of(settings, make_topics=False)  # first: it checks the data directory, before the store's file
    # The activity store lives where the record role runs; elsewhere there is none to read.
    store = store_of(settings) if settings.activity.backend != "sqlite" or settings.data.activity.exists() else None
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
    if report.bus_error is not None:  # what is local was shown: the outage is still a failure
        sys.exit(1)


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
    with bus_and_store(settings, "recovery stopped (run it again to go on)") as (bus, store):
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


for command in (activity, message, retry, bypass, replay):
    main.add_command(command)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

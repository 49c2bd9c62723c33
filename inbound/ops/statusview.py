"""How ``inbound status`` looks: a table, or a live progress bar while a backlog drains."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from ..durations import format_duration
from .running import Running
from .status import Status


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration(seconds)


def render_running(processes: list[Running], data_dir: Path, console: Console) -> None:
    """Whether inbound serves on this data directory, and which process runs which roles."""
    if not processes:
        console.print(f"inbound is not running on {data_dir} (on this host)", highlight=False, soft_wrap=True)
    for p in processes:
        console.print(
            f"running: pid {p.pid} since {p.started_at}, roles {','.join(p.roles)}", highlight=False, soft_wrap=True
        )


def render_status(report: Status, console: Console) -> None:
    table = Table("stage", "waiting", "oldest", "note", box=None)
    paused = " (paused)" if report.everything_paused else ""
    table.add_row("spool (this host)", str(report.spool_entries), _age(report.spool_oldest_age), "")
    for name, lag in report.lag.items():
        table.add_row(f"bus lag {name}", str(lag), "", paused if name.startswith(("process", "deliver")) else "")
    for stream in report.streams:
        notes = ["paused"] if stream.paused else []
        if stream.held_for is not None:
            notes.append(f"held: endpoint down for {_age(stream.held_for)}")
        note = "; ".join(notes)
        table.add_row(f"deliveries {stream.stream}", str(stream.waiting), _age(stream.oldest_age), note)
    console.print(table)
    if report.bus_error is not None:
        console.print(
            f"bus: unreachable ({report.bus_error}): its lag and the pauses are unknown",
            style="red",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    console.print(f"backlog: {report.backlog}; oldest waiting message: {_age(report.oldest_waiting_age)}")
    if report.spamd_problem is not None:
        console.print(
            f"spam scoring unavailable for {_age(report.spamd_down_for)} (messages go on unscored): "
            f"{report.spamd_problem}",
            style="yellow",
            markup=False,
        )


class RateColumn(ProgressColumn):
    """Messages per second through the whole pipeline (rich's own speed column counts bytes)."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:.1f} msg/s" if task.speed else "- msg/s")


def watch_backlog(collect: Callable[[], Status], console: Console, interval: float = 1.0) -> None:
    """A progress bar from the backlog seen at start down to zero; Ctrl-C leaves it."""
    backlog = collect().backlog
    if backlog == 0:
        console.print("nothing is waiting: the spool, the bus and the outbox are empty")
        return
    # Printed before the bar: it says at once what the watch is following (the bar appears on a
    # pipe only when it ends), and a script can read it before it makes the backlog move.
    noun = "message" if backlog == 1 else "messages"
    console.print(
        f"{backlog} {noun} waiting: following them until the backlog drains (Ctrl-C leaves)",
        highlight=False,
        soft_wrap=True,
    )
    total, done = float(backlog), 0.0
    columns = (
        TextColumn("backlog"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        RateColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("backlog", total=total)
        try:
            while True:
                backlog = collect().backlog
                # Mail arriving while we watch grows the bar instead of moving it backwards.
                total = max(total, done + backlog)
                done = total - backlog
                progress.update(task, total=total, completed=done)
                if backlog == 0:
                    break
                time.sleep(interval)
        except KeyboardInterrupt:
            pass

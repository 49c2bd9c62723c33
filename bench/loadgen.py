"""What the benches share: a bench message, the sender that offers it, and the service's CPU and memory.

Every figure a bench prints about the service's cost comes from :class:`Usage`, which
reads each process of ``inbound serve`` (supervisor, edge, pipeline, parse worker)
with psutil every 100 ms: the peak RSS of them all together, and the CPU each used
after :meth:`Usage.started` (start-up is not a message's cost).

Summed RSS counts the pages the processes share (the interpreter, its libraries) once per
process; PSS shares each such page out among its users, so the processes' PSS add up to the
memory the service holds. Both are printed.
"""

from __future__ import annotations

import os
import smtplib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from inbound.activity import open_store
from inbound.config import load_settings
from inbound.events import Status
from tests.harness import run_cli, send_on, smtp_port_of, stream_toml, wait_for, write_config

MakeMessage = Callable[[int, int], bytes]  # (size, number) -> the message


def message(size: int, n: int) -> bytes:
    head = f"From: bench@sender.test\r\nTo: x@in.test\r\nSubject: bench {n}\r\n\r\n".encode()
    line = b"The quick brown fox jumps over the lazy dog 0123456789.\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


def configure(directory: Path, url: str, size: int, kafka_bootstrap: str | None, extra: str = "") -> Path:
    """A data directory and config for one stream ``bench`` (``*@in.test``) POSTing to *url*; its path."""
    bus = 'backend = "embedded"'
    if kafka_bootstrap:
        bus = f'backend = "kafka"\nbootstrap_servers = ["{kafka_bootstrap}"]\ntopic_prefix = "bench{os.getpid()}."'
    config = write_config(
        directory,
        streams=stream_toml("bench", ["*@in.test"], url),
        bus=bus,
        max_message_size=max(size * 2, 1024 * 1024),
        extra=extra,
    )
    run_cli("init", config=config)
    return config


def send_all(
    config: Path, count: int, size: int, connections: int, *, make: MakeMessage = message, rate: float | None = None
) -> dict[str, float]:
    """Send *count* messages over *connections* SMTP sessions; queue id -> when its 250 came.

    *rate*: offer at most this many msg/s in all (message n is due n / rate seconds after the start:
    pacing, not waiting on a result).
    """
    sent_at: dict[str, float] = {}
    started = time.time()

    def connection(numbers: range) -> None:
        with smtplib.SMTP("127.0.0.1", smtp_port_of(config), timeout=120) as smtp:
            smtp.ehlo("bench.test")
            for n in numbers:
                if rate:
                    time.sleep(max(0.0, started + n / rate - time.time()))
                queue_id = send_on(smtp, "bench@sender.test", ["x@in.test"], make(size, n))
                sent_at[queue_id] = time.time()

    with ThreadPoolExecutor(connections) as pool:
        list(pool.map(connection, [range(i, count, connections) for i in range(connections)]))
    return sent_at


def final_at(config: Path, count: int, timeout: float = 3600.0) -> float:
    """When (``time.time()``) the activity store first showed *count* deliveries Delivered.

    The end-to-end target ends at the activity record, not at the webhook: call this once the
    webhook has every POST, so that its reads (a count over the whole store) fall only on the
    tail of a run and take nothing from the service while it is busy.
    """
    store = open_store(load_settings(config))
    try:
        wait_for(lambda: store.count_by_status()[Status.DELIVERED] >= count, timeout, f"{count} deliveries recorded")
        return time.time()
    finally:
        store.close()


def part_of(process: psutil.Process) -> str:
    """Which part of the service *process* is, by its command line."""
    command = " ".join(process.cmdline())
    for part, marker in (("parse worker", "parsechild"), ("edge", "smtp,publish"), ("pipeline", "process,")):
        if marker in command:
            return part
    return "supervisor"


class Steal:
    """How much of the machine's CPU time the hypervisor gave to other guests since this was made.

    On a shared virtual machine that share (``steal`` in ``/proc/stat``) moves from nothing to a
    quarter within an hour, and every figure of a run moves with it: a bench prints it so that a
    slow run can be told from a slow service.
    """

    def __init__(self) -> None:
        self.at_start = psutil.cpu_times()

    def share(self) -> float:
        now = psutil.cpu_times()
        total = sum(now) - sum(self.at_start)
        stolen = getattr(now, "steal", 0.0) - getattr(self.at_start, "steal", 0.0)
        return stolen / total if total > 0 else 0.0

    def report(self) -> str:
        return f"machine's CPU time taken by other guests (steal) during the run: {self.share():.0%}"


def pss_of(pid: int) -> int:
    """The PSS of *pid* in bytes, as Linux sums it (psutil's memory_full_info reads every mapping: slow)."""
    with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as rollup:
        for line in rollup:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


@dataclass
class Usage:
    """The service's peak RSS and PSS (all its processes) and the CPU seconds each process used."""

    pid: int
    peak_rss: int = 0
    peak_pss: int = 0
    cpu: dict[int, tuple[str, float]] = field(default_factory=dict)  # pid -> (part, user + system seconds)
    kernel: dict[int, float] = field(default_factory=dict)  # pid -> system seconds (syscalls: writes, fsyncs)
    at_start: dict[str, float] = field(default_factory=dict)
    kernel_at_start: float = 0.0
    steal: Steal = field(default_factory=Steal)
    stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Usage:
        self.thread = threading.Thread(target=self._follow, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def _follow(self) -> None:
        root = psutil.Process(self.pid)
        while not self.stop.wait(0.1):
            try:
                processes = [root, *root.children(recursive=True)]
                rss = pss = 0
                for process in processes:
                    with process.oneshot():
                        rss, pss = rss + process.memory_info().rss, pss + pss_of(process.pid)
                        times = process.cpu_times()
                        self.cpu[process.pid] = (part_of(process), times.user + times.system)
                        self.kernel[process.pid] = times.system
            except (psutil.Error, OSError):
                continue  # a process ended between listing and reading: the next look has the others
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)

    def started(self) -> None:
        """From now on CPU counts: call when the first message is about to be sent."""
        wait_for(lambda: len(self.cpu) >= 4, 30, "a first reading of every process")
        self.at_start = self._by_part()
        self.kernel_at_start = sum(self.kernel.values())
        self.steal = Steal()

    def cpu_by_part(self) -> dict[str, float]:
        """CPU seconds since :meth:`started`, by part of the service."""
        return {part: seconds - self.at_start.get(part, 0.0) for part, seconds in self._by_part().items()}

    def _by_part(self) -> dict[str, float]:
        parts: dict[str, float] = {}
        for part, seconds in self.cpu.values():
            parts[part] = parts.get(part, 0.0) + seconds
        return parts

    def report(self, messages: int) -> str:
        """Peak RSS and CPU per message, as the benches print them."""
        cpu = self.cpu_by_part()
        total = sum(cpu.values())
        each = ", ".join(f"{part} {seconds / messages * 1e6:.0f}" for part, seconds in sorted(cpu.items()))
        kernel = (sum(self.kernel.values()) - self.kernel_at_start) / total if total else 0.0
        return (
            f"server peak RSS {self.peak_rss / 1024 / 1024:.0f} MiB summed, PSS {self.peak_pss / 1024 / 1024:.0f} MiB\n"
            f"CPU per message {total / messages * 1e6:.0f} µs ({each}; {kernel:.0%} of it in the kernel)\n"
            f"{self.steal.report()}"
        )

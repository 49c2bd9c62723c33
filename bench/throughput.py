"""Throughput and latency of a real ``inbound serve``: N messages of S bytes over C connections.

Starts a local webhook receiver and ``inbound serve`` (embedded bus by default, or Kafka with
``--kafka-bootstrap``), sends the messages with smtplib from C threads, and prints accepted
msg/s, delivered msg/s, p50/p99 latency from the end of DATA to the webhook receipt, and the
server's peak RSS. Figures only: nothing here passes or fails.

With ``--auth`` the service computes SPF, DKIM, DMARC and ARC for every message against a
loopback DNS server (tests/dnsserver.py) that publishes the sender's records, and every message
is the same DKIM-signed one (signing is the sender's cost, not ours to measure).

    .venv/bin/python bench/throughput.py -n 2000 -s 10240 -c 8 [--auth] [--rate MSG_PER_S]
"""

from __future__ import annotations

import argparse
import os
import platform
import smtplib
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.dnsserver import DnsServer
from tests.harness import (
    InboundProcess,
    WebhookReceiver,
    run_cli,
    send_on,
    smtp_port_of,
    stream_toml,
    wait_for,
    write_config,
)
from tests.mailauth import SenderDomain


def message(size: int, n: int) -> bytes:
    head = f"From: bench@sender.test\r\nTo: x@in.test\r\nSubject: bench {n}\r\n\r\n".encode()
    line = b"The quick brown fox jumps over the lazy dog 0123456789.\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


def verdicts_on(size: int) -> tuple[str, Callable[[int, int], bytes]]:
    """The [auth] section for a loopback DNS server publishing the sender's records, and its signed message."""
    dns = DnsServer().start()  # a daemon thread: it lives as long as the bench
    sender = SenderDomain(dns, "sender.test").spf("v=spf1 ip4:127.0.0.1 -all").dmarc("v=DMARC1; p=reject")
    signed = sender.sign(message(size, 0))
    return f'[auth]\nenabled = true\nresolvers = ["{dns.address}"]\n', lambda size, n: signed


def role_of(process: psutil.Process) -> str:
    """Which part of the service *process* is, by its command line."""
    command = " ".join(process.cmdline())
    for part, marker in (("parse worker", "parsechild"), ("edge", "smtp,publish"), ("pipeline", "process,")):
        if marker in command:
            return part
    return "supervisor"


@dataclass
class Usage:
    """The service's peak RSS (all its processes) and the CPU seconds each process used, read every 100 ms."""

    peak_rss: int = 0
    cpu: dict[int, tuple[str, float]] = field(default_factory=dict)  # pid -> (part, user + system seconds)
    at_start: dict[str, float] = field(default_factory=dict)  # what starting up used: not the messages' cost

    def follow(self, pid: int, stop: threading.Event) -> None:
        root = psutil.Process(pid)
        while not stop.wait(0.1):
            try:
                processes = [root, *root.children(recursive=True)]
                rss = 0
                for process in processes:
                    with process.oneshot():
                        rss += process.memory_info().rss
                        times = process.cpu_times()
                        self.cpu[process.pid] = (role_of(process), times.user + times.system)
            except psutil.Error:
                continue  # a process ended between listing and reading: the next look has the others
            self.peak_rss = max(self.peak_rss, rss)

    def started(self) -> None:
        """Call when the first message is about to be sent."""
        self.at_start = self._by_part()

    def cpu_by_part(self) -> dict[str, float]:
        """CPU seconds since :meth:`started`, by part of the service."""
        return {part: seconds - self.at_start.get(part, 0.0) for part, seconds in self._by_part().items()}

    def _by_part(self) -> dict[str, float]:
        parts: dict[str, float] = {}
        for part, seconds in self.cpu.values():
            parts[part] = parts.get(part, 0.0) + seconds
        return parts


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--messages", type=int, default=1000)
    parser.add_argument("-s", "--size", type=int, default=10 * 1024, help="message size in bytes")
    parser.add_argument("-c", "--connections", type=int, default=8)
    parser.add_argument("--kafka-bootstrap", default=None, help="run on Kafka at this host:port")
    parser.add_argument("--auth", action="store_true", help="sender verdicts on, against a loopback DNS server")
    parser.add_argument(
        "--rate", type=float, default=None, help="offer at most this many msg/s in all (latency below saturation)"
    )
    return parser.parse_args()


def main() -> None:
    args = arguments()
    extra, make_message = ("", message) if not args.auth else verdicts_on(args.size)
    receiver = WebhookReceiver().start()
    with tempfile.TemporaryDirectory(prefix="inbound-bench-") as tmp:
        bus = 'backend = "embedded"'
        if args.kafka_bootstrap:
            servers = f'bootstrap_servers = ["{args.kafka_bootstrap}"]'
            bus = f'backend = "kafka"\n{servers}\ntopic_prefix = "bench{os.getpid()}."'
        config = write_config(
            Path(tmp),
            streams=stream_toml("bench", ["*@in.test"], receiver.url("/bench")),
            bus=bus,
            max_message_size=max(args.size * 2, 1024 * 1024),
            extra=extra,
        )
        run_cli("init", config=config)
        server = InboundProcess(config).start()
        assert server.proc is not None
        stop, usage = threading.Event(), Usage()
        sampler = threading.Thread(target=usage.follow, args=(server.proc.pid, stop))
        sampler.start()

        sent_at: dict[str, float] = {}
        per_connection = [range(i, args.messages, args.connections) for i in range(args.connections)]

        def connection(numbers: range) -> None:
            with smtplib.SMTP("127.0.0.1", smtp_port_of(config), timeout=120) as smtp:
                smtp.ehlo("bench.test")
                for n in numbers:
                    if args.rate:  # message n is due n / rate seconds after the start: pacing, not waiting on a result
                        time.sleep(max(0.0, started + n / args.rate - time.time()))
                    queue_id = send_on(smtp, "bench@sender.test", ["x@in.test"], make_message(args.size, n))
                    sent_at[queue_id] = time.time()

        wait_for(lambda: len(usage.cpu) >= 4, 30, "a first reading of every process")
        usage.started()
        started = time.time()
        with ThreadPoolExecutor(args.connections) as pool:
            list(pool.map(connection, per_connection))
        accepted_in = time.time() - started

        def all_delivered() -> bool:
            # Counting hits first keeps each look cheap: the bench shares the service's two cores.
            enough = len(receiver.on("/bench")) >= args.messages
            return enough and len(receiver.by_queue_id("/bench")) >= args.messages

        wait_for(all_delivered, 3600, "every delivery")
        delivered_in = max(h.at for h in receiver.on("/bench")) - started
        stop.set()
        sampler.join()
        server.stop()

    latencies = sorted(min(h.at for h in hits) - sent_at[q] for q, hits in receiver.by_queue_id("/bench").items())
    receiver.stop()
    report(args, accepted_in, delivered_in, latencies, usage)


def report(
    args: argparse.Namespace, accepted_in: float, delivered_in: float, latencies: list[float], usage: Usage
) -> None:
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    print(f"machine:        {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"bus:            {'kafka' if args.kafka_bootstrap else 'embedded'}")
    print(f"auth:           {'on (SPF, DKIM, DMARC, ARC)' if args.auth else 'off'}")
    print(f"messages:       {args.messages} x {args.size} bytes over {args.connections} connections")
    print(f"accepted:       {args.messages / accepted_in:.1f} msg/s")
    print(f"delivered:      {args.messages / delivered_in:.1f} msg/s")
    print(f"latency p50:    {p50:.0f} ms (end of DATA to webhook receipt)")
    print(f"latency p99:    {p99:.0f} ms")
    print(f"server peak RSS {usage.peak_rss / 1024 / 1024:.0f} MiB")
    cpu = usage.cpu_by_part()
    each = ", ".join(f"{part} {seconds / args.messages * 1e6:.0f}" for part, seconds in sorted(cpu.items()))
    print(f"CPU per message {sum(cpu.values()) / args.messages * 1e6:.0f} µs ({each})")


if __name__ == "__main__":
    main()

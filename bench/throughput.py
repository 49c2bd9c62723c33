"""Throughput and latency of a real ``inbound serve``: N messages of S bytes over C connections.

Starts a local webhook receiver and ``inbound serve`` (embedded bus by default, or Kafka with
``--kafka-bootstrap``), sends the messages with smtplib from C threads, and prints accepted
msg/s, delivered msg/s (from the first message sent until the activity store shows the last
one Delivered), p50/p99 latency from the end of DATA to the webhook receipt, and the server's
peak RSS. Figures only: nothing here passes or fails.

One message goes through the whole pipeline before the clock starts: a run measures the service
as it runs, not as it starts. On Kafka each stage's consumer joins its group once the stage runs,
and messages sent in the first half second after ``serve`` was ready waited 0.25-0.45 s for that
(the p99 of a short run at 200 msg/s was that wait: 262-302 ms, where 22-32 ms was measured after it).

With ``--by-hop`` it also prints each hop's share of that latency, from the timestamps of the
records on the bus: the end of DATA to the ``received`` record (spool, publisher), that to the
``messages`` record (the process stage: parse, route) and that to the webhook (the flush, the
deliverer's intake, the outbox, the POST). A record's timestamp is when its stage handed it to
the bus, before the flush that made it durable: that flush counts in the next hop. The first
hop can be below zero: the end of DATA is when the client has read its 250, and the publisher
may have handed the message to the bus before that.

With ``--auth`` the service computes SPF, DKIM, DMARC and ARC for every message against a
loopback DNS server (tests/dnsserver.py) that publishes the sender's records, and every message
is the same DKIM-signed one (signing is the sender's cost, not ours to measure).

    .venv/bin/python bench/throughput.py -n 2000 -s 10240 -c 8 [--auth] [--rate MSG_PER_S] [--by-hop]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.loadgen import MakeMessage, Usage, configure, final_at, message, send_all
from inbound.bus import open_bus
from inbound.config import load_settings
from inbound.events import delivery_id
from inbound.records import MESSAGES, RECEIVED, decode_message, decode_received
from tests.dnsserver import DnsServer
from tests.harness import InboundProcess, WebhookReceiver, wait_for
from tests.mailauth import SenderDomain


def verdicts_on(size: int) -> tuple[str, MakeMessage]:
    """The [auth] section for a loopback DNS server publishing the sender's records, and its signed message."""
    dns = DnsServer().start()  # a daemon thread: it lives as long as the bench
    sender = SenderDomain(dns, "sender.test").spf("v=spf1 ip4:127.0.0.1 -all").dmarc("v=DMARC1; p=reject")
    signed = sender.sign(message(size, 0))
    return f'[auth]\nenabled = true\nresolvers = ["{dns.address}"]\n', lambda size, n: signed


def warm_up(config: Path) -> None:
    """One small message delivered, and its delivery recorded, before the run."""
    send_all(config, 1, 1024, 1)
    final_at(config, 1, timeout=120)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--messages", type=int, default=1000)
    parser.add_argument("-s", "--size", type=int, default=10 * 1024, help="message size in bytes")
    parser.add_argument("-c", "--connections", type=int, default=8)
    parser.add_argument("--kafka-bootstrap", default=None, help="run on Kafka at this host:port")
    parser.add_argument("--auth", action="store_true", help="sender verdicts on, against a loopback DNS server")
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="the interpreter that runs inbound serve: one with only the runtime dependencies shows the memory"
        " of an install (this one has the test dependencies; httpcore imports trio, 14 MB, when it is there)",
    )
    parser.add_argument(
        "--rate", type=float, default=None, help="offer at most this many msg/s in all (latency below saturation)"
    )
    parser.add_argument("--by-hop", action="store_true", help="the latency by hop, from the records' timestamps")
    return parser.parse_args()


def main() -> None:
    args = arguments()
    extra, make_message = ("", message) if not args.auth else verdicts_on(args.size)
    receiver = WebhookReceiver().start()
    with tempfile.TemporaryDirectory(prefix="inbound-bench-") as tmp:
        config = configure(Path(tmp), receiver.url("/bench"), args.size, args.kafka_bootstrap, extra)
        server = InboundProcess(config, python=args.python).start()
        assert server.proc is not None
        warm_up(config)
        with Usage(server.proc.pid) as usage:
            usage.started()
            started = time.time()
            sent_at = send_all(config, args.messages, args.size, args.connections, make=make_message, rate=args.rate)
            accepted_in = time.time() - started

            def all_delivered() -> bool:
                # Counting hits first keeps each look cheap: the bench shares the service's two cores.
                enough = len(receiver.on("/bench")) > args.messages
                return enough and len(receiver.by_queue_id("/bench")) > args.messages

            wait_for(all_delivered, 3600, "every delivery")
            delivered_in = final_at(config, args.messages + 1) - started
        server.stop()
        posted_at = {q: min(h.at for h in hits) for q, hits in receiver.by_queue_id("/bench").items()}
        hops = by_hop(config, sent_at, posted_at) if args.by_hop else {}

    latencies = sorted(posted_at[q] - at for q, at in sent_at.items())
    receiver.stop()
    report(args, accepted_in, delivered_in, latencies, usage)
    for hop, seconds in hops.items():
        print(f"  {hop:34} p50 {percentile(seconds, 0.5):5.1f} ms  p99 {percentile(seconds, 0.99):5.1f} ms")


def by_hop(config: Path, sent_at: dict[str, float], posted_at: dict[str, float]) -> dict[str, list[float]]:
    """Each message's time in each hop (seconds), from when its records were handed to the bus."""
    bus = open_bus(load_settings(config))
    try:
        received = {decode_received(r.value)[0].queue_id: r.timestamp_ms / 1000 for r in bus.read_all(RECEIVED)}
        processed = {decode_message(r).delivery_id: r.timestamp_ms / 1000 for r in bus.read_all(MESSAGES)}
    finally:
        bus.close()
    hops: dict[str, list[float]] = {"end of DATA -> received record": [], "-> messages record": [], "-> webhook": []}
    for queue_id, at in sent_at.items():
        steps = (at, received[queue_id], processed[delivery_id(queue_id, "bench")], posted_at[queue_id])
        for hop, (start, end) in zip(hops.values(), pairwise(steps), strict=True):
            hop.append(end - start)
    return hops


def percentile(seconds: list[float], fraction: float) -> float:
    """The value *fraction* of the way up *seconds*, in ms."""
    ordered = sorted(seconds)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] * 1000


def report(
    args: argparse.Namespace, accepted_in: float, delivered_in: float, latencies: list[float], usage: Usage
) -> None:
    p50 = statistics.median(latencies) * 1000
    p99 = percentile(latencies, 0.99)
    print(f"machine:        {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"bus:            {'kafka' if args.kafka_bootstrap else 'embedded'}")
    print(f"auth:           {'on (SPF, DKIM, DMARC, ARC)' if args.auth else 'off'}")
    print(f"messages:       {args.messages} x {args.size} bytes over {args.connections} connections")
    print(f"accepted:       {args.messages / accepted_in:.1f} msg/s")
    print(f"delivered:      {args.messages / delivered_in:.1f} msg/s (until the activity store has them all)")
    print(f"latency p50:    {p50:.0f} ms (end of DATA to webhook receipt)")
    print(f"latency p99:    {p99:.0f} ms")
    print(usage.report(args.messages))


if __name__ == "__main__":
    main()

"""inbound beside its peers, in one run: accepted and end-to-end msg/s, CPU per message, ratios.

Starts a webhook receiver and ``inbound serve`` (embedded bus, or Kafka with
``--kafka-bootstrap``), then runs the anchor script of ``../shared/bench/anchors``
(Postfix's ``smtp-source`` against ``smtp-sink``, Haraka with an fsync queue and
a bare aiosmtpd with fsync) with inbound as one more target in the same
interleaved rounds. The accept figures are the anchor script's; the end-to-end
figure is inbound's own: every accepted message counted when its webhook POST
arrives. Figures only: nothing here passes or fails.

    .venv/bin/python bench/compare.py --messages 3000 --rounds 2 [--keepalive]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.harness import InboundProcess, WebhookReceiver, run_cli, smtp_port_of, stream_toml, wait_for, write_config

ANCHORS = Path(__file__).resolve().parents[2] / "shared" / "bench" / "anchors" / "smtp_anchor_bench.sh"
PEERS = "sink,haraka-fsync,py-fsync"
REFERENCE = "haraka-fsync"


def medians(tsv: Path) -> dict[str, tuple[float, float]]:
    """target -> (median msg/s, median server CPU µs per message) over the rounds that succeeded."""
    rates: dict[str, list[float]] = defaultdict(list)
    cpu: dict[str, list[float]] = defaultdict(list)
    with tsv.open() as f:
        lines = (line.lstrip("#") for line in f if line.startswith("#round") or not line.startswith("#"))
        for row in csv.DictReader(lines, delimiter="\t"):
            if row["status"] != "ok":
                continue
            rates[row["target"]].append(float(row["msg_per_s"]))
            if row["server_cpu_s"] != "-":
                cpu[row["target"]].append(float(row["server_cpu_s"]) / int(row["msgs"]) * 1e6)
    return {t: (statistics.median(r), statistics.median(cpu[t]) if cpu[t] else float("nan")) for t, r in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--size", type=int, default=10240)
    parser.add_argument("--keepalive", action="store_true", help="smtp-source -d: connections kept open")
    parser.add_argument("--kafka-bootstrap", default=None, help="run inbound on this Kafka broker")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="inbound-compare-"))
    receiver = WebhookReceiver().start()
    bus = 'backend = "embedded"'
    if args.kafka_bootstrap:
        bus = f'backend = "kafka"\nbootstrap_servers = ["{args.kafka_bootstrap}"]\ntopic_prefix = "bench{work.name}."'
    config = write_config(
        work,
        streams=stream_toml("bench", ["*@in.example.test"], receiver.url("/hook")),
        bus=bus,
        max_message_size=max(1024 * 1024, args.size * 2),
        retry_schedule=["1s", "5s", "30s"],
        timeout="30s",
    )
    run_cli("init", config=config)
    service = InboundProcess(config, log=work / "serve.log").start()
    assert service.proc is not None
    tsv = work / "results.tsv"
    command = ["bash", str(ANCHORS), "--rounds", str(args.rounds), "--messages", str(args.messages)]
    command += ["--sessions", str(args.sessions), "--size", str(args.size), "--only", PEERS, "--out", str(tsv)]
    command += ["--target", f"inbound=127.0.0.1:{smtp_port_of(config)}@{service.proc.pid}"]
    command += ["--keepalive"] if args.keepalive else []
    try:
        subprocess.run(command, check=True)
        expected = args.messages * args.rounds
        wait_for(lambda: len(receiver.on("/hook")) >= expected, 3600, f"{expected} deliveries")
        hits = sorted(hit.at for hit in receiver.on("/hook"))
    finally:
        service.stop()
        receiver.stop()

    figures = medians(tsv)
    reference = figures.get(REFERENCE, (float("nan"), float("nan")))[0]
    end_to_end = (len(hits) - 1) / (hits[-1] - hits[0]) if len(hits) > 1 else float("nan")
    mode = "keep-alive" if args.keepalive else "new connection per message"
    backend = "kafka" if args.kafka_bootstrap else "embedded"
    print(f"\n{args.messages} messages x {args.rounds} rounds, {args.size} B, {args.sessions} sessions, {mode}")
    print(f"{'server':<22}{'accepted msg/s':>16}{'ratio':>8}{'CPU µs/msg':>12}")
    for target, (rate, cpu) in sorted(figures.items(), key=lambda item: -item[1][0]):
        print(f"{target:<22}{rate:>16.0f}{rate / reference:>8.2f}{cpu:>12.0f}")
    print(
        f"inbound ({backend}) delivered end to end: {end_to_end:.0f} msg/s ({end_to_end / reference:.2f}x {REFERENCE})"
    )


if __name__ == "__main__":
    main()

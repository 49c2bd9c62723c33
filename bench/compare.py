"""inbound beside its peers: accepted and end-to-end msg/s, CPU per message, ratios, for both buses.

For each bus asked for (the embedded one, then Kafka), starts a webhook receiver and
``inbound serve``, then runs the anchor script of ``../shared/bench/anchors`` (Postfix's
``smtp-source`` against ``smtp-sink``, Haraka with an fsync queue and a bare aiosmtpd with
fsync) with inbound as one more target in the same interleaved rounds. The accept figures are
the anchor script's. The end-to-end figure is inbound's own, measured after the rounds with
inbound alone: ``smtp-source`` sends ``--e2e-messages`` the way it sent the rounds, and the rate
runs from its start until the activity store shows the last of them Delivered (250 -> webhook
2xx -> activity record final, as the target reads). Each bus has its own run of the anchors, so
each ratio is to the Haraka measured beside it. For Kafka, a broker is started on loopback
(``tests/kafka_broker.py``) unless ``--kafka-bootstrap`` names one. Figures only: nothing here
passes or fails.

    .venv/bin/python bench/compare.py --messages 2000 --rounds 2 [--e2e-messages 20000] [--keepalive]
        [--buses embedded,kafka]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.loadgen import Steal, final_at
from tests.harness import InboundProcess, WebhookReceiver, run_cli, smtp_port_of, stream_toml, wait_for, write_config
from tests.kafka_broker import KafkaBroker, fetch_jars

ANCHORS = Path(__file__).resolve().parents[2] / "shared" / "bench" / "anchors" / "smtp_anchor_bench.sh"
PEERS = "sink,haraka-fsync,py-fsync"
REFERENCE = "haraka-fsync"
INBOUND = "inbound"


@dataclass(frozen=True)
class Run:
    """One bus's run: per target the median msg/s and CPU µs per message, round 1's msg/s, inbound's end to end."""

    bus: str
    medians: dict[str, tuple[float, float]]
    first_round: dict[str, float]
    end_to_end: float
    steal: float  # the share of the machine's CPU time other guests took during the run

    def ratio(self, rate: float) -> float:
        return rate / self.medians.get(REFERENCE, (float("nan"), 0.0))[0]


def read_results(tsv: Path) -> tuple[dict[str, tuple[float, float]], dict[str, float]]:
    """The anchor script's results: target -> (median msg/s, median server CPU µs per message), and round 1's msg/s."""
    rates: dict[str, list[float]] = defaultdict(list)
    cpu: dict[str, list[float]] = defaultdict(list)
    first: dict[str, float] = {}
    with tsv.open() as f:
        lines = (line.lstrip("#") for line in f if line.startswith("#round") or not line.startswith("#"))
        for row in csv.DictReader(lines, delimiter="\t"):
            if row["status"] != "ok":
                continue
            rates[row["target"]].append(float(row["msg_per_s"]))
            if row["round"] == "1":
                first[row["target"]] = float(row["msg_per_s"])
            if row["server_cpu_s"] != "-":
                cpu[row["target"]].append(float(row["server_cpu_s"]) / int(row["msgs"]) * 1e6)
    medians = {
        t: (statistics.median(r), statistics.median(cpu[t]) if cpu[t] else float("nan")) for t, r in rates.items()
    }
    return medians, first


def run(bus: str, kafka_bootstrap: str | None, args: argparse.Namespace) -> Run:
    """The anchors and one ``inbound serve`` on *bus*, in the same interleaved rounds."""
    work = Path(tempfile.mkdtemp(prefix=f"inbound-compare-{bus}-"))
    receiver = WebhookReceiver().start()
    bus_toml = 'backend = "embedded"'
    if kafka_bootstrap:
        bus_toml = f'backend = "kafka"\nbootstrap_servers = ["{kafka_bootstrap}"]\ntopic_prefix = "bench{work.name}."'
    config = write_config(
        work,
        streams=stream_toml("bench", ["*@in.example.test"], receiver.url("/hook")),
        bus=bus_toml,
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
    command += ["--target", f"{INBOUND}=127.0.0.1:{smtp_port_of(config)}@{service.proc.pid}"]
    command += ["--keepalive"] if args.keepalive else []
    steal = Steal()
    try:
        subprocess.run(command, check=True)
        in_rounds = args.messages * args.rounds
        wait_for(lambda: len(receiver.on("/hook")) >= in_rounds, 3600, f"{in_rounds} deliveries")
        final_at(config, in_rounds)  # the rounds' backlog gone: the phase below has the machine to itself
        end_to_end = alone(config, receiver, in_rounds, args)
    finally:
        service.stop()
        receiver.stop()
    medians, first = read_results(tsv)
    return Run(bus, medians, first, end_to_end, steal.share())


def alone(config: Path, receiver: WebhookReceiver, before: int, args: argparse.Namespace) -> float:
    """inbound's end-to-end msg/s over ``--e2e-messages`` sent by ``smtp-source`` as in the rounds.

    Measured apart from the rounds: there, inbound's pipeline drains its backlog while the anchors
    take their turns, and idles once it is done until inbound's next round, so a rate from the
    first delivery to the last would count both the anchors' CPU and the idle gaps against it.
    """
    source = shutil.which("smtp-source")
    if source is None:
        raise SystemExit("smtp-source not found (the anchor script installs Postfix's tools)")
    count = args.e2e_messages
    command = [source, *(["-d"] if args.keepalive else []), "-s", str(args.sessions), "-m", str(count)]
    command += ["-l", str(args.size), "-t", "to@in.example.test", "-f", "from@example.org", "-M", "bench.local"]
    started = time.time()
    subprocess.run([*command, f"127.0.0.1:{smtp_port_of(config)}"], check=True, stdout=subprocess.DEVNULL)
    wait_for(lambda: len(receiver.on("/hook")) >= before + count, 3600, f"{count} more deliveries")
    return count / (final_at(config, before + count) - started)


@contextlib.contextmanager
def kafka(bootstrap: str | None) -> Iterator[str]:
    """*bootstrap*, or a broker of our own on loopback for as long as the runs need it."""
    if bootstrap:
        yield bootstrap
        return
    with KafkaBroker(fetch_jars()) as broker:
        yield broker.bootstrap


def report(runs: list[Run], args: argparse.Namespace) -> None:
    mode = "keep-alive" if args.keepalive else "new connection per message"
    print(f"\n{args.messages} messages x {args.rounds} rounds, {args.size} B, {args.sessions} sessions, {mode}")
    print("ratio: to the Haraka-fsync of the same run, by the medians; round 1: the first round's rates")
    print(f"{'server':<26}{'accepted msg/s':>16}{'ratio':>8}{'round 1':>9}{'CPU µs/msg':>12}{'end to end':>12}")
    for each in runs:
        for target, (rate, cpu) in sorted(each.medians.items(), key=lambda item: -item[1][0]):
            name = f"{INBOUND} ({each.bus})" if target == INBOUND else f"{target} [{each.bus} run]"
            first = each.first_round.get(target, float("nan")) / each.first_round.get(REFERENCE, float("nan"))
            delivered = f"{each.end_to_end:.0f} msg/s" if target == INBOUND else ""
            print(f"{name:<26}{rate:>16.0f}{each.ratio(rate):>8.2f}{first:>9.2f}{cpu:>12.0f}{delivered:>12}")
    for each in runs:
        print(
            f"{INBOUND} ({each.bus}) end to end, {args.e2e_messages} messages sent to it alone:"
            f" {each.ratio(each.end_to_end):.2f}x {REFERENCE}'s accept"
        )
    for each in runs:
        print(f"{each.bus} run: {each.steal:.0%} of the machine's CPU time taken by other guests (steal)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--size", type=int, default=10240)
    parser.add_argument(
        "--e2e-messages", type=int, default=20000, help="sent to inbound alone after the rounds, for end to end"
    )
    parser.add_argument("--keepalive", action="store_true", help="smtp-source -d: connections kept open")
    parser.add_argument("--buses", default="embedded,kafka", help="which buses to run inbound on (embedded first)")
    parser.add_argument("--kafka-bootstrap", default=None, help="a running broker (default: start one on loopback)")
    args = parser.parse_args()
    buses = [b.strip() for b in args.buses.split(",") if b.strip()]
    unknown = set(buses) - {"embedded", "kafka"}
    if unknown:
        parser.error(f"--buses: unknown {', '.join(sorted(unknown))} (embedded, kafka)")

    runs = [run("embedded", None, args)] if "embedded" in buses else []
    if "kafka" in buses:
        with kafka(args.kafka_bootstrap) as bootstrap:
            runs.append(run("kafka", bootstrap, args))
    report(runs, args)


if __name__ == "__main__":
    main()

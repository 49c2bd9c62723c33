"""Catch-up after an outage: N messages accepted while the webhook is down, then how fast they drain.

Starts a webhook receiver that answers 503, ``inbound serve`` (embedded bus, or Kafka with
``--kafka-bootstrap``) with ``probe_interval = 1s``, and sends N messages of S bytes over C
connections. Once every one of them waits in the outbox (``inbound status --json``), the
receiver answers 200 again and ``inbound status --watch`` follows the backlog while it drains.
Prints the accept rate, the drain rate (from the recovery to the last first delivery), the
service's peak RSS over the whole run and its CPU per message while draining, and the last
lines ``status --watch`` printed. Figures only: nothing here passes or fails.

    .venv/bin/python bench/catchup.py -n 100000 -s 10240 -c 8 [--kafka-bootstrap HOST:PORT]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.loadgen import Usage, configure, send_all
from tests.harness import INBOUND, ROOT, InboundProcess, WebhookReceiver, run_cli, wait_for

PATH = "/bench"


def waiting_in_outbox(config: Path) -> int:
    report = json.loads(run_cli("status", "--json", config=config).stdout)
    return sum(int(stream["waiting"] or 0) for stream in report["streams"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--messages", type=int, default=100_000)
    parser.add_argument("-s", "--size", type=int, default=10240)
    parser.add_argument("-c", "--connections", type=int, default=8)
    parser.add_argument("--kafka-bootstrap", default=None, help="run on Kafka at this host:port")
    args = parser.parse_args()

    up = False
    receiver = WebhookReceiver().start()
    receiver.behaviour[PATH] = lambda n: 200 if up else 503
    with tempfile.TemporaryDirectory(prefix="inbound-catchup-") as tmp:
        extra = 'probe_interval = "1s"\n'  # lands in [webhooks]
        config = configure(Path(tmp), receiver.url(PATH), args.size, args.kafka_bootstrap, extra)
        server = InboundProcess(config).start()
        assert server.proc is not None
        with Usage(server.proc.pid) as usage:
            started = time.time()
            send_all(config, args.messages, args.size, args.connections)
            accepted_in = time.time() - started
            wait_for(lambda: waiting_in_outbox(config) >= args.messages, 3600, "every message in the outbox")
            outage_hits = len(receiver.on(PATH))  # probes, all refused

            usage.started()
            up, recovered_at = True, time.time()
            watch_log = Path(tmp) / "watch.txt"
            with watch_log.open("w") as out:
                watch = subprocess.Popen([*INBOUND, "status", "--watch", "--config", str(config)], cwd=ROOT, stdout=out)

                def drained() -> bool:
                    hits = receiver.on(PATH)[outage_hits:]
                    return len(hits) >= args.messages and len({h.json["queue_id"] for h in hits}) >= args.messages

                wait_for(drained, 4 * 3600, "the backlog to drain")
                drained_in = max(h.at for h in receiver.on(PATH)) - recovered_at
                watch.wait(120)
            watched = watch_log.read_text(errors="replace").splitlines()
        server.stop()
    receiver.stop()
    print(f"messages:       {args.messages} x {args.size} bytes, accepted while the webhook answered 503")
    print(f"bus:            {'kafka' if args.kafka_bootstrap else 'embedded'}")
    print(f"accepted:       {args.messages / accepted_in:.1f} msg/s")
    print(f"drained:        {args.messages / drained_in:.1f} msg/s ({drained_in:.0f} s after the endpoint came back)")
    print(usage.report(args.messages).replace("CPU per message", "CPU per message while draining"))
    print("inbound status --watch, its last lines:")
    print("\n".join(watched[-3:]))


if __name__ == "__main__":
    main()

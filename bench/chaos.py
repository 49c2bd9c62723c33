"""Chaos bench: faults at random moments while mail keeps arriving, then what became of every message.

Starts a local webhook receiver and ``inbound serve`` (embedded bus by default), sends mail
continuously from two SMTP clients, and injects ``--cycles`` faults, taking turns (in a seeded
random order) among: SIGKILL of ``inbound serve``; SIGTERM of ``inbound serve``; an outage of
the webhook endpoint (503 for a few seconds, then 200); a long one (503 for longer than the whole
retry schedule: the stream is held, nothing may become Failed); and, with a broker of its own
(``--kafka``), SIGKILL of the Kafka broker followed by a restart. Then it waits for the catch-up
and prints one row per fault kind (a message counts under the fault whose cycle it was sent in).
A row's catch-up is its longest cycle's, from the end of the fault until the last message sent in
that cycle was delivered (a next fault that comes before the catch-up is over lengthens it); the
total's is from the end of the last fault until the last accepted message was delivered.

Exits 1 if an accepted message was lost (neither delivered nor shown as final) or Failed (no
fault here is a message's own: an outage must end in catch-up, never in Failed), an activity
record contradicts the webhook (two records for one delivery, or not ``delivered`` although the
endpoint answered 2xx), a repeat changed its ``webhook-id``, or SIGTERM did not exit 0.
Everything is local (127.0.0.1) and bounded: cycles, fault lengths, messages, catch-up time.

    .venv/bin/python bench/chaos.py                                   # 20 cycles, embedded bus
    .venv/bin/python bench/chaos.py --kafka                           # its own broker (tests/kafka_broker.py)
    .venv/bin/python bench/chaos.py --kafka-bootstrap 127.0.0.1:9092  # a running broker: no broker faults
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fixtures import kafka_toml
from tests.harness import InboundProcess, WebhookReceiver, activity, run_cli, stream_toml, wait_for, write_config
from tests.kafka_broker import KafkaBroker, fetch_jars
from tests.test_chaos import Traffic

KINDS = ("sigkill", "sigterm", "webhook 503", "long outage", "broker kill")
FINAL = {"delivered", "failed", "blocked"}
RETRIES = ["1s", "2s", "3s"]  # 6 s in all: shorter than a long outage, which must hold, not fail


@dataclass
class Cycle:
    kind: str
    start: float  # the cycle's messages are those sent from here until the next cycle starts
    fault_end: float = 0.0  # when the service, the endpoint or the broker was back


class Endpoint:
    """The webhook receiver's answer, switchable; remembers which POSTs it answered with 2xx."""

    def __init__(self, receiver: WebhookReceiver) -> None:
        self.receiver = receiver
        self.status = 200
        self.ok: set[int] = set()  # indexes into receiver.hits
        receiver.behaviour["/hook"] = self.answer

    def answer(self, seen: int) -> int:
        # Called by the receiver under its lock, right after it appended this very POST.
        if self.status == 200:
            self.ok.add(len(self.receiver.hits) - 1)
        return self.status

    def delivered(self) -> dict[str, list[Any]]:
        """queue id -> the POSTs of it that were answered 2xx."""
        with self.receiver.lock:
            hits = [h for i, h in enumerate(self.receiver.hits) if i in self.ok]
        result: dict[str, list[Any]] = {}
        for hit in hits:
            result.setdefault(hit.json["queue_id"], []).append(hit)
        return result


class Chaos:
    def __init__(self, args: argparse.Namespace, workdir: Path, broker: KafkaBroker | None) -> None:
        self.rng = random.Random(args.seed)
        self.broker = broker
        self.receiver = WebhookReceiver().start()
        # A killed server resets its connections, some mid-POST: expected here, so no tracebacks for them.
        self.receiver.server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self.endpoint = Endpoint(self.receiver)
        bootstrap = broker.bootstrap if broker else args.kafka_bootstrap
        self.config = write_config(
            workdir,
            streams=stream_toml("chaos", ["*@in.test"], self.receiver.url("/hook")),
            bus=kafka_toml(bootstrap) if bootstrap else 'backend = "embedded"',
            retry_schedule=RETRIES,
            extra='probe_interval = "1s"',
        )
        run_cli("init", config=self.config)
        self.server = InboundProcess(self.config).start()
        self.bad_exits: list[int] = []
        self.next_look = 0.0

    def fault(self, kind: str) -> None:
        """Inject one fault and return once it is over (the service, endpoint or broker is back)."""
        if kind == "sigkill":
            self.server.kill()
            self.server = InboundProcess(self.config).start()
        elif kind == "sigterm":
            code = self.server.terminate()
            if code != 0:
                self.bad_exits.append(code)
            self.server = InboundProcess(self.config).start()
        elif kind == "webhook 503":
            self.endpoint.status = 503
            time.sleep(self.rng.uniform(2.0, 6.0))  # the outage
            self.endpoint.status = 200
        elif kind == "long outage":
            self.endpoint.status = 503
            time.sleep(self.rng.uniform(12.0, 20.0))  # twice the whole retry schedule and more
            self.endpoint.status = 200
        else:
            assert self.broker is not None
            self.broker.kill()
            time.sleep(self.rng.uniform(1.0, 5.0))  # the outage
            self.broker.start()

    def run(self, cycles: int, traffic: Traffic) -> list[Cycle]:
        kinds = [k for k in KINDS if k != "broker kill" or self.broker is not None]
        order = [kinds[i % len(kinds)] for i in range(cycles)]
        self.rng.shuffle(order)
        done: list[Cycle] = []
        for number, kind in enumerate(order, 1):
            cycle = Cycle(kind, time.time())
            before = traffic.count()
            more = lambda: traffic.count() > before or len(traffic.sent) >= traffic.limit  # noqa: B023, E731
            wait_for(more, 120, "a 250 before the fault")
            time.sleep(self.rng.uniform(0.0, 3.0))  # a random moment, under load
            self.fault(kind)
            cycle.fault_end = time.time()
            done.append(cycle)
            print(f"cycle {number:2d}/{cycles}: {kind:<12} {traffic.count():6d} accepted so far", flush=True)
        return done

    def settled(self, traffic: Traffic) -> bool:
        """Every accepted message is final in the activity log, and delivered there if it was delivered."""
        delivered = self.endpoint.delivered()
        if len(delivered) < len(traffic.accepted) and time.monotonic() < self.next_look:
            return False  # the cheap check first; the activity log every few seconds
        self.next_look = time.monotonic() + 3.0
        status = {r["queue_id"]: r["status"] for r in activity(self.config)}
        return all(
            status.get(q) in FINAL and (q not in delivered or status[q] == "delivered") for q in traffic.accepted
        )


COLUMNS = ("cycles", "sent", "250s", "delivered", "lost", "failed", "dup POSTs", "contradictory", "catch-up")


def line(first: str, cells: list[str]) -> str:
    return f"{first:<12}" + "".join(f" {cell:>{max(len(name), 6)}}" for cell, name in zip(cells, COLUMNS, strict=True))


def report(chaos: Chaos, traffic: Traffic, cycles: list[Cycle], settled_at: float, verbose: bool) -> bool:
    """Print the table; True when nothing was lost, Failed or contradictory."""
    delivered = chaos.endpoint.delivered()  # 2xx POSTs only
    posted = chaos.receiver.by_queue_id()  # every POST (not cut short by a kill)
    records = activity(chaos.config)
    count = Counter(r["queue_id"] for r in records)
    status = {r["queue_id"]: r["status"] for r in records}
    subject_of = {s: q for q, s in traffic.accepted.items()}
    ends = [c.start for c in cycles[1:]] + [float("inf")]
    rows: dict[str, Counter[str]] = {kind: Counter() for kind in dict.fromkeys(c.kind for c in cycles)}
    catch_up: dict[str, float] = dict.fromkeys(rows, 0.0)
    for index, cycle in enumerate(cycles):
        row = rows[cycle.kind]
        row["cycles"] += 1
        begin = 0.0 if index == 0 else cycle.start
        sent = [s for s, at in traffic.sent.items() if begin <= at < ends[index]]
        accepted = [subject_of[s] for s in sent if s in subject_of]
        row["sent"] += len(sent)
        row["250s"] += len(accepted)
        for q in accepted:
            posts = delivered.get(q, [])
            ids = {h.headers["webhook-id"] for h in posted.get(q, [])}
            row["delivered"] += int(bool(posts))
            row["lost"] += int(not posts and status.get(q) not in FINAL)
            row["failed"] += int(status.get(q) == "failed")
            row["dup POSTs"] += max(0, len(posts) - 1)
            row["contradictory"] += int(count[q] > 1 or (bool(posts) and status.get(q) != "delivered") or len(ids) > 1)
        last = max((min(h.at for h in delivered[q]) for q in accepted if q in delivered), default=cycle.fault_end)
        last = max(last, cycle.fault_end)
        catch_up[cycle.kind] = max(catch_up[cycle.kind], last - cycle.fault_end)
        if verbose:
            print(
                f"cycle {index + 1:2d} {cycle.kind:<12} {len(sent):5d} sent, caught up in {last - cycle.fault_end:.1f}s"
            )
    total: Counter[str] = sum(rows.values(), Counter())
    last_delivery = max((min(h.at for h in delivered[q]) for q in traffic.accepted if q in delivered), default=0.0)
    catch_up["total"] = max(0.0, last_delivery - cycles[-1].fault_end)  # from the last fault's end
    print("\n" + line("fault", list(COLUMNS)))
    for name, row in [*rows.items(), ("total", total)]:
        print(line(name, [str(row[c]) for c in COLUMNS[:-1]] + [f"{catch_up[name]:.1f}s"]))
    in_doubt = {h.json["subject"] for posts in delivered.values() for h in posts} & traffic.in_doubt
    print(f"\nrefused or broken connections: {traffic.refused}; unexpected SMTP answers: {len(traffic.unexpected)}")
    print(f"no answer to DATA (in doubt, not counted): {len(traffic.in_doubt)}, delivered anyway: {len(in_doubt)}")
    print(f"every accepted message final {settled_at:.1f}s after the last fault")
    if chaos.bad_exits:
        print(f"SIGTERM exit codes other than 0: {chaos.bad_exits}")
    clean = total["lost"] == 0 and total["failed"] == 0 and total["contradictory"] == 0
    return clean and not chaos.bad_exits and not traffic.unexpected


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=20, help="faults to inject (at least 20 is the point)")
    parser.add_argument("--seed", type=int, default=1, help="seeds the fault order and timing and the clients")
    parser.add_argument("--rate", type=float, default=20.0, help="messages per second, both clients together")
    parser.add_argument("--max-messages", type=int, default=50_000, help="stop sending after this many")
    parser.add_argument("--catch-up-timeout", type=float, default=300.0, help="seconds to wait after the last fault")
    parser.add_argument("-v", "--verbose", action="store_true", help="also print each cycle's catch-up")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, data) even on success")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--kafka-bootstrap", metavar="HOST:PORT", help="run on this Kafka broker (no broker faults)")
    group.add_argument("--kafka", action="store_true", help="start a broker of its own (adds broker faults)")
    args = parser.parse_args()
    if not 1 <= args.cycles <= 500:
        parser.error("--cycles must be between 1 and 500")

    workdir = Path(tempfile.mkdtemp(prefix="inbound-chaos-"))
    broker = KafkaBroker(fetch_jars()) if args.kafka else None
    chaos: Chaos | None = None
    ok = False
    try:
        if broker is not None:
            broker.start()
        chaos = Chaos(args, workdir, broker)
        print(f"bus: {'kafka' if broker or args.kafka_bootstrap else 'embedded'}; work directory: {workdir}")
        pause = 2 / args.rate if args.rate > 0 else 0.0
        with Traffic(chaos.config, seed=args.seed, limit=args.max_messages, pause=pause) as traffic:
            cycles = chaos.run(args.cycles, traffic)
            time.sleep(1.0)  # a little traffic after the last fault, too
        try:
            wait_for(lambda: chaos is not None and chaos.settled(traffic), args.catch_up_timeout, "the catch-up")
        except AssertionError as exc:
            print(exc)
        ok = report(chaos, traffic, cycles, time.time() - cycles[-1].fault_end, args.verbose)
    finally:
        if chaos is not None:
            chaos.server.stop()
            chaos.receiver.stop()
        if broker is not None:
            broker.close()
    if ok and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"{'OK' if ok else 'FAILED'}: logs and data kept in {workdir}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

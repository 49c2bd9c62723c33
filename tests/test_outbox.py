"""The deliverer's due-time table on real SQLite: arrival order, leases, probes, release, pruning."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from inbound.delivery.outbox import CLAIMABLE, NEXT_DUE, Delivery, Outbox

from .test_delivery import START, Clock


class Ticking(Clock):
    """A clock a second further on at each reading of the wall clock: every write is later than the one before."""

    def time(self) -> float:
        self.elapsed += 1
        return self.now


def delivery(n: int, stream: str = "s", generation: int = 0) -> Delivery:
    return Delivery(f"Q{n}-{stream}", stream, f"Q{n}", generation, b'{"n": %d}' % n, 0, 0, 0.0)


def test_claims_come_in_arrival_order_and_are_leased_once(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    outbox.add([delivery(n) for n in range(5)])
    outbox.add([delivery(2)])  # a duplicate of a record consumed twice is kept once
    first = outbox.claim("s", 3, "me", lease_seconds=60)
    assert [d.delivery_id for d in first] == ["Q0-s", "Q1-s", "Q2-s"]
    assert [d.delivery_id for d in outbox.claim("s", 10, "other", lease_seconds=60)] == ["Q3-s", "Q4-s"]
    assert outbox.claim("s", 10, "third", lease_seconds=60) == []  # all leased
    assert outbox.waiting("s").count == 5


def test_a_lapsed_lease_is_taken_over(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    outbox.add([delivery(1)])
    assert outbox.claim("s", 1, "killed", lease_seconds=-1)  # a process that died mid-attempt
    assert [d.delivery_id for d in outbox.claim("s", 1, "survivor", lease_seconds=60)] == ["Q1-s"]


def test_a_lease_outlasts_a_step_forward_of_the_system_clock(tmp_path: Path) -> None:
    # Leases were wall-clock times: a step forward past one let a second deliverer claim, and
    # POST, a delivery whose POST was under way in the first (two POSTs, two `delivered` events).
    clock = Clock()
    outbox = Outbox(tmp_path / "outbox.db", clock=clock)
    outbox.add([delivery(1)])
    assert outbox.claim("s", 1, "first", lease_seconds=17.5)
    clock.step(60)
    assert outbox.claim("s", 1, "second", lease_seconds=17.5) == []
    clock.now += 18  # the lease has run out: its holder is taken for dead
    assert [d.delivery_id for d in outbox.claim("s", 1, "second", lease_seconds=17.5)] == ["Q1-s"]


def test_the_leases_of_another_boot_have_lapsed(tmp_path: Path) -> None:
    """Leases are monotonic times, which start again at each boot: their holders died with theirs."""
    clock = Clock()
    outbox = Outbox(tmp_path / "outbox.db", clock=clock)
    outbox.add([delivery(1), delivery(2)])
    assert outbox.claim("s", 2, "before", lease_seconds=3600)
    Outbox(tmp_path / "outbox.db", clock=clock).close()  # another process of this boot opens it
    assert outbox.claim("s", 2, "same boot", lease_seconds=60) == []
    outbox.close()
    rebooted = Clock()
    rebooted.boot_id = "after a reboot"
    rebooted.elapsed = -4000  # its monotonic clock started again, far behind the leases
    rebooted.step(4060)  # and the wall clock reads a minute later
    outbox = Outbox(tmp_path / "outbox.db", clock=rebooted)
    assert [d.delivery_id for d in outbox.claim("s", 2, "after", lease_seconds=60)] == ["Q1-s", "Q2-s"]
    outbox.close()


def test_a_lease_on_the_wall_clock_has_lapsed(tmp_path: Path) -> None:
    """A deliverer of before leases were monotonic, still running after a newer process first opened the
    outbox, writes leases on the wall clock: read as monotonic they lapsed in 57 years, and the delivery of
    one killed holding it waited for the next boot."""
    clock = Clock()
    outbox = Outbox(tmp_path / "outbox.db", clock=clock)
    outbox.add([delivery(1)])
    with sqlite3.connect(tmp_path / "outbox.db") as old_deliverer:
        old_deliverer.execute("UPDATE deliveries SET lease_owner = 'old', lease_until = ?", (clock.time() + 60,))
    assert outbox.next_due() is not None
    assert [d.delivery_id for d in outbox.claim("s", 1, "new", lease_seconds=60)] == ["Q1-s"]
    outbox.close()


def test_a_hold_gives_back_the_outage_s_steps_and_probes_take_turns(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db", clock=Ticking())
    outbox.add([delivery(1), delivery(2), delivery(3)])
    for claimed in outbox.claim("s", 3, "me", lease_seconds=60):
        outbox.reschedule(claimed, 3600)  # each failure used a step: due in an hour
    assert outbox.claim("s", 3, "me", lease_seconds=60) == []
    outbox.hold("s", since=5.0, failed={"Q1-s", "Q2-s"})  # their failures showed the endpoint down
    assert outbox.held_since("s") == 5.0
    held = outbox.claim("s", 3, "me", lease_seconds=60)
    assert [(d.delivery_id, d.attempts, d.steps) for d in held] == [("Q1-s", 1, 0), ("Q2-s", 1, 0)]
    for claimed in held:
        outbox.release(claimed)
    [probe] = outbox.claim("s", 1, "me", lease_seconds=60, probe=True)
    outbox.reschedule(probe, None)  # a failed probe: counted, no step used, tried last next time
    [second_probe] = outbox.claim("s", 1, "me", lease_seconds=60, probe=True)
    assert (probe.delivery_id, second_probe.delivery_id) == ("Q1-s", "Q2-s")
    outbox.release(second_probe)
    outbox.unhold("s")
    assert outbox.held_since("s") is None
    again = outbox.claim("s", 3, "me", lease_seconds=60)
    assert [(d.delivery_id, d.attempts, d.steps) for d in again] == [("Q1-s", 2, 0), ("Q2-s", 1, 0)]


def test_a_later_generation_starts_a_finished_delivery_over(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    outbox.add([delivery(1)])
    outbox.finish_many(outbox.claim("s", 1, "me", lease_seconds=60))
    outbox.add([delivery(1)])  # a replayed record of the same generation: stays finished
    assert outbox.claim("s", 1, "me", lease_seconds=60) == []
    outbox.add([delivery(1, generation=1)])  # `inbound retry`
    [retried] = outbox.claim("s", 1, "me", lease_seconds=60)
    assert (retried.generation, retried.attempts, retried.payload) == (1, 0, b'{"n": 1}')


def test_prune_forgets_only_finished_deliveries(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    outbox.add([delivery(1), delivery(2)])
    outbox.finish_many(outbox.claim("s", 1, "me", lease_seconds=60))
    outbox.prune(older_than=-1)
    outbox.add([delivery(1)])  # forgotten, so a very late duplicate would be new again
    assert [d.delivery_id for d in outbox.claim("s", 5, "me", lease_seconds=60)] == ["Q1-s", "Q2-s"]


def test_a_claim_in_arrival_order_reads_only_the_index(tmp_path: Path) -> None:
    """Read through the table, a claim read every due row and its payload's pages (25 ms with 5,000 waiting)."""
    outbox = Outbox(tmp_path / "outbox.db")
    query = "EXPLAIN QUERY PLAN " + CLAIMABLE.format(order="queue_id")
    plan = outbox.db.execute(query, ("s", 1, 1, 1, 1, 1, 1)).fetchall()
    assert [row[-1] for row in plan] == ["SEARCH deliveries USING COVERING INDEX claimable (stream=? AND done=?)"]


def test_the_next_due_time_is_read_from_the_index_and_skips_leased_deliveries(tmp_path: Path) -> None:
    """Through the table, next_due read every waiting row's payload pages: 13 % of a draining pipeline's CPU."""
    outbox = Outbox(tmp_path / "outbox.db", clock=Ticking())
    plan = outbox.db.execute("EXPLAIN QUERY PLAN " + NEXT_DUE, (1, 2)).fetchall()
    assert [row[-1] for row in plan] == ["SEARCH deliveries USING COVERING INDEX next_due (done=?)"]
    assert outbox.next_due() is None
    outbox.add([delivery(1), delivery(2)])
    [first] = outbox.claim("s", 1, "me", lease_seconds=600)
    outbox.reschedule(outbox.claim("s", 1, "me", lease_seconds=600)[0], 3600)
    assert (outbox.next_due() or 0) > START + 3000  # the leased one is not counted
    outbox.finish_many([first])
    assert (outbox.next_due() or 0) > START + 3000  # nor the finished one


def test_a_failure_rescheduled_after_its_stream_was_held_is_held_too(tmp_path: Path) -> None:
    """Two attempts fail together; the second shows the outage and holds the stream before the first is rescheduled."""
    outbox = Outbox(tmp_path / "outbox.db", clock=Ticking())
    outbox.add([delivery(1), delivery(2)])
    first, second = outbox.claim("s", 2, "me", lease_seconds=60)
    outbox.reschedule(second, None)  # it showed the outage: held
    outbox.hold("s", since=5.0, failed={first.delivery_id})  # the first is still under attempt
    outbox.reschedule(first, 3600)  # decided while the endpoint still looked up
    again = outbox.claim("s", 2, "me", lease_seconds=60)
    assert [(d.delivery_id, d.attempts, d.steps) for d in again] == [("Q1-s", 1, 0), ("Q2-s", 1, 0)]


def test_a_done_delivery_keeps_no_payload_even_when_consumed_again(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    outbox.add([delivery(1), delivery(2)])
    outbox.finish_many(outbox.claim("s", 1, "me", lease_seconds=60))
    outbox.add([delivery(1)])  # a late duplicate
    assert outbox.db.execute("SELECT delivery_id FROM payloads").fetchall() == [("Q2-s",)]


def test_finishing_deliveries_does_not_write_their_payloads_again(tmp_path: Path) -> None:
    """A payload is written once, to keep it; blanking it at the finish doubled the outbox's writes."""
    outbox = Outbox(tmp_path / "outbox.db")
    payload = bytes(range(256)) * 160  # 40 KiB: ten pages each, that a blanking DELETE writes again
    deliveries = [Delivery(f"Q{n}-s", "s", f"Q{n}", 0, payload, 0, 0, 0.0) for n in range(5)]
    outbox.add(deliveries)
    claimed = outbox.claim("s", 5, "me", lease_seconds=60)
    log = tmp_path / "outbox.db-wal"
    before = log.stat().st_size
    outbox.finish_many(claimed)
    assert log.stat().st_size - before < len(payload) * len(deliveries) / 2  # rows and index pages
    assert outbox.db.execute("SELECT COUNT(*) FROM payloads").fetchone() == (0,)


def test_payloads_kept_in_the_rows_by_an_older_outbox_move_to_their_table_on_open(tmp_path: Path) -> None:
    """Before ``payloads``, each claim and attempt wrote the row and its payload again."""
    path = tmp_path / "outbox.db"
    Outbox(path).close()
    older = sqlite3.connect(path)
    older.execute(
        "INSERT INTO deliveries (delivery_id, stream, queue_id, generation, payload, due_at, added_at)"
        " VALUES ('Q1-s', 's', 'Q1', 0, X'7B7D', 0, 0)"
    )
    older.commit()
    older.close()
    outbox = Outbox(path)
    assert outbox.db.execute("SELECT COUNT(*) FROM deliveries WHERE payload IS NOT NULL").fetchone() == (0,)
    assert [d.payload for d in outbox.claim("s", 5, "me", lease_seconds=60)] == [b"{}"]


def test_deliveries_claimed_to_be_failed_are_read_without_their_payload(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    outbox.add([delivery(1)])
    (expired,) = outbox.claim("s", 100, "me", lease_seconds=60, added_before=float("inf"), payloads=False)
    assert (expired.delivery_id, expired.payload) == ("Q1-s", b"")
    outbox.release(expired)
    (claimed,) = outbox.claim("s", 1, "me", lease_seconds=60)
    assert claimed.payload == b'{"n": 1}'  # still kept for its POST

"""`record` processes write one PostgreSQL activity store, one taking over when another is killed; the CLI reads it."""

from __future__ import annotations

from pathlib import Path

from .fixtures import Pipeline
from .harness import InboundProcess, activity, send, simple_message, wait_for
from .postgres_server import PostgresServer


def test_recorders_share_one_database_across_a_kill(tmp_path: Path, postgres_server: PostgresServer) -> None:
    dsn = postgres_server.new_database()
    pipeline = Pipeline(tmp_path, 'backend = "embedded"')
    try:
        config = pipeline.configure(extra=f'[activity]\nbackend = "postgresql"\ndsn = "{dsn}"\n')
        pipeline.start(roles="smtp,publish,process,deliver")
        recorders = [InboundProcess(config, roles="record", log=tmp_path / f"record{n}.log") for n in (1, 2)]
        pipeline.processes += recorders
        recorders[0].start()

        def delivered(queue_ids: list[str]) -> bool:
            records = activity(config)  # `inbound activity list --json`, reading PostgreSQL
            return set(queue_ids) <= {r["queue_id"] for r in records if r["status"] == "delivered"}

        first = [send(config, "a@sender.test", ["help@example.org"], simple_message(f"m{n}")) for n in range(10)]
        wait_for(lambda: delivered(first), 90, "the first messages recorded by the first recorder")
        recorders[1].start()
        recorders[0].kill()  # SIGKILL: the second takes the consumer group's work over
        later = [send(config, "a@sender.test", ["help@example.org"], simple_message(f"m{n}")) for n in range(10, 20)]
        # Sent after the kill: only the second recorder can have recorded these.
        wait_for(lambda: delivered(first + later), 90, "every message recorded as delivered in PostgreSQL")
        records = activity(config)
        assert len(records) == 20  # one record per delivery, whichever process wrote which event
        assert all(len(r["attempts"]) == 1 for r in records)
        assert not (tmp_path / "data" / "activity.db").exists()  # nothing went to SQLite
    finally:
        pipeline.close()

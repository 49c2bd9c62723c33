"""The HTTP API in process: a real embedded bus and SQLite store, requests through Starlette's TestClient.

Focused tests pin authentication, problem details, paging, lookups by delivery
and queue id, the raw message and the actions' effect on the bus; schemathesis
then generates requests from ``/openapi.json`` and checks every answer against
that same document (status codes, content types, bodies).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.config import SchemathesisConfig

from inbound.activity import SQLiteActivityStore
from inbound.bus import TOPICS, open_bus
from inbound.clock import rfc3339
from inbound.config import HttpSettings, Settings, StorageSettings, StreamSettings
from inbound.control import read_pauses
from inbound.datadir import DataDir
from inbound.delivery.outbox import Outbox
from inbound.envelope import Envelope, Recipient
from inbound.events import Attempt, Event, EventType, Summary
from inbound.records import EVENTS, JSON, RECEIVED, decode_event, encode_received
from inbound.web.api import create_app
from inbound.web.backends import Backends
from inbound.web.problems import MEDIA_TYPE

ACT = "act-token-0123456789abcdefghij"
READ = "read-token-0123456789abcdefghij"
SECRET = "whsec_ZGV2ZWxvcG1lbnQtb25seS1zZWNyZXQtMzItYnl0ZXM="
RAW = b"From: alice@sender.test\r\nTo: help@in.test\r\nSubject: Invoice 42\r\n\r\nHello\r\n"
NOW = time.time()


def qid(n: int) -> str:
    return f"01JE{n:022d}"


def at(n: int) -> str:
    """n minutes ago: everything lands today, or yesterday just after midnight."""
    return rfc3339(NOW - 60 * n)


def delivery(n: int, stream: str = "support", *, subject: str = "Hello", failed: bool = False) -> list[Event]:
    did = f"{qid(n)}-{stream}"
    summary = Summary(at(20 - n), "alice@sender.test", ("help@in.test",), subject, 100, 0)
    attempt = Attempt(1, at(19 - n), 403 if failed else 200, None, 12.0)
    last = EventType.FAILED if failed else EventType.DELIVERED
    return [
        Event(
            EventType.PROCESSED, did, qid(n), stream, at(20 - n), summary=summary, payload=b'{"n":1}', payload_type=JSON
        ),
        Event(EventType.ATTEMPT, did, qid(n), stream, at(19 - n), attempt=attempt),
        Event(last, did, qid(n), stream, at(19 - n), reason="HTTP 403" if failed else None),
    ]


@pytest.fixture
def backends(tmp_path: Path) -> Iterator[Backends]:
    DataDir(tmp_path).init()
    streams = tuple(
        StreamSettings(name, (f"{name}@in.test",), "https://a.test/", SECRET) for name in ("support", "sales")
    )
    config = Settings(tmp_path / "inbound.toml", storage=StorageSettings(tmp_path), streams=streams,
                      http=HttpSettings(tokens=(ACT,), read_only_tokens=(READ,)))  # fmt: skip
    bus = open_bus(config)
    bus.ensure_topics(TOPICS)
    store = SQLiteActivityStore(tmp_path / "activity.db")
    for n in range(1, 8):
        store.apply(delivery(n, subject="Invoice 42" if n == 3 else "Hello", failed=n == 5))
    store.apply(delivery(3, "sales", subject="Invoice 42"))  # queue id 3 went to two streams
    envelope = Envelope(qid(3), "alice@sender.test", (Recipient("help@in.test", "support", None),), "127.0.0.1:1",
                        "client.test", False, at(17))  # fmt: skip
    producer = bus.producer()
    producer.send(RECEIVED, encode_received(envelope, RAW), key=qid(3).encode())
    producer.flush()
    producer.close()
    yield Backends(config, bus, store)
    store.close()
    bus.close()


@pytest.fixture
def app(backends: Backends) -> FastAPI:
    return create_app(backends)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, headers={"Authorization": f"Bearer {READ}"}) as client:
        yield client


def as_actor() -> dict[str, str]:
    return {"Authorization": f"Bearer {ACT}"}


def assert_problem(response: Any, status: int, detail: str = "") -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == MEDIA_TYPE
    body = response.json()
    assert body["status"] == status
    assert body["title"]
    assert detail in body.get("detail", "")


def test_tokens_read_and_act(client: TestClient) -> None:
    anonymous = client.get("/v1/messages", headers={"Authorization": ""})
    assert_problem(anonymous, 401, "Bearer")
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert_problem(client.get("/v1/messages", headers={"Authorization": "Bearer nope"}), 401, "unknown token")
    assert_problem(client.get("/v1/messages", headers={"Authorization": f"Basic {READ}"}), 401)
    assert client.get("/v1/messages").status_code == 200
    assert_problem(client.post(f"/v1/messages/{qid(5)}-support/retry"), 403, "only read")
    assert_problem(client.post("/v1/streams/support/pause"), 403)
    assert client.get("/v1/messages", headers=as_actor()).status_code == 200
    for public in ("/healthz", "/readyz", "/openapi.json"):
        assert client.get(public, headers={"Authorization": ""}).status_code == 200, public


def test_a_body_is_not_looked_at_before_the_token(client: TestClient) -> None:
    """An anonymous caller learns nothing from a body's faults: not even that it is no JSON."""
    json_body = {"content-type": "application/json"}
    for body in (b"{", b'{"stream": 5}', b'{"stream": "support", "since": "2026-11-22T10:00:00Z"}'):
        assert_problem(client.post("/v1/replay", content=body, headers={**json_body, "Authorization": ""}), 401)
        assert_problem(client.post("/v1/replay", content=body, headers=json_body), 403)  # a read-only token
    malformed = client.post("/v1/replay", content=b"{", headers={**json_body, **as_actor()})
    assert_problem(malformed, 422)
    assert malformed.json()["errors"][0]["loc"] == ["body"]
    missing = client.post("/v1/replay", content=b'{"stream": "support"}', headers={**json_body, **as_actor()})
    assert missing.json()["errors"] == [{"loc": ["body", "since"], "msg": "Field required"}]


def test_errors_are_problem_details(client: TestClient) -> None:
    assert_problem(client.get("/v1/messages/01JE9999"), 404, "no message with id")
    assert_problem(client.get("/v1/nowhere"), 404)
    assert_problem(client.delete("/v1/messages"), 405)
    assert_problem(client.get("/v1/messages?limit=0"), 422)
    assert client.get("/v1/messages?limit=0").json()["errors"][0]["loc"] == ["query", "limit"]
    assert_problem(client.get("/v1/messages?cursor=bm9wZQ"), 400, "cursor")
    assert_problem(client.get("/v1/messages?since=2026-11-22T10:00:00"), 400, "time zone")
    assert_problem(client.get("/v1/messages?stream=nobody"), 404, "streams: sales, support")
    assert_problem(client.get("/v1/stats?stream=nobody"), 404)


def test_paging_is_newest_first_and_complete(client: TestClient) -> None:
    everything = client.get("/v1/messages?limit=500").json()
    assert everything["next_cursor"] is None
    ids = [m["delivery_id"] for m in everything["items"]]
    assert len(ids) == 8
    received = [m["received_at"] for m in everything["items"]]
    assert received == sorted(received, reverse=True)
    seen: list[str] = []
    url = "/v1/messages?limit=3"
    while True:
        page = client.get(url).json()
        seen += [m["delivery_id"] for m in page["items"]]
        if page["next_cursor"] is None:
            break
        url = f"/v1/messages?limit=3&cursor={page['next_cursor']}"
    assert seen == ids


def cursor_of(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


NESTED = cursor_of("[" * 5000 + "]" * 5000)  # deeper than the JSON parser's recursion limit


@pytest.mark.parametrize(
    "cursor",
    [
        NESTED,
        cursor_of('{"a": 1, "b": 2}'),  # two keys
        cursor_of('"ab"'),  # two characters
        cursor_of('["2026-11-22T10:00:00.000Z","01JE-support"]'),  # a list, spelt otherwise
        cursor_of('["2026-11-22T10:00:00.000Z", "01JE-support", ""]'),
        cursor_of("[1, 2]"),
    ],
)
def test_a_cursor_this_api_did_not_issue_is_refused(client: TestClient, cursor: str) -> None:
    assert_problem(client.get("/v1/messages", params={"cursor": cursor}), 400, "cursor is not one this API returned")


def test_filters(client: TestClient) -> None:
    def ids(query: str) -> list[str]:
        response = client.get(f"/v1/messages?{query}")
        assert response.status_code == 200, response.text
        return [m["delivery_id"] for m in response.json()["items"]]

    assert ids("q=invoice") == [f"{qid(3)}-support", f"{qid(3)}-sales"]
    assert ids("q=invoice&stream=sales") == [f"{qid(3)}-sales"]
    assert ids("status=failed") == [f"{qid(5)}-support"]
    assert ids("sender=ALICE@sender.test&limit=2") == ids("limit=2")
    assert ids("recipient=nobody@in.test") == []
    assert ids(f"since={at(20 - 6)}") == [f"{qid(7)}-support", f"{qid(6)}-support"]


def test_message_by_delivery_id_and_by_queue_id(client: TestClient) -> None:
    one = client.get(f"/v1/messages/{qid(3)}-sales").json()
    assert (one["stream"], one["status"], one["subject"], one["from"]) == (
        "sales",
        "delivered",
        "Invoice 42",
        "alice@sender.test",
    )
    assert (one["payload"], one["payload_type"]) == ({"n": 1}, JSON)
    assert [(a["number"], a["status_code"]) for a in one["attempts"]] == [(1, 200)]
    both = client.get(f"/v1/messages/{qid(3)}").json()
    assert both["queue_id"] == qid(3)
    assert sorted(d["stream"] for d in both["deliveries"]) == ["sales", "support"]
    assert all(d["payload"] == {"n": 1} for d in both["deliveries"])


def test_raw_message_while_retained(client: TestClient) -> None:
    for message_id in (qid(3), f"{qid(3)}-support"):
        raw = client.get(f"/v1/messages/{message_id}/raw")
        assert raw.status_code == 200
        assert raw.headers["content-type"] == "message/rfc822"
        assert raw.content == RAW
    assert_problem(
        client.get(f"/v1/messages/{qid(1)}-support/raw"), 404, f"no message with queue id {qid(1)} on the bus"
    )


def test_retry_writes_the_request_to_the_bus(client: TestClient, backends: Backends) -> None:
    failed = f"{qid(5)}-support"
    response = client.post(f"/v1/messages/{failed}/retry", headers=as_actor())
    assert response.status_code == 202, response.text
    assert response.json() == {"delivery_id": failed, "generation": 1}
    events = [decode_event(r.value) for r in backends.bus.read_all(EVENTS)]
    assert [(e.type, e.delivery_id, e.generation, e.reason) for e in events] == [
        (EventType.RETRY_REQUESTED, failed, 1, "retry requested by api")
    ]
    # asked twice before the first is recorded: refused, not accepted and dropped by the deliverer
    assert_problem(client.post(f"/v1/messages/{failed}/retry", headers=as_actor()), 409, "generation 1, not in the")
    assert_problem(client.post(f"/v1/messages/{qid(1)}-support/retry", headers=as_actor()), 409, "only failed")
    assert_problem(client.post(f"/v1/messages/{qid(3)}/retry", headers=as_actor()), 409, "queue id")
    assert_problem(client.post("/v1/messages/nothing/retry", headers=as_actor()), 404)
    removed = f"{qid(5)}-gone"  # of a stream a reload removed: it would wait, Queued, for no deliverer
    backends.store.apply([Event(EventType.FAILED, removed, qid(5), "gone", at(5), reason="HTTP 500")])
    assert_problem(client.post(f"/v1/messages/{removed}/retry", headers=as_actor()), 409, "no longer configured")


def test_bypass_and_replay(client: TestClient, backends: Backends) -> None:
    blocked = f"{qid(9)}-support"
    envelope = Envelope(qid(9), "spam@x.test", (Recipient("help@in.test", "support", None),), "127.0.0.1:1",
                        "client.test", False, at(3))  # fmt: skip
    producer = backends.bus.producer()
    producer.send(RECEIVED, encode_received(envelope, RAW), key=qid(9).encode())
    producer.flush()
    producer.close()
    backends.store.apply([Event(EventType.BLOCKED, blocked, qid(9), "support", at(3), reason="block_senders")])
    response = client.post(f"/v1/messages/{blocked}/bypass", headers=as_actor())
    assert response.status_code == 202, response.text
    assert response.json() == {"delivery_id": blocked, "generation": 1}
    assert_problem(client.post(f"/v1/messages/{blocked}/bypass", headers=as_actor()), 409, "generation 1, not in the")
    assert_problem(client.post(f"/v1/messages/{qid(1)}-support/bypass", headers=as_actor()), 409, "only blocked")

    replayed = client.post(
        "/v1/replay", headers=as_actor(), json={"stream": "support", "since": at(60), "status": "failed"}
    )
    assert replayed.status_code == 202, replayed.text
    assert replayed.json() == {"count": 1, "delivery_ids": [f"{qid(5)}-support"], "not_sent": {}}
    everything = client.post("/v1/replay", headers=as_actor(), json={"stream": "support", "since": at(60)})
    assert everything.json()["count"] == 6  # all but the failed one: its first replay is not recorded yet
    assert list(everything.json()["not_sent"]) == [f"{qid(5)}-support"]
    reasons = [decode_event(r.value).reason for r in backends.bus.read_all(EVENTS)]
    assert reasons.count("replay requested by api") == 7
    assert reasons.count("bypass requested by api") == 1
    assert_problem(client.post("/v1/replay", headers=as_actor(), json={"stream": "nobody", "since": at(60)}), 404)
    naive = {"stream": "support", "since": "2026-11-22T10:00:00"}
    assert_problem(client.post("/v1/replay", headers=as_actor(), json=naive), 400, "time zone")


def test_a_replay_names_what_it_could_not_send(client: TestClient, backends: Backends) -> None:
    """A store rebuilt after bus.retention dropped a payload: the replay says so, not count 0."""
    past = delivery(8, "sales", failed=True)
    backends.store.apply([replace(event, payload=None, payload_type=None) for event in past])
    replayed = client.post("/v1/replay", headers=as_actor(), json={"stream": "sales", "since": at(60)})
    assert replayed.status_code == 202, replayed.text
    assert (replayed.json()["count"], list(replayed.json()["not_sent"])) == (1, [f"{qid(8)}-sales"])
    assert "past bus.retention" in replayed.json()["not_sent"][f"{qid(8)}-sales"]
    retried = client.post(f"/v1/messages/{qid(8)}-sales/retry", headers=as_actor())
    assert_problem(retried, 409, "its payload is not in the activity store")


def test_pause_and_resume(client: TestClient, backends: Backends) -> None:
    assert client.post("/v1/streams/sales/pause", headers=as_actor()).json() == {"stream": "sales", "paused": True}
    assert read_pauses(backends.bus) == {"sales": True}
    status = client.get("/v1/status").json()
    assert [(s["stream"], s["paused"]) for s in status["streams"]] == [("support", False), ("sales", True)]
    assert status["counts"]["delivered"] == 7
    client.post("/v1/streams/sales/resume", headers=as_actor())
    assert read_pauses(backends.bus) == {"sales": False}
    assert_problem(client.post("/v1/streams/nobody/pause", headers=as_actor()), 404)


def test_status_says_what_inbound_status_says(client: TestClient, backends: Backends) -> None:
    """A held stream's held_for and spamd's outage were left out of /v1/status: its model dropped them."""
    outbox = Outbox(backends.settings.data.outbox)
    outbox.hold("sales", time.time() - 60, set())
    outbox.close()
    status = client.get("/v1/status").json()
    held = {s["stream"]: s["held_for"] for s in status["streams"]}
    assert held["support"] is None
    assert held["sales"] >= 60
    assert {"spamd_down_for", "spamd_problem", "bus_error"} <= set(status)


def test_stats_count_per_day_and_status(client: TestClient) -> None:
    stats = client.get("/v1/stats?days=3").json()
    assert [d["date"] for d in stats["days"]] == sorted(d["date"] for d in stats["days"])
    assert len(stats["days"]) == 3
    totals = {status: sum(d["counts"][status] for d in stats["days"]) for status in ("delivered", "failed")}
    assert totals == {"delivered": 7, "failed": 1}
    sales = client.get("/v1/stats?days=3&stream=sales").json()
    assert sum(sum(d["counts"].values()) for d in sales["days"]) == 1


def test_readiness_follows_the_store(client: TestClient, backends: Backends) -> None:
    assert client.get("/readyz").json() == {"status": "ok", "checks": {"data_dir": "ok", "bus": "ok", "store": "ok"}}
    backends.store.close()
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["store"].startswith("failing: ")
    assert_problem(client.get("/v1/messages"), 503, "unavailable")
    assert ready.headers["content-type"] == "application/json"


def test_metrics_read_now(client: TestClient, backends: Backends) -> None:
    anonymous = client.get("/metrics", headers={"Authorization": ""})
    assert anonymous.status_code == 401
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    for line in (
        "inbound_spool_entries 0.0",
        'inbound_bus_lag{group="process",topic="received"} 1.0',  # the received record the fixture wrote
        'inbound_deliveries_waiting{stream="support"} 0.0',
        'inbound_deliveries_held{stream="sales"} 0.0',
        "inbound_messages_accepted_total",
        "# TYPE inbound_accepted_to_delivered_seconds histogram",
    ):
        assert line in text, line
    assert float(text.split("\ninbound_disk_free_bytes ")[1].split()[0]) > 0


def test_openapi_document(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.")
    assert set(document["paths"]) == {
        "/healthz", "/readyz", "/v1/messages", "/v1/messages/{message_id}", "/v1/messages/{message_id}/raw",
        "/v1/messages/{message_id}/retry", "/v1/streams/{name}/pause", "/v1/streams/{name}/resume", "/v1/stats",
        "/v1/status", "/metrics", "/v1/messages/{message_id}/bypass", "/v1/replay",
    }  # fmt: skip
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    listing = document["paths"]["/v1/messages"]["get"]
    assert {p["name"] for p in listing["parameters"]} == {
        "status", "stream", "q", "sender", "recipient", "since", "until", "cursor", "limit"
    }  # fmt: skip
    assert MEDIA_TYPE in listing["responses"]["401"]["content"]


def test_api_keeps_its_own_schema(app: FastAPI) -> None:
    """Requests generated from /openapi.json get answers that /openapi.json documents, for every operation."""
    # 400 answers values a schema cannot describe: a cursor this API never issued, a time out of range
    accepted = ["2xx", "400", "401", "403", "404", "409"]
    config = SchemathesisConfig.from_dict({"checks": {"positive_data_acceptance": {"expected-statuses": accepted}}})
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 13
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def answers_as_documented(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=as_actor())

        answers_as_documented()


def test_read_only_tokens_cannot_be_used_to_act_even_with_the_schema(app: FastAPI) -> None:
    """A guard against a route added to the wrong router: every POST refuses a read-only token."""
    with TestClient(app, headers={"Authorization": f"Bearer {READ}"}) as client:
        document = client.get("/openapi.json").json()
        posts = [path for path, ops in document["paths"].items() if "post" in ops]
        assert posts
        for path in posts:
            url = path.replace("{message_id}", f"{qid(5)}-support").replace("{name}", "support")
            assert_problem(client.post(url), 403)

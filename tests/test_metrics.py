"""/metrics sums the counts of every process on a data directory; the alert rules name real metrics."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from .fixtures import Pipeline
from .harness import ROOT, InboundProcess, free_port, send, simple_message, stream_toml, wait_for

TOKEN = "metrics-token-0123456789abcdef"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.e2e  # runs inbound serve
def test_counts_from_every_process_are_summed(tmp_path: Path) -> None:
    pipeline = Pipeline(tmp_path, 'backend = "embedded"')
    port = free_port()
    try:
        config = pipeline.configure(extra=f'[http]\nlisten = "127.0.0.1:{port}"\ntokens = ["{TOKEN}"]\n')
        pipeline.receiver.behaviour["/hook"] = lambda seen: 503 if seen == 0 else 200
        pipeline.start()  # the supervisor: an edge process (smtp, publish) and a pipeline process (the rest)
        api = InboundProcess(config, roles="api", log=tmp_path / "api.log").start()
        pipeline.processes.append(api)
        queue_ids = [send(config, "a@sender.test", ["help@example.org"], simple_message()) for _ in range(2)]
        for queue_id in queue_ids:
            pipeline.wait_status(f"{queue_id}-support", "delivered")

        def scraped_after_the_last_attempt() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
            response = httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
            assert response.status_code == 200
            found = samples(response.text)
            # The deliverer counts an attempt, then times the delivery, just after it publishes the
            # outcome `delivered` is read from: a scrape at once can come before either.
            attempts = found.get(("inbound_webhook_attempts_total", (("result", "2xx"), ("stream", "support"))), 0)
            timed = found.get(("inbound_accepted_to_delivered_seconds_count", (("stream", "support"),)), 0)
            return found if attempts >= 2 and timed >= 2 else None

        found = wait_for(scraped_after_the_last_attempt, 30, "/metrics to count both deliveries")
    finally:
        pipeline.close()
    support = (("stream", "support"),)
    assert found[("inbound_messages_accepted_total", ())] == 2  # counted by the edge process
    assert found[("inbound_smtp_replies_total", (("code", "250"),))] >= 8  # EHLO, MAIL, RCPT, DATA, twice
    assert found[("inbound_smtp_connections_total", ())] >= 2
    processed = (("outcome", "processed"), ("stream", "support"))
    assert found[("inbound_deliveries_processed_total", processed)] == 2  # by the pipeline process
    assert found[("inbound_webhook_attempts_total", (("result", "5xx"), ("stream", "support")))] == 1
    assert found[("inbound_webhook_attempts_total", (("result", "2xx"), ("stream", "support")))] == 2
    assert found[("inbound_accepted_to_delivered_seconds_count", support)] == 2
    assert found[("inbound_endpoint_failing", support)] == 0
    assert found[("inbound_bus_lag", (("group", "record"), ("topic", "events")))] >= 0


@pytest.mark.e2e  # runs inbound serve
def test_one_process_serving_every_role_and_the_api_counts_what_it_does(tmp_path: Path) -> None:
    """``serve --roles ...,api``: the only way to serve the API on one host; its own counts are on /metrics."""
    pipeline = Pipeline(tmp_path, 'backend = "embedded"')
    port = free_port()
    # One stream delivered to, one whose endpoint refuses every connection: down at its first attempt.
    streams = stream_toml("support", ["help@example.org"], pipeline.receiver.url("/hook")) + stream_toml(
        "down", ["help@down.test"], f"http://127.0.0.1:{free_port()}/hook"
    )
    try:
        config = pipeline.configure(streams, extra=f'[http]\nlisten = "127.0.0.1:{port}"\ntokens = ["{TOKEN}"]\n')
        pipeline.start(roles="smtp,publish,process,deliver,record,api")
        queue_id = send(config, "a@sender.test", ["help@example.org"], simple_message())
        send(config, "a@sender.test", ["help@down.test"], simple_message())
        pipeline.wait_status(f"{queue_id}-support", "delivered")

        def scraped_once_both_are_counted() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
            response = httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
            assert response.status_code == 200
            found = samples(response.text)
            timed = found.get(("inbound_accepted_to_delivered_seconds_count", (("stream", "support"),)), 0)
            down = found.get(("inbound_endpoint_failing", (("stream", "down"),)), 0)
            return found if timed >= 1 and down == 1 else None

        found = wait_for(scraped_once_both_are_counted, 30, "/metrics to count the delivery and the endpoint down")
        page = httpx.get(f"http://127.0.0.1:{port}/", headers={"Cookie": f"inbound_token={TOKEN}"})
    finally:
        pipeline.close()
    assert found[("inbound_smtp_connections_total", ())] >= 2
    assert found[("inbound_messages_accepted_total", ())] == 2
    processed = (("outcome", "processed"), ("stream", "support"))
    assert found[("inbound_deliveries_processed_total", processed)] == 1
    assert found[("inbound_webhook_attempts_total", (("result", "2xx"), ("stream", "support")))] == 1
    assert found[("inbound_webhook_attempts_total", (("result", "error"), ("stream", "down")))] >= 1
    assert found[("inbound_endpoint_failing", (("stream", "support"),))] == 0
    assert '<dd id="failing">down</dd>' in page.text


def test_alert_rules_name_only_metrics_there_are() -> None:
    """deploy/alerts.yaml stays in step with the metric names (a renamed metric would silence an alert)."""
    from inbound import metrics
    from inbound.web import exposition

    rules = yaml.safe_load((ROOT / "deploy" / "alerts.yaml").read_text())["groups"][0]["rules"]
    names = set(re.findall(r"\binbound_[a-z_]+", " ".join(r["expr"] for r in rules)))
    known = {m._name for m in vars(metrics).values() if hasattr(m, "_name")}
    known |= {f"{n}_total" for n in known} | set(
        re.findall(r'"(inbound_[a-z_]+)"', Path(exposition.__file__).read_text())
    )
    assert names
    assert names <= known, names - known

"""The API served by `inbound serve --roles ...,api`: real SMTP in, a real failing endpoint, retry over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from .fixtures import Pipeline
from .harness import free_port, send, simple_message, wait_for

pytestmark = pytest.mark.e2e

TOKEN = "e2e-token-0123456789abcdefghij"


def test_failed_message_is_found_and_retried_over_http(tmp_path: Path) -> None:
    pipeline = Pipeline(tmp_path, 'backend = "embedded"')
    port = free_port()
    api = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        pipeline.configure(extra=f'[http]\nlisten = "127.0.0.1:{port}"\ntokens = ["{TOKEN}"]\n')
        pipeline.receiver.behaviour["/hook"] = lambda seen: 403 if seen == 0 else 200  # refuses the first POST
        process = pipeline.start(roles="smtp,publish,process,deliver,record,api")
        assert api.get("/healthz").json() == {"status": "ok", "checks": {}}
        message = simple_message(subject="Quarterly invoice")
        queue_id = send(pipeline.config, "alice@sender.test", ["help@in.test"], message)

        def deliveries() -> list[dict[str, Any]]:
            response = api.get(f"/v1/messages/{queue_id}")
            return list(response.json()["deliveries"]) if response.status_code == 200 else []

        def status() -> str | None:
            found = deliveries()
            return str(found[0]["status"]) if found else None

        wait_for(lambda: status() == "failed", 60, "the 403 to fail the delivery")
        (failed,) = deliveries()
        assert failed["attempts"][0]["status_code"] == 403
        raw = api.get(f"/v1/messages/{queue_id}/raw")
        assert raw.headers["content-type"] == "message/rfc822"
        assert raw.content.endswith(message)
        assert [m["queue_id"] for m in api.get("/v1/messages", params={"q": "quarterly"}).json()["items"]] == [queue_id]

        retried = api.post(f"/v1/messages/{failed['delivery_id']}/retry")
        assert retried.status_code == 202, retried.text
        wait_for(lambda: status() == "delivered", 60, "the retried delivery")
        assert deliveries()[0]["generation"] == 1
        assert len(pipeline.receiver.on("/hook")) == 2
        assert process.terminate() == 0
    finally:
        api.close()
        pipeline.close()

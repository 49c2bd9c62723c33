"""Fixtures shared by the end-to-end tests (loaded from conftest.py as a plugin)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from .harness import InboundProcess, WebhookReceiver, run_cli, statuses, stream_toml, wait_for, write_config

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


def schema_registry() -> Registry[Any]:
    resources = []
    for path in SCHEMAS.glob("*.schema.json"):
        schema = json.loads(path.read_text())
        resources.append((schema["$id"], Resource.from_contents(schema)))
    return Registry().with_resources(resources)


def validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text())
    return Draft202012Validator(schema, registry=schema_registry(), format_checker=Draft202012Validator.FORMAT_CHECKER)


@pytest.fixture(scope="session")
def message_schema() -> Draft202012Validator:
    return validator("inbound-message.schema.json")


def kafka_toml(bootstrap: str) -> str:
    """A [bus] section on Kafka with topics of its own (a fresh prefix)."""
    prefix = f"t{uuid.uuid4().hex[:10]}."
    return f'backend = "kafka"\nbootstrap_servers = ["{bootstrap}"]\ntopic_prefix = "{prefix}"\npartitions = 2'


@pytest.fixture(params=["embedded", pytest.param("kafka", marks=pytest.mark.kafka)])
def bus_toml(request: pytest.FixtureRequest) -> str:
    """The [bus] section of a test config, once per backend."""
    if request.param == "embedded":
        return 'backend = "embedded"'
    return kafka_toml(request.getfixturevalue("kafka_broker").bootstrap)


@pytest.fixture
def bus_toml_kafka(kafka_broker: Any) -> str:
    return kafka_toml(kafka_broker.bootstrap)


class Pipeline:
    def __init__(self, tmp_path: Path, bus: str) -> None:
        self.tmp_path = tmp_path
        self.bus = bus
        self.receiver = WebhookReceiver().start()
        self.processes: list[InboundProcess] = []

    def configure(self, streams: str | None = None, **kwargs: object) -> Path:
        streams = streams or stream_toml(
            "support", ["*@in.test", "help@example.org"], self.receiver.url("/hook"), ["*@spam.test"]
        )
        self.config = write_config(self.tmp_path, streams=streams, bus=self.bus, **kwargs)  # type: ignore[arg-type]
        run_cli("init", config=self.config)
        return self.config

    def start(self, roles: str | None = None, env: dict[str, str] | None = None) -> InboundProcess:
        process = InboundProcess(self.config, roles=roles, env=env).start()
        self.processes.append(process)
        return process

    def close(self) -> None:
        for process in self.processes:
            process.stop()
        self.receiver.stop()

    def wait_status(self, delivery_id: str, status: str, timeout: float = 60) -> None:
        wait_for(lambda: statuses(self.config).get(delivery_id) == status, timeout, f"{delivery_id} to be {status}")


_CALL_FAILED = pytest.StashKey[bool]()
LOG_LINES_ON_FAILURE = 80


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report: Any = yield
    if report.when == "call":
        item.stash[_CALL_FAILED] = report.failed
    return report  # type: ignore[no-any-return]  # a wrapper hands its report on


@pytest.fixture
def pipeline(tmp_path: Path, bus_toml: str, request: pytest.FixtureRequest) -> Iterator[Pipeline]:
    p = Pipeline(tmp_path, bus_toml)
    yield p
    if request.node.stash.get(_CALL_FAILED, False):
        # What the service said is what explains a timeout: shown with the failure, as teardown output.
        for process in p.processes:
            tail = process.log().splitlines()[-LOG_LINES_ON_FAILURE:]
            print(f"--- the last {len(tail)} lines of {process.log_path}", *tail, sep="\n")
    p.close()

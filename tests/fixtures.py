"""Fixtures shared by the end-to-end tests (loaded from conftest.py as a plugin)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

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


@pytest.fixture(params=["embedded", pytest.param("kafka", marks=pytest.mark.kafka)])
def bus_toml(request: pytest.FixtureRequest) -> str:
    """The [bus] section of a test config, once per backend."""
    if request.param == "embedded":
        return 'backend = "embedded"'
    broker = request.getfixturevalue("kafka_broker")
    prefix = f"t{uuid.uuid4().hex[:10]}."
    return f'backend = "kafka"\nbootstrap_servers = ["{broker.bootstrap}"]\ntopic_prefix = "{prefix}"\npartitions = 2'

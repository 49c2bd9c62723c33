"""compose.yaml is a valid Compose file whose services run every role against Kafka."""

from __future__ import annotations

import subprocess

import pytest

from .harness import ROOT

pytestmark = pytest.mark.e2e  # runs docker-compose as a real process


def compose(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker-compose", "-f", str(ROOT / "compose.yaml"), *args], capture_output=True, text=True, check=False
    )


def test_compose_file_is_valid() -> None:
    result = compose("config", "-q")
    assert result.returncode == 0, result.stderr


def test_compose_runs_each_role_and_kafka_in_kraft_mode() -> None:
    result = compose("config")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for role in ("smtp,publish", "process", "deliver", "record", "api"):
        assert f"- {role}\n" in text, role
    assert "image: apache/kafka:" in text
    assert "KAFKA_PROCESS_ROLES: broker,controller" in text
    for volume in ("edge:", "deliver:", "record:", "postgres:"):
        assert volume in text
    assert "image: postgres:" in text
    assert text.count("PGPASSWORD: change-me") >= 4  # every inbound service can reach the activity store

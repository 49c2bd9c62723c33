"""The development webhook receiver: where it listens, and what it prints of a stranger's message."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from inbound.config import load_settings
from inbound.ops.cli import main
from inbound.ops.devhook import make_server, summarise

from .harness import stream_toml, write_config


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path, streams=stream_toml("support", ["*@in.test"], "http://127.0.0.1:8025/"))


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def test_a_port_taken_is_the_commands_error_naming_the_address(config: Path, taken_port: int) -> None:
    result = CliRunner().invoke(main, ["devhook", "--config", str(config), "--listen", f"127.0.0.1:{taken_port}"])
    assert isinstance(result.exception, SystemExit), result.exception  # not a traceback
    assert result.exit_code == 1
    assert f"Error: cannot listen on 127.0.0.1:{taken_port}: " in result.output
    assert "Address already in use" in result.output


def test_a_host_that_does_not_resolve_is_the_commands_error_naming_it(config: Path) -> None:
    result = CliRunner().invoke(main, ["devhook", "--config", str(config), "--listen", "no.such.host.invalid:8025"])
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 1
    assert "Error: cannot listen on no.such.host.invalid:8025: " in result.output


def test_an_ipv6_literal_is_listened_on(config: Path) -> None:
    printed: list[str] = []
    server = make_server(load_settings(config, {}), "::1", 0, printed.append)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        unsigned = httpx.post(f"http://[::1]:{server.server_port}/", content=b"{}")
    finally:
        server.shutdown()
        server.server_close()
    assert unsigned.status_code == 401
    assert "signature INVALID" in printed[0]


def test_a_summary_escapes_what_would_drive_the_terminal_or_forge_a_line() -> None:
    payload = {
        "id": "01JD-support",
        "stream": "support",
        "from": {"email": "a@sender.test"},
        "envelope": {"rcpt_to": ["help@in.test"]},
        "subject": "hi\x1b[2J\nid:          forged",
        "attachments": [],
        "text": "first line\nsecond \x9b31m line",
    }
    assert summarise(payload).splitlines() == [
        "id:          01JD-support",
        "stream:      support",
        "from:        a@sender.test",
        "to:          help@in.test",
        "subject:     hi\\x1b[2J\\nid:          forged",
        "attachments: 0",
        "text:        first line",
        "             second \\x9b31m line",
    ]

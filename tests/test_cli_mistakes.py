"""A user's mistakes on the command line: each a message saying what is wrong, never a traceback.

In process with click's runner (fast and exact); test_cli.py runs the CLI as real processes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from inbound.ops.cli import main

from .harness import stream_toml, write_config


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path, streams=stream_toml("support", ["*@in.test"], "https://hooks.example.test/"))


def run(*args: str) -> Result:
    result = CliRunner().invoke(main, args)
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    return result


def test_init_where_a_file_has_the_data_directorys_name(config: Path) -> None:
    (config.parent / "data").write_text("not a directory")
    result = run("init", "--config", str(config))
    assert result.exit_code == 1
    assert f"Error: cannot initialise {config.parent / 'data'}: " in result.output


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger as it was: serve configures it for the whole process."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:], root.level = handlers, level


def test_a_log_level_is_taken_in_any_case_and_an_unknown_one_named(config: Path, root_logger: logging.Logger) -> None:
    unknown = run("serve", "--config", str(config), "--log-level", "verbose")
    assert unknown.exit_code == 2
    assert "Invalid value for '--log-level': 'verbose' is not one of" in unknown.output
    # Taken: what stops this serve, once logging is set up, is its data directory, never made.
    lower = run("serve", "--config", str(config), "--log-level", "debug", "--roles", "record")
    assert root_logger.level == logging.DEBUG
    assert lower.exit_code == 1
    assert "does not exist" in lower.output


@pytest.mark.parametrize("since", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_a_replay_window_outside_the_years_utc_can_hold(config: Path, since: str) -> None:
    result = run("replay", "--config", str(config), "--stream", "support", "--since", since)
    assert result.exit_code == 2
    assert f"Invalid value: {since!r} is outside the years 1 to 9999 in UTC" in result.output


@pytest.mark.parametrize("command", [("pause",), ("status",), ("activity", "list"), ("retry", "01JD-support")])
def test_a_command_on_a_data_directory_inbound_did_not_make_is_refused_as_serve_refuses_it(
    config: Path, command: tuple[str, ...]
) -> None:
    (config.parent / "data").mkdir()  # an unmounted volume's mount point: no marker
    result = run(*command, "--config", str(config))
    assert result.exit_code == 1
    assert "has no .inbound-data marker" in result.output
    assert list((config.parent / "data").iterdir()) == []  # no bus or store made there, acted on by nobody


@pytest.mark.parametrize("command", [("serve", "--roles", "record"), ("status",)])
def test_a_data_directory_this_user_cannot_read_is_named_not_a_traceback(
    config: Path, command: tuple[str, ...], monkeypatch: pytest.MonkeyPatch, root_logger: logging.Logger
) -> None:
    run("init", "--config", str(config))
    exists = Path.exists

    def refused(path: Path) -> bool:  # as for a user other than the one `sudo inbound init` made it for
        if path.parent.name == "data":
            raise PermissionError(13, "Permission denied", str(path))
        return exists(path)

    monkeypatch.setattr(Path, "exists", refused)
    result = run(*command, "--config", str(config))
    assert result.exit_code == 1
    assert "cannot be read by this user" in result.output

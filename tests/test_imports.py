"""What each process of ``serve`` imports: memory is per process, so libraries stay where they are used."""

from __future__ import annotations

import functools
import subprocess
import sys

import pytest

PARSER_LIBRARIES = ["mailparser", "mailparser_reply", "lxml", "inscriptis", "charset_normalizer", "urllib3"]


@functools.cache
def imported(*modules: str) -> frozenset[str]:
    """The top-level names in sys.modules of a fresh interpreter after importing *modules*."""
    code = f"import sys\nimport {', '.join(modules)}\nprint('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return frozenset(out.split())


@pytest.mark.parametrize("library", PARSER_LIBRARIES)
def test_the_pipeline_hands_out_parse_jobs_without_the_parser(library: str) -> None:
    """The parse worker parses; the process that sends it jobs needs only the job's wire format."""
    pipeline = imported(
        "inbound.ops.cli", "inbound.service", "inbound.processing.process", "inbound.processing.isolation",
        "inbound.delivery.deliver", "inbound.activity.record",
    )  # fmt: skip
    assert library not in pipeline


@pytest.mark.parametrize("module", ["asyncio", "rich", "inbound.activity", "importlib.metadata", "inbound.processing"])
def test_serve_checks_the_data_directory_without_what_only_commands_or_stages_use(module: str) -> None:
    assert module not in imported("inbound.ops.cli", "inbound.supervisor", "inbound.roles")


@pytest.mark.parametrize("module", ["click", "inbound.config", "tomllib", "ssl", "idna", "asyncio", "sqlite3"])
def test_the_supervisor_runs_without_what_serve_needed_to_start_it(module: str) -> None:
    """``serve`` execs ``python -m inbound.supervisor``, which lives as long as the service."""
    assert module not in imported("inbound.supervisor", "inbound.log")

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


# What the supervisor's children import (python -m inbound.serving), by the stages they run.
PIPELINE = (
    "inbound.serving", "inbound.service", "inbound.processing.process", "inbound.processing.isolation",
    "inbound.delivery.deliver", "inbound.activity.record",
)  # fmt: skip
EDGE = ("inbound.serving", "inbound.service", "inbound.edge.handler", "inbound.edge.publish", "inbound.bus.embedded")
PARSE_WORKER = ("inbound.processing.parsechild",)


@pytest.mark.parametrize("library", PARSER_LIBRARIES)
def test_the_pipeline_hands_out_parse_jobs_without_the_parser(library: str) -> None:
    """The parse worker parses; the process that sends it jobs needs only the job's wire format."""
    assert library not in imported(*PIPELINE)


@pytest.mark.parametrize("module", ["inbound.config.load", "tomllib", "ssl"])
def test_the_parse_worker_is_handed_its_settings_and_reads_no_file(module: str) -> None:
    assert module not in imported(*PARSE_WORKER)


def test_the_parse_worker_imports_the_form_encoder_only_for_a_stream_that_posts_forms() -> None:
    assert "urllib3" not in imported(*PARSE_WORKER)  # mailgun and sendgrid (inbound/processing/formats)


@pytest.mark.parametrize("library", ["dkim", "spf", "dns", "publicsuffix2"])
@pytest.mark.parametrize("process", [EDGE, PIPELINE, PARSE_WORKER], ids=["edge", "pipeline", "parse worker"])
def test_the_sender_verdicts_libraries_wait_for_auth_to_be_on(process: tuple[str, ...], library: str) -> None:
    # [auth] is off by default; the service imports inbound.processing.auth when it is on.
    assert library not in imported(*process)


@pytest.mark.parametrize("module", ["click", "inbound.ops.cli"])
@pytest.mark.parametrize("process", [EDGE, PIPELINE], ids=["edge", "pipeline"])
def test_the_children_of_serve_run_without_the_command_line(process: tuple[str, ...], module: str) -> None:
    assert module not in imported(*process)


@pytest.mark.parametrize("module", ["rich", "pygments"])
def test_the_pipeline_posts_without_httpx_s_command_line_client(module: str) -> None:
    """httpx 0.28 imports its CLI whenever rich is installed, as it is here (inbound/delivery/__init__.py)."""
    assert module not in imported(*PIPELINE)


@pytest.mark.parametrize("module", ["asyncio", "rich", "inbound.activity", "importlib.metadata", "inbound.processing"])
def test_serve_checks_the_data_directory_without_what_only_commands_or_stages_use(module: str) -> None:
    assert module not in imported("inbound.ops.cli", "inbound.supervisor", "inbound.roles")


@pytest.mark.parametrize("module", ["click", "inbound.config", "tomllib", "ssl", "idna", "asyncio", "sqlite3"])
def test_the_supervisor_runs_without_what_serve_needed_to_start_it(module: str) -> None:
    """``serve`` execs ``python -m inbound.supervisor``, which lives as long as the service."""
    assert module not in imported("inbound.supervisor", "inbound.log")

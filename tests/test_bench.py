"""The benches still run: one small run of ``bench/throughput.py`` against a real ``inbound serve``.

Figures are not checked (a test has no business timing a shared machine); what is checked is
that the bench gets through its whole path -- sending, waiting for every POST and then for the
activity store to have every delivery -- and prints what the README quotes.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from .harness import ROOT

pytestmark = pytest.mark.e2e


def test_throughput_bench_runs_to_the_activity_record() -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "throughput.py"), "-n", "20", "-s", "2048", "-c", "2", "--by-hop"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,  # the assertion below shows stderr
    )
    assert run.returncode == 0, run.stderr
    delivered = re.search(r"^delivered: +([0-9.]+) msg/s \(until the activity store has them all\)$", run.stdout, re.M)
    assert delivered is not None, run.stdout
    assert float(delivered.group(1)) > 0
    assert re.search(r"^CPU per message \d+ µs \(edge \d+, parse worker \d+, pipeline \d+", run.stdout, re.M)
    hops = re.findall(r"^  (.+?) +p50 +-?[0-9.]+ ms  p99 +-?[0-9.]+ ms$", run.stdout, re.M)
    assert hops == ["end of DATA -> received record", "-> messages record", "-> webhook"], run.stdout

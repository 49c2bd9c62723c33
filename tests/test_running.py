"""`inbound status` knows what runs: a process's mark lives exactly as long as the process, SIGKILL included."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from inbound.ops.running import announce, running

from .harness import wait_for

pytestmark = pytest.mark.e2e  # starts a process to kill it

CHILD = """
import sys, time
from pathlib import Path
from inbound.ops.running import announce
announce(Path(sys.argv[1]), ["smtp", "publish"])
print("announced", flush=True)
time.sleep(600)
"""


def test_marks_follow_their_processes(tmp_path: Path) -> None:
    withdraw = announce(tmp_path, ["record"])
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "announced\n"
        assert sorted(r.roles for r in running(tmp_path)) == [("record",), ("smtp", "publish")]
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        wait_for(lambda: [r.roles for r in running(tmp_path)] == [("record",)], 10, "the killed process's mark to go")
        assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [f"{running(tmp_path)[0].pid}.json"]
    finally:
        child.kill()
        child.communicate()
    withdraw()
    assert running(tmp_path) == []

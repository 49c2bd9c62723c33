"""SpamAssassin's spamd from Debian's ``spamassassin`` package, on a free loopback port, for the tests.

Started fast: no network tests (``--local``), one child, the rules the package
ships (no sa-update), no per-user configuration. ``make test`` installs the
package when missing (Makefile ``tools``); the fixture fails, never skips,
when spamd is absent or does not start.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

from tests.harness import free_port, wait_for

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


class SpamdProcess:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.log_path = directory / "spamd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> SpamdProcess:
        spamd = shutil.which("spamd") or shutil.which("spamd", path="/usr/sbin:/usr/bin")
        if spamd is None:
            raise AssertionError("spamd not found: install Debian's spamassassin package (make tools)")
        args = [
            spamd,
            f"--listen=127.0.0.1:{self.port}",
            "--max-children=1",
            "--local",
            "--nouser-config",
            "--syslog=stderr",
            f"--pidfile={self.directory / 'spamd.pid'}",
        ]
        if os.geteuid() == 0:
            args.append("--username=nobody")  # spamd will not run its children as root
        self.log = self.log_path.open("ab")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, cwd=self.directory)
        wait_for(self._started, 90, f"spamd to start (log: {self.log_path})")
        return self

    def _started(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"spamd exited {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
        return b"server successfully spawned child" in self.log_path.read_bytes()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if hasattr(self, "log"):
            self.log.close()

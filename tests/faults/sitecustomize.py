"""Test-only: a parser that crashes, hangs or eats memory on request, in whichever process parses.

tests/test_poison.py puts this directory first on ``PYTHONPATH`` of the
``inbound serve`` it starts, so Python imports this module at the start of
every process of that service. It wraps ``parse_message`` so that a message
carrying an ``X-Test-Fault:`` header misbehaves the way a parser bug would.
Production code has no hook for it: if parsing were not isolated, the fault
would hit the pipeline process itself.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import time
from pathlib import Path

from inbound.config.settings import ProcessingSettings
from inbound.processing import parse

_FAULT = re.compile(rb"^X-Test-Fault: (\w+)", re.MULTILINE)
_real_parse_message = parse.parse_message
_DEFAULTS = ProcessingSettings()


def _faulty_parse_message(raw: bytes, limits: ProcessingSettings = _DEFAULTS) -> parse.ParsedMessage:
    fault = _FAULT.search(raw[:8192])
    kind = fault[1] if fault else b""
    if kind == b"segfault":
        ctypes.string_at(0)  # reads address 0: SIGSEGV
    elif kind == b"exit":
        os._exit(3)
    elif kind == b"hang":
        if mark := os.environ.get("INBOUND_TEST_HANG_MARK"):  # tells the test which process hangs, and when
            Path(mark).write_text(str(os.getpid()))
        while True:
            time.sleep(1)
    elif kind == b"interrupted" and not Path(os.environ["INBOUND_TEST_ONCE_MARK"]).exists():
        Path(os.environ["INBOUND_TEST_ONCE_MARK"]).touch()  # once: as a Ctrl-C while the worker started
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    elif kind == b"stopparent":  # as SIGSTOP of the pipeline process; the worker parses on
        os.kill(os.getppid(), signal.SIGSTOP)
    elif kind == b"freeze":  # as a frozen cgroup: the pipeline process and the worker, its process group
        os.killpg(0, signal.SIGSTOP)
    elif kind == b"memory":
        hog = []
        while True:
            hog.append(bytearray(16 * 1024 * 1024))
    return _real_parse_message(raw, limits)


parse.parse_message = _faulty_parse_message

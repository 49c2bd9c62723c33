"""Logging, configured in one place: one line per event, ids first, never bodies or secrets."""

from __future__ import annotations

import logging
import sys


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The libraries' own INFO lines are per-connection noise; ours carry the ids.
    for noisy in ("mail.log", "kafka", "httpx", "httpcore", "mailparser"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

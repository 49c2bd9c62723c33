"""Logging, configured in one place: one line per event, ids first, never bodies or secrets.

Two formats (``inbound serve --log-format``): ``text`` for people, and ``json``
for log pipelines, one object per line::

    {"time": "2026-11-23T10:00:00.123Z", "level": "INFO", "logger": "inbound.edge.handler",
     "stage": "receive", "queue_id": "01JD...", "message": "spooled size=..."}

Every module writes its ids into the message as leading ``key=value`` words
(``queue_id=... stream=... stage=...``), which reads well as text; the JSON
formatter lifts those words into fields (``stage``, ``queue_id``,
``delivery_id``, ``stream``) so a pipeline can filter on them without parsing.
Times are RFC 3339 in UTC in both formats. Nothing is added to what the
message says, so the rule that messages hold no bodies or secrets holds for
both.
"""

from __future__ import annotations

import json
import logging
import re
import sys

from .clock import rfc3339
from .printable import printable

FORMATS = ("text", "json")
#: The ids a line may carry, in the order JSON shows them.
ID_FIELDS = ("stage", "queue_id", "delivery_id", "stream")
_LEADING_ID = re.compile(r"(stage|queue_id|delivery_id|stream)=(\S+)\s*")


class TextFormatter(logging.Formatter):
    """``time LEVEL logger message``, the message kept on its one line: what it holds is escaped."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record))

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return rfc3339(record.created)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        ids: dict[str, str] = {}
        while match := _LEADING_ID.match(message):
            ids.setdefault(match[1], match[2])
            message = message[match.end() :]
        line: dict[str, object] = {"time": rfc3339(record.created), "level": record.levelname, "logger": record.name}
        line.update((name, ids[name]) for name in ID_FIELDS if name in ids)
        line["message"] = message
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure(level: str = "INFO", fmt: str = "text") -> None:
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The libraries' own INFO lines are per-connection noise; ours carry the ids.
    for noisy in ("mail.log", "kafka", "httpx", "httpcore"):  # mailparser: see processing/parse.py
        logging.getLogger(noisy).setLevel(logging.WARNING)

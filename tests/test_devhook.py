"""The development webhook receiver's summary: what it prints of a stranger's message stays on its lines."""

from __future__ import annotations

from inbound.ops.devhook import summarise


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

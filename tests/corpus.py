"""The email corpus (``tests/data/corpus``), as the tests read it.

Real-world messages with their licence and source beside them (each set's
``LICENSE`` and ``SOURCE.md``), kept in the repository so that a fresh clone
tests itself. Its files have mixed line endings (some LF, some CRLF);
``wire_bytes`` gives them as an SMTP client would send them and our SMTP
server would accept them: CRLF line endings, ending in CRLF.
"""

from __future__ import annotations

import base64
import email
import email.policy
import re
from email.message import Message
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).resolve().parent / "data" / "corpus"

_BARE_LF = re.compile(rb"(?<!\r)\n")


def corpus_files() -> list[Path]:
    """Every ``*.eml`` under the corpus, recursively, sorted. Raises if there is none."""
    if not CORPUS.is_dir():
        raise FileNotFoundError(f"the email corpus is missing: expected a folder at {CORPUS}")
    files = sorted(CORPUS.rglob("*.eml"))
    if not files:
        raise FileNotFoundError(f"the email corpus at {CORPUS} has no *.eml file")
    return files


def corpus_id(path: Path) -> str:
    """A short, stable test id: the path inside the corpus."""
    return path.relative_to(CORPUS).as_posix()


def wire_bytes(path: Path) -> bytes:
    """The file's bytes with every bare LF made CRLF, ending in CRLF (as after SMTP DATA)."""
    data = _BARE_LF.sub(b"\r\n", path.read_bytes())
    return data if data.endswith(b"\r\n") else data + b"\r\n"


# From addresses on which mail-parser (ours) and the stdlib disagree: file -> (ours, stdlib, evidence in our defects).
FROM_DISAGREES: dict[str, tuple[str | None, str | None, str]] = {
    # "From: Big Bug bb@bug.com": a display name without angle brackets, or an obsolete
    # local part of three words? mail-parser refuses to guess and says so; the stdlib
    # makes the address '"Big Bug bb"@bug.com', which nobody can answer.
    "mikel-mail/plain_emails/mix_caps_content_type.eml": (None, '"Big Bug bb"@bug.com', "from[0]"),
    # "From: tim@powerupdev.com concierge@powerupdev.com": two addresses with no comma.
    # mail-parser refuses (ambiguous); the stdlib silently keeps the first.
    "mikel-mail/plain_emails/raw_email_multiple_from.eml": (None, "tim@powerupdev.com", "from[0]"),
    # "From  : John Doe <...>": whitespace before the colon, obsolete but legal (RFC 5322
    # 4.5.3). parse.py repairs it; the stdlib takes the line for an mbox "From " line and
    # never sees a From header (it reports MissingHeaderBodySeparatorDefect).
    "mikel-mail/rfc2822/example13.eml": ("jdoe@machine.example", None, "obsolete syntax"),
}
# Attachment counts on which they disagree: file -> why. Checked by the evidence below.
ATTACHMENTS_DISAGREE = {
    # "boundary=----=_Part_..." is unquoted and contains "=": policy.default cuts the
    # boundary at the "=", finds no part (StartBoundaryNotFoundDefect) and so no
    # attachment; compat32 (what mail-parser builds on) and mail clients read it whole.
    "mikel-mail/mime_emails/raw_email_with_binary_encoded.eml": "unquoted boundary containing '='",
}


def stdlib_attachment_count(part: Message, *, in_report: bool = False) -> int:
    """How many attachments the stdlib's tree holds by the rule parse.py documents (processing/mime.py):
    an attached message (any message/* but a delivery status) is one, and is not looked into; a
    delivery status and a report's returned headers are the ``report``, not files; a text/plain or
    text/html part is body text unless marked ``attachment`` or named and not marked ``inline``;
    every other leaf is a file."""
    ctype = part.get_content_type()
    if ctype == "message/delivery-status":
        return 0
    if part.get_content_maintype() == "message":
        return 1
    if part.is_multipart():
        inside = in_report or ctype == "multipart/report"
        return sum(stdlib_attachment_count(child, in_report=inside) for child in part.get_payload())
    if part.get_content_maintype() == "multipart" or (ctype == "text/rfc822-headers" and in_report):
        return 0
    if ctype in ("text/plain", "text/html"):
        disposition = part.get_content_disposition()
        return int(disposition == "attachment" or (disposition != "inline" and bool(part.get_filename())))
    return 1


def stdlib_from(message: Message) -> str | None:
    header = message["from"]
    addresses = getattr(header, "addresses", ()) if header is not None else ()
    if not addresses:
        return None
    # policy.default keeps 8-bit bytes of an address as lone surrogates; RFC 6532
    # says they are UTF-8, which is how parse.py reads them. Same bytes, same rule.
    raw = str(addresses[0].addr_spec)
    return raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def agrees_with_stdlib(name: str, raw: bytes, payload: dict[str, Any]) -> None:
    """Assert that *payload* (made from *raw*, corpus file *name*) has the subject, sender and
    attachment count that Python's email package reads from the same bytes, or differs exactly
    where a documented disagreement says it does."""
    stdlib = email.message_from_bytes(raw, policy=email.policy.default)
    subject = stdlib["subject"]
    # The stdlib keeps the whitespace around an unstructured value; we strip it.
    assert payload["subject"] == (str(subject).strip() if subject is not None else None), name

    ours_from = payload["from"]["email"] if payload["from"] else None
    if name in FROM_DISAGREES:
        expected_ours, expected_stdlib, evidence = FROM_DISAGREES[name]
        assert (ours_from, stdlib_from(stdlib)) == (expected_ours, expected_stdlib), name
        assert any(evidence in defect for defect in payload["defects"]), (name, payload["defects"])
    else:
        assert ours_from == stdlib_from(stdlib), name

    ours_count = len(payload["attachments"])
    if name in ATTACHMENTS_DISAGREE:
        assert ours_count != stdlib_attachment_count(stdlib), name
        assert any(type(d).__name__ == "StartBoundaryNotFoundDefect" for part in stdlib.walk() for d in part.defects)
        compat32 = email.message_from_bytes(raw, policy=email.policy.compat32)
        assert ours_count == stdlib_attachment_count(compat32), name
    else:
        assert ours_count == stdlib_attachment_count(stdlib), name
    for attachment in payload["attachments"]:
        assert len(base64.b64decode(attachment["content"], validate=True)) == attachment["size"], name

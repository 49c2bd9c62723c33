"""The shared email corpus (``/work/shared/corpus``), as the tests read it.

The corpus lives next to the repository, not in it, so its path is relative
to this file. Its files have mixed line endings (some LF, some CRLF);
``wire_bytes`` gives them as an SMTP client would send them and our SMTP
server would accept them: CRLF line endings, ending in CRLF.
"""

from __future__ import annotations

import re
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"

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

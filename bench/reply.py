"""What reply stripping costs on hostile text: ours (bounded) and, with ``--library``, mail-parser-reply's own.

Every case is a text a sender can write: long runs of spaces or blank lines,
many "mail" words after a disclaimer word, thousands of quote headers,
header-like lines built to make the patterns backtrack, one huge line.
``strip_reply`` reads a bounded view (inbound/processing/reply.py), so its
time should not grow with the size; the library's ``parse_reply`` with every
language is timed in a child process killed after ``--timeout``.

Figures only: nothing here passes or fails.

    .venv/bin/python bench/reply.py --size 5242880
    .venv/bin/python bench/reply.py --library --size 8192 --size 32768
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inbound.processing.reply import LINE_CAP, strip_reply


def _lines(line: str) -> Callable[[int], str]:
    """A text of *line* repeated to the size, each cut to LINE_CAP: the worst the view lets through."""
    return lambda size: (line[:LINE_CAP] + "\n") * (size // (min(len(line), LINE_CAP) + 1))


CASES: dict[str, Callable[[int], str]] = {
    "spaces in one line": lambda size: "a" + " " * size + "b\n",
    "blank lines": lambda size: "a" + "\n" * size + "b",
    "mail words": lambda size: "Disclaimer: " + "mail " * (size // 5),
    "On ... wrote: lines": lambda size: "On Mon, 1 Jan 2024, Bob <b@x.org> wrote:\n> q\n" * (size // 45),
    "Original Message lines": lambda size: "-----Original Message-----\nx\n" * (size // 29),
    "From:/Sent: blocks": lambda size: "From: a\nSent: b\nx\n" * (size // 19),
    "one line": lambda size: "x" * size,
    "one line starting On": lambda size: "On " + "x " * (size // 2),
    "On On On ...": lambda size: "On " * (size // 3),
    "hyphen lines": lambda size: "- a\n" * (size // 4),
    "prose": lambda size: "The quick brown fox jumps over the lazy dog. " * (size // 45),
    # The lines the header pattern is slowest on, per the languages' patterns.
    "Am ... schrieb lines": _lines("Am " + "schrieb " * 40),
    "Den ... skrev lines": _lines("Den " + "skrev " * 40),
    "david lines": _lines("Original Message processed by david" + " x" * 80),
    "quote marks lines": _lines("> " * 100),
    "stars lines": _lines("*" * 200),
}


def _ours(text: str) -> float:
    started = time.perf_counter()
    strip_reply(text)
    return time.perf_counter() - started


def _library(case: str, size: int, timeout: float) -> str:
    code = (
        "import sys, time\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from reply import CASES\n"
        "from mailparser_reply import EmailReplyParser\n"
        "from mailparser_reply.constants import MAIL_LANGUAGES\n"
        f"text = CASES[{case!r}]({size})\n"
        "parser = EmailReplyParser(languages=list(MAIL_LANGUAGES))\n"
        "started = time.perf_counter(); parser.parse_reply(text); print(time.perf_counter() - started)\n"
    )
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return f">{timeout:g}s"
    return f"{float(done.stdout):.3f}s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, action="append", help="text size in characters (repeatable)")
    parser.add_argument("--library", action="store_true", help="also time the library's parse_reply, unbounded")
    parser.add_argument("--timeout", type=float, default=20.0, help="per library run, seconds")
    args = parser.parse_args()
    for size in args.size or [5 * 1024 * 1024]:
        worst = max((_ours(make(size)), name) for name, make in CASES.items())
        print(f"strip_reply, {size} characters: worst {worst[0]:.3f}s ({worst[1]})")
        for name, make in CASES.items():
            line = f"  {name:24} ours {_ours(make(size)):.3f}s"
            if args.library:
                line += f"  library {_library(name, size, args.timeout)}"
            print(line, flush=True)


if __name__ == "__main__":
    main()

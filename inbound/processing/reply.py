"""Reply stripping: a message's text -> the new reply, without quoted history, and its signature.

Stage: called while a payload is built, for ``stripped_text`` (inbound
format), ``StrippedTextReply`` (postmark), ``stripped-text`` and
``stripped-signature`` (mailgun). Pure and deterministic; no error is raised.

Where the reply ends is decided by mail-parser-reply (MIT): its header
pattern (``EmailMessage.HEADER_REGEX``) built for every language it has
(``ALL_LANGUAGES``: en de cs da es fr it ja ko nl pl sv zh, and the "david"
client) finds the first "On ... wrote:", "Am ... schrieb ...:", "Le ... a
écrit :", "Il ... ha scritto:", the Japanese date line, an Outlook
"From:/Sent:" block in each of those languages, or "-----Original
Message-----". The reply is the text above it. (Its es, zh and ko "wrote"
patterns are each excluded by their own look-ahead and never match: in those
languages only the Outlook blocks are recognised.)

Why not the library's ``parse_reply``: every body is written by a stranger
and its patterns backtrack. Measured with all languages on this project's
2-core box (bench/reply.py --library): 8 KB of spaces on one line 1.8 s (its
signature pattern), 8 KB of blank lines 12 s (the same), one 8 KB line
starting "On " 1.4 s (its header pattern), 32 KB of any of these over 20 s;
even plain prose costs about 2 s per MB. Its signature and disclaimer
detection is not used at all, being lossy too: its signatures are line
prefixes in any language, case-insensitive ("Tak", "Kh", "Best,", "/word",
"- item"), so a reply line "Take the 9:15 train" would cut off everything
below it. The header pattern alone is still quadratic in a line's length
and costs ~20 us per line even on blank ones, so it reads a bounded view,
never the text itself:

* the first ``VIEW_LINES`` lines, each stripped (as the library does) and
  cut to ``LINE_CAP`` characters, up to ``VIEW_CHARS`` characters in all.
  Worst case measured about 0.1 s per message whatever its size (up to
  0.3 s with the box loaded by other work); what is outside the view costs
  only linear string operations (~0.1 s for 5 MB).
* The view only says *on which line* the reply ends; the reply is taken
  from the text itself, so the caps never change or shorten what is sent.
* No separator in the view (a reply longer than the view, a header line
  longer than ``LINE_CAP``, or nothing quoted) -> the whole text is the
  reply: a quote may stay in, the reply is never lost. The same when the
  separator is the first line (a forward with nothing written above it).

Then, inside the reply: a signature starts at an RFC 3676 ``-- `` line
(also ``--``, clients drop the space) and is returned apart; a last line
that is a mobile client's footer ("Sent from my iPhone", "Gesendet von
meinem iPhone": the library's ``sent_from`` phrases of every language) goes
to the signature too; quoted (``>``), rule (``____``) and blank lines at the
end are dropped: a quote without a header line. Quoted lines between the
sender's own lines stay: an inline answer needs its question.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from itertools import accumulate
from typing import NamedTuple

from mailparser_reply import EmailMessage
from mailparser_reply.constants import MAIL_LANGUAGES

ALL_LANGUAGES = list(MAIL_LANGUAGES)
VIEW_LINES = 256  # a blank line costs ~20 us in the pattern (every language is tried at every line)
LINE_CAP = 100  # the worst line costs ~1.5 ms at 100 characters, ~5 ms at 200: it grows with the square
VIEW_CHARS = 8 * 1024  # so at most ~80 such lines: the ~0.1 s worst case

_SEPARATOR: re.Pattern[str] = EmailMessage(text="", languages=ALL_LANGUAGES).HEADER_REGEX
# Where the pattern can match: each of its alternatives starts at a line start or at the line break
# before one, and every header it describes holds ':' (or the full-width U+FF1A) or "Original Message"
# within its first _HEADER_SPAN lines. Searched everywhere, its ~40 alternatives cost ~10 ms on a
# plain 8 KiB reply; tried only above such lines, about a tenth of that (tests/test_reply.py checks
# that both find the same header).
_HEADER_MARK = re.compile(r"[:\uff1a]|original message", re.IGNORECASE)
_HEADER_SPAN = 5
# RFC 3676 "-- " (clients drop the space), on the first line or after a line break: apart, so that
# the second starts with a literal the engine scans for, where "^--" was tried at every character.
_FIRST_DELIMITER = re.compile(r"--[^\S\n]*$", re.MULTILINE)
_LATER_DELIMITER = re.compile(r"\n(--[^\S\n]*)$", re.MULTILINE)
_FOOTER_PHRASES = "|".join(f"(?:{v['sent_from']})" for v in MAIL_LANGUAGES.values() if v.get("sent_from"))
_FOOTER = re.compile(rf"(?:{_FOOTER_PHRASES})[\w .<>:/-]*", re.IGNORECASE)
_FOOTER_CAP = 80  # a longer line is prose, and the cap bounds the phrases' own ``.*``
# Blank, rule (___, ---) and quoted (>) lines, matched on the *reversed* text: one match anchored at
# its start finds where the trailing run begins in linear time (a search for it from the front would
# retry at every line, quadratic in a long run of quoted lines).
_TRAILING_JUNK = re.compile(r"(?:(?:[-_]|[^\S\n])*(?:\n|\Z)|[^\n]*>[^\S\n]*(?:\n|\Z))*")


class Reply(NamedTuple):
    text: str  # the new reply, without quote and signature; "" when the text holds nothing else
    signature: str  # "" when there is none


def strip_reply(text: str) -> Reply:
    """The reply in *text* and its signature (see the module docstring for every rule)."""
    if "\r" in text:  # a parsed text has LF line ends already
        text = text.replace("\r\n", "\n")
    reply = text[: _separator_offset(text)]
    if not reply.strip():
        reply = text
    delimiter = _delimiter(reply)
    body, signature = (reply[: delimiter[0]], reply[delimiter[1] :]) if delimiter else (reply, "")
    body = _trim(body)
    last_line = body[body.rfind("\n") + 1 :].strip()
    if len(last_line) <= _FOOTER_CAP and _FOOTER.fullmatch(last_line):
        body, signature = _trim(body[: body.rfind("\n") + 1]), f"{last_line}\n{signature}"
    return Reply(body.strip(), _trim(signature).strip())


def _separator_offset(text: str) -> int:
    """Where the line with the first quote header starts, found in the bounded view; ``len(text)`` if none."""
    lines = text.split("\n", VIEW_LINES)[:VIEW_LINES]
    joined = "\n".join(line.strip()[:LINE_CAP] for line in lines)
    if len(joined) >= VIEW_CHARS:  # whole lines only, each counted with its line break, up to VIEW_CHARS
        joined = joined[: max(joined.rfind("\n", 0, VIEW_CHARS), 0)]
    found = first_header(joined)
    if found is None:
        return len(text)
    header = found.group()
    line_number = joined.count("\n", 0, found.start() + len(header) - len(header.lstrip("\n")))
    return sum(len(line) + 1 for line in lines[:line_number])


def first_header(view: str) -> re.Match[str] | None:
    """The library's first quote header in *view*: what ``_SEPARATOR.search(view)`` finds, found faster."""
    marked = _marked_lines(view)
    if not marked:
        return None
    starts = list(accumulate((len(line) + 1 for line in view.split("\n")[:-1]), initial=0))
    for n in sorted({n for last in marked for n in range(max(last - _HEADER_SPAN, 0), last + 1)}):
        for position in (starts[n] - 1, starts[n]) if n else (0,):
            found = _SEPARATOR.match(view, position)
            if found is not None:
                return found
    return None


def _marked_lines(view: str) -> set[int]:
    """The lines of *view* that hold what every header the pattern describes holds (see ``_HEADER_MARK``).

    An ASCII view is searched with ``str.find`` (the pattern's alternation is tried at every
    character, and this runs for every message); another with the pattern, whose case rules
    ``str.lower`` does not share.
    """
    if not view.isascii():
        return _line_numbers(view, (found.start() for found in _HEADER_MARK.finditer(view)))
    searches = ((view, ":"), (view.lower(), "original message"))  # lowering keeps an ASCII view's positions
    return set().union(*(_line_numbers(view, _first_on_each_line(text, mark)) for text, mark in searches))


def _first_on_each_line(text: str, mark: str) -> Iterator[int]:
    position = text.find(mark)
    while position >= 0:
        yield position
        line_end = text.find("\n", position)
        if line_end < 0:
            return
        position = text.find(mark, line_end)


def _line_numbers(view: str, positions: Iterable[int]) -> set[int]:
    """The line of each of *positions* (ascending), counted as it goes: linear in the view."""
    lines: set[int] = set()
    line = counted = 0
    for position in positions:
        line += view.count("\n", counted, position)
        counted = position
        lines.add(line)
    return lines


def _delimiter(text: str) -> tuple[int, int] | None:
    """Where the first signature delimiter line of *text* starts and ends, or None."""
    found = _FIRST_DELIMITER.match(text)
    if found is not None:
        return found.start(), found.end()
    found = _LATER_DELIMITER.search(text)
    return (found.start(1), found.end(1)) if found is not None else None


def _trim(text: str) -> str:
    """*text* without its trailing blank, rule and quoted lines."""
    junk = _TRAILING_JUNK.match(text[::-1])
    return text[: len(text) - junk.end()] if junk else text  # it always matches, if only ""

"""strip_reply: where a reply ends in each language, its signature, and the bound on what the library reads.

Every text here is written for the test. Timing is not asserted: the bound
is (the header pattern is only ever handed the view), and bench/reply.py
prints what the bound costs.
"""

from __future__ import annotations

import re

import pytest

from inbound.processing import reply as reply_module
from inbound.processing.parse import parse_message
from inbound.processing.reply import LINE_CAP, VIEW_CHARS, VIEW_LINES, Reply, first_header, strip_reply

from .corpus import corpus_files, corpus_id, wire_bytes

QUOTED = [
    # Gmail and Apple Mail attributions
    ("en", "Thanks, will do.\n\nOn Mon, 1 Jan 2024 at 10:00, Bob <bob@example.org> wrote:\n> Send it?\n"),
    (
        "en wrapped",
        "Thanks, will do.\n\nOn Mon, 1 Jan 2024 at 10:00, Bob Example\n<bob@example.org> wrote:\n> Send it?\n",
    ),
    ("en nested", "Thanks, will do.\n\n> On Mon, 1 Jan 2024 at 10:00, Bob <bob@example.org> wrote:\n>> Send it?\n"),
    ("de", "Thanks, will do.\n\nAm Mo., 1. Jan. 2024 um 10:00 Uhr schrieb Bob <bob@example.org>:\n> Passt das?\n"),
    ("fr", "Thanks, will do.\n\nLe lun. 1 janv. 2024 à 10:00, Bob <bob@example.org> a écrit :\n> Ça va ?\n"),
    (
        "it",
        "Thanks, will do.\n\nIl giorno lun 1 gen 2024 alle ore 10:00 Bob <bob@example.org> ha scritto:\n> Va bene?\n",
    ),
    ("ja", "Thanks, will do.\n\n2024年1月1日(月) 10:00 Bob <bob@example.org>:\n> 大丈夫ですか。\n"),
    # Outlook
    (
        "original message",
        "Thanks, will do.\n\n-----Original Message-----\nFrom: Bob\nSent: Monday\nSubject: Hi\n\nold\n",
    ),
    (
        "en outlook",
        "Thanks, will do.\n\n________________________________\nFrom: Bob <bob@example.org>\n"
        "Sent: Monday, January 1, 2024 10:00 AM\nTo: Alice <alice@example.org>\nSubject: Hi\n\nSend it?\n",
    ),
    (
        "de outlook",
        "Thanks, will do.\n\nVon: Bob <bob@example.org>\nGesendet: Montag, 1. Januar 2024 10:00\nAn: Alice\n",
    ),
    ("fr outlook", "Thanks, will do.\n\nDe : Bob <bob@example.org>\nEnvoyé : lundi 1 janvier 2024 10:00\nÀ : Alice\n"),
    ("es outlook", "Thanks, will do.\n\nDe: Bob <bob@example.org>\nEnviado: lunes, 1 de enero de 2024\nPara: Alice\n"),
    ("zh outlook", "Thanks, will do.\n\n发件人: Bob <bob@example.org>\n发送时间: 2024年1月1日 10:00\n收件人: Alice\n"),
    ("nl outlook", "Thanks, will do.\n\nVan: Bob <bob@example.org>\nVerzonden: maandag 1 januari 2024\nAan: Alice\n"),
    ("header-less quote", "Thanks, will do.\r\n\r\n> Send it?\r\n> Bob\r\n"),
]


@pytest.mark.parametrize("text", [text for _, text in QUOTED], ids=[name for name, _ in QUOTED])
def test_the_quote_under_a_header_is_stripped(text: str) -> None:
    assert strip_reply(text) == Reply("Thanks, will do.", "")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Sounds good.\n\n-- \nAlice\nExample Corp\n", Reply("Sounds good.", "Alice\nExample Corp")),
        ("Sounds good.\n--\nAlice\n", Reply("Sounds good.", "Alice")),  # the delimiter's space lost on the way
        (
            "Sounds good.\n-- \nZoë\n\nOn Mon, 1 Jan 2024, Bob <bob@example.org> wrote:\n> x\n> -- \n> Bob\n",
            Reply("Sounds good.", "Zoë"),  # the reply's signature, not the quoted one
        ),
        ("Fine.\n\nSent from my iPhone\n", Reply("Fine.", "Sent from my iPhone")),
        ("Passt.\n\nGesendet von meinem iPhone\n", Reply("Passt.", "Gesendet von meinem iPhone")),
        (
            "Fine.\n\nSent from my phone, so: yes, ship it.\n",
            Reply("Fine.\n\nSent from my phone, so: yes, ship it.", ""),
        ),
        ("-- \nAlice\n", Reply("", "Alice")),  # a delimiter on the first line: all of it is signature
        ("OK.\r\n-- \t\r\nAlice\r\n", Reply("OK.", "Alice")),  # CRLF, and a tab after the dashes
        (
            "Use a -- b.\nx--\n---\n--x\n-- \nAlice",
            Reply("Use a -- b.\nx--\n---\n--x", "Alice"),  # dashes mid-line or with more after them: prose
        ),
    ],
    ids=[
        "delimiter",
        "delimiter without space",
        "before a quote",
        "mobile footer",
        "de mobile footer",
        "prose",
        "delimiter first",
        "crlf",
        "dashes that are not one",
    ],
)
def test_signatures(text: str, expected: Reply) -> None:
    assert strip_reply(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Just a note, nothing quoted.",
        # Lines the library's own signature patterns would cut the rest of the reply at ("Tak", "Kh", "- x", "Best,").
        "Take the 9:15 train.\nKhaled meets you there.\n- bring the badge\n\nBest,\nAlice",
        "Inline:\n> question one\nanswer one",  # an answer keeps its question
        "From: Bob <bob@example.org>\nSent: Monday\nTo: Alice\n\nforwarded with nothing above it",
    ],
    ids=["no quote", "signature-like lines", "inline quote", "separator first"],
)
def test_a_text_with_nothing_to_strip_is_kept_whole(text: str) -> None:
    assert strip_reply(text) == Reply(text, "")


def test_a_reply_longer_than_the_view_is_kept_whole_quote_and_all() -> None:
    long_reply = "A line of the reply that goes on.\n" * (VIEW_CHARS // 30)
    text = f"{long_reply}\n-----Original Message-----\nFrom: Bob\nSent: Monday\n\nSend it?"
    assert strip_reply(text).text == text
    assert strip_reply(long_reply[-1000:] + text[len(long_reply) :]).text == long_reply[-1000:].strip()


def test_a_header_line_longer_than_the_cap_is_not_a_separator() -> None:
    header = f"On Mon, 1 Jan 2024, {'Bob ' * LINE_CAP}<bob@example.org> wrote:"
    assert strip_reply(f"Thanks.\n\n{header}\n> Send it?").text == f"Thanks.\n\n{header}"  # only its quote goes
    assert strip_reply(f"Thanks.\n\n{header[: LINE_CAP - 40]} wrote:\n> Send it?").text == "Thanks."


class _Recorder:
    """Stands in for the library's header pattern and keeps every string it was tried on."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern
        self.searched: set[str] = set()

    def match(self, text: str, position: int) -> re.Match[str] | None:
        self.searched.add(text)
        return self.pattern.match(text, position)


MIB = 1024 * 1024
HOSTILE = {
    "spaces in one line": "a" + " " * 5 * MIB + "b",
    "blank lines": "a" + "\n" * 5 * MIB + "b",
    "mail words": "Disclaimer: " + "mail " * MIB,
    "On ... wrote: lines": "On Mon, 1 Jan 2024, Bob <b@x.org> wrote:\n> q\n" * 100_000,
    "Original Message lines": "-----Original Message-----\nx\n" * 100_000,
    "From: lines": "From: a b\nx\n" * 400_000,
    "one 1 MB line starting On": "On " + "x " * (MIB // 2),
    "On On On": "On " * MIB,
    "5 MB of prose": "The quick brown fox jumps over the lazy dog.\n" * (5 * MIB // 45),
}


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_the_library_only_ever_reads_the_bounded_view(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = _Recorder(reply_module._SEPARATOR)
    monkeypatch.setattr(reply_module, "_SEPARATOR", recorder)
    strip_reply(text)
    for view in recorder.searched:  # one view, if any line of it can start a header
        lines = view.split("\n")
        assert len(view) <= VIEW_CHARS
        assert len(lines) <= VIEW_LINES
        assert max(map(len, lines)) <= LINE_CAP


def _views() -> list[str]:
    texts = [text for _, text in QUOTED] + list(HOSTILE.values())
    texts += [parse_message(wire_bytes(path)).text or "" for path in corpus_files()]
    views = []
    for text in texts:
        lines = [line.strip()[:LINE_CAP] for line in text.replace("\r\n", "\n").split("\n", VIEW_LINES)[:VIEW_LINES]]
        views.append("\n".join(lines)[:VIEW_CHARS])
    return views


def test_the_header_is_found_where_the_library_would_find_it() -> None:
    """first_header tries the pattern only where a header can start; it must agree with a full search."""
    for view in _views():
        fast, full = first_header(view), reply_module._SEPARATOR.search(view)
        assert (fast and (fast.start(), fast.group())) == (full and (full.start(), full.group())), view[:200]


def test_a_long_run_of_trailing_quoted_lines_is_stripped() -> None:
    assert strip_reply("Noted.\n" + "> quoted\n" * 100_000 + "  ___\n\n") == Reply("Noted.", "")


def test_the_reply_and_signature_are_cut_from_the_text_never_rewritten() -> None:
    for path in corpus_files():
        text = parse_message(wire_bytes(path)).text
        if text:
            stripped, signature = strip_reply(text)
            assert stripped in text.replace("\r\n", "\n"), corpus_id(path)
            assert signature in text.replace("\r\n", "\n"), corpus_id(path)


def test_the_quick_mark_search_agrees_with_the_pattern() -> None:
    # A full-width colon, a dotted capital I and a long s: case and width rules the ASCII search must leave alone.
    lines = ["-----Original Message-----", "ORIGINAL MESSAGE", "Von: a@b.test", "Le 3 mai, a écrit\uff1a", "prose"]
    lines += ["ORIG\u0130NAL MESSAGE", "original me\u017f\u017fage", "no mark at all, ünïcode", "", "a:b:c"]
    ascii_lines = [line for line in lines if line.isascii()]
    for view in [*lines, "\n".join(lines), "\n".join(ascii_lines), *_views()]:
        expected = {view.count("\n", 0, found.start()) for found in reply_module._HEADER_MARK.finditer(view)}
        assert reply_module._marked_lines(view) == expected, view[:200]

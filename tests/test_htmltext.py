"""The text of an HTML-only message: inscriptis's layout, kept to a bounded size whatever the HTML asks."""

from __future__ import annotations

import pytest

from inbound.processing.htmltext import GROWTH, SLACK, TOO_LARGE, text_of_html
from inbound.processing.parse import parse_message

WIDE_CELL = "lorem ipsum dolor " * 555


def html_only(html: str) -> bytes:
    head = "From: a@example.org\r\nTo: b@in.test\r\nSubject: news\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
    return (head + html + "\r\n").encode()


def test_an_ordinary_layout_is_inscriptis_s() -> None:
    html = "<p>Hello <b>there</b></p><ul><li>one</li></ul>"
    html += "<table><tr><td>a</td><td>bb</td></tr><tr><td>ccc</td></tr></table>"
    defects: list[str] = []
    assert text_of_html(html, defects) == "Hello there\n\n  * one\na    bb\nccc"
    assert defects == []


@pytest.mark.parametrize(
    "html",
    [
        '<div style="padding-left:100000em">x</div>\r\n' * 100,  # 100,000 spaces a line
        '<p style="margin-top:100000em">x</p>' * 100,  # 100,000 blank lines a paragraph
    ],
)
def test_spacing_a_style_asks_for_is_cut_to_what_real_mail_uses(html: str) -> None:
    defects: list[str] = []
    text = text_of_html(html, defects)
    assert len(text) < 10 * 100
    assert text.split() == ["x"] * 100
    assert defects == []


@pytest.mark.parametrize(
    "html",
    [
        f"<table><tr><td>{WIDE_CELL}</td></tr>" + "<tr><td>y</td></tr>\r\n" * 5000 + "</table>",  # rows padded
        "<div>" * 250 + "x<br>" * 20000 + "</div>" * 250,  # indentation added up, line after line
    ],
)
def test_a_layout_larger_than_its_bound_is_given_flat_with_a_defect(html: str) -> None:
    parsed = parse_message(html_only(html))
    assert parsed.text is not None
    assert len(parsed.text) <= GROWTH * len(html) + SLACK
    assert set(parsed.text.split()) <= {*WIDE_CELL.split(), "x", "y"}
    assert TOO_LARGE in parsed.defects

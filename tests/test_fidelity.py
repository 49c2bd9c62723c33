"""Payload fidelity (issue 10 part 1): each category the issue found wrong, on a message written for it.

The messages are in ``tests/data/messages`` (see its README). Each test names what a
careful reading of the message says and checks the payload says the same; every
payload is also validated against the schema.
"""

from __future__ import annotations

import base64
import email
import email.policy
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from inbound.processing.parse import parse_message

from .test_parse import payload_of, schema

__all__ = ["schema"]  # the fixture, shared with test_parse

MESSAGES = Path(__file__).resolve().parent / "data" / "messages"


def payload(name: str, schema: Draft202012Validator) -> dict[str, Any]:
    built = payload_of((MESSAGES / name).read_bytes())
    schema.validate(built)
    return built


def test_attached_message_is_an_attachment_summarised_and_not_text(schema: Draft202012Validator) -> None:
    body = payload("attached-message.eml", schema)
    assert body["text"] == "See the forwarded message."
    (attached,) = body["attachments"]  # the PDF inside the attached message is not the outer message's
    assert (attached["filename"], attached["content_type"], attached["disposition"]) == (
        "invoice.eml",
        "message/rfc822",
        "attachment",
    )
    inner = email.message_from_bytes(base64.b64decode(attached["content"]), policy=email.policy.default)
    assert inner["message-id"] == "<inv42@example.net>"
    assert [part.get_filename() for part in inner.iter_attachments()] == ["invoice-42.pdf"]
    assert body["attached_messages"] == [
        {
            "subject": "Rechnung 42 fällig",
            "from": {"name": "Jörg Müller", "email": "joerg@example.net"},
            "date": "2026-11-21T09:30:00-05:00",
            "message_id": "<inv42@example.net>",
        }
    ]
    assert body["report"] is None


def test_delivery_report(schema: Draft202012Validator) -> None:
    body = payload("bounce.eml", schema)
    assert body["text"] == "Your message could not be delivered to one or more recipients."
    assert body["attachments"] == []  # the status and the returned headers are the report, not files
    assert body["report"] == {
        "report_type": "delivery-status",
        "reporting_mta": "mx.example.net",
        "recipients": [
            {
                "action": "failed",
                "status": "5.1.1",
                "final_recipient": "bob@example.net",
                "original_recipient": "Bob@Example.NET",
                "diagnostic_code": "550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown",
                "remote_mta": "mail.example.net",
            },
            {
                "action": "delayed",
                "status": "4.4.1",
                "final_recipient": "carol@example.net",
                "original_recipient": None,
                "diagnostic_code": "421 4.4.1 Try again later",
                "remote_mta": None,
            },
        ],
        "original_message_id": "<orig1@example.org>",
        "original_subject": "Café on Friday",
    }


def test_report_with_the_returned_message(schema: Draft202012Validator) -> None:
    body = payload("bounce-returned-message.eml", schema)
    assert body["text"] == "Delivery to bob@example.net failed."  # not the returned message's text
    assert [a["content_type"] for a in body["attachments"]] == ["message/rfc822"]  # not its beach.png
    report = body["report"]
    assert [(r["action"], r["status"]) for r in report["recipients"]] == [("failed", "5.2.2")]
    assert (report["original_message_id"], report["original_subject"]) == ("<photos@example.org>", "Photos")
    assert [m["subject"] for m in body["attached_messages"]] == ["Photos"]


def test_alternative_gives_the_first_text_and_keeps_related_files(schema: Draft202012Validator) -> None:
    body = payload("alternative.eml", schema)
    assert body["text"] == "Hello in plain text."  # once; not the third alternative's
    assert body["html"] == '<p>Hello in <b>HTML</b>. <img src="cid:logo@example.org"></p>'
    assert [(a["content_type"], a["content_id"], a["disposition"]) for a in body["attachments"]] == [
        ("image/png", "logo@example.org", "inline")
    ]


def test_html_only_message_gets_text_from_its_html(schema: Draft202012Validator) -> None:
    body = payload("html-only.eml", schema)
    assert body["html"].startswith("<html><body><h1>Order shipped</h1>")
    assert body["text"] == "Order shipped\n\nYour order 42 is on its way.\n\n  * Tea\n  * Cups"
    assert body["stripped_text"] == body["text"]


def test_empty_alternative_is_not_an_attachment(schema: Draft202012Validator) -> None:
    body = payload("empty-alternative.eml", schema)
    assert (body["text"], body["attachments"]) == ("The only text.", [])


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("gb2312-as-gbk.eml", "朱镕基和陶喆\n"),  # 镕 and 喆 are GBK, not GB2312
        ("shift-jis-as-cp932.eml", "①番の会議室、髙橋さん\n"),  # NEC and IBM extensions of CP932
        ("ks-c-5601-as-cp949.eml", "똠방각하 안녕하세요\n"),  # 똠 as CP949 (UHC) writes it
        ("big5-as-hkscs.eml", "香港增補字符集\uff1a嘅咗\n"),  # 嘅 and 咗 are HKSCS; U+FF1A a full-width colon
        ("latin1-as-windows-1252.eml", "\u201cPrice\u201d: 5 \u20ac, caf\u00e9\n"),  # 0x93 0x94 0x80
    ],
)
def test_charset_labels_read_as_their_supersets(name: str, text: str, schema: Draft202012Validator) -> None:
    body = payload(name, schema)
    assert body["text"] == text
    assert not any("U+FFFD" in d or "CharsetDecodeDefect" in d for d in body["defects"]), body["defects"]


def test_one_bad_byte_replaces_only_itself(schema: Draft202012Validator) -> None:
    body = payload("utf8-one-bad-byte.eml", schema)
    assert body["text"] == "日本語のテキスト\ufffdです\n"
    assert "body: bytes that are not utf-8 (charset 'utf-8') replaced with U+FFFD" in body["defects"]


def test_missing_label_on_8bit_text_is_guessed(schema: Draft202012Validator) -> None:
    body = payload("no-charset-koi8r.eml", schema)
    assert body["text"] == "Привет! Это письмо написано по-русски, в кодировке КОИ-8.\n"
    assert "body: no charset with 8-bit bytes; decoded as koi8-r (guessed)" in body["defects"]


def test_character_split_across_two_encoded_words(schema: Draft202012Validator) -> None:
    assert payload("split-encoded-word.eml", schema)["subject"] == "テスト"


def test_superset_label_in_an_encoded_word() -> None:
    word = base64.b64encode("朱镕基".encode("gbk")).decode()
    parsed = parse_message(f"From: a@example.org\r\nSubject: =?gb2312?B?{word}?=\r\n\r\nx\r\n".encode())
    assert parsed.subject == "朱镕基"


def test_wrong_boundary_is_recovered(schema: Draft202012Validator) -> None:
    body = payload("wrong-boundary.eml", schema)
    assert body["text"] == "The text behind a boundary the header does not declare."
    (pdf,) = body["attachments"]
    assert (pdf["filename"], base64.b64decode(pdf["content"])) == ("report.pdf", b"%PDF-1.4 recovered")
    assert "body: the multipart/mixed boundary never came; parts found under 'actual'" in body["defects"]


def test_no_boundary_never_puts_mime_source_into_text(schema: Draft202012Validator) -> None:
    body = payload("no-boundary.eml", schema)
    assert body["text"] is None
    (kept,) = body["attachments"]  # nothing lost: the raw part, for whoever wants to dig
    assert kept["content_type"] == "application/octet-stream"
    assert b"Content-Type: application/pdf" in base64.b64decode(kept["content"])
    assert "body: MIME parts without a usable boundary; kept as one attachment, not as text" in body["defects"]


def test_inline_image_without_name_or_content_id_is_kept(schema: Draft202012Validator) -> None:
    body = payload("inline-image-unnamed.eml", schema)
    assert body["text"] == "Screenshot below."
    assert [(a["filename"], a["content_type"], a["content_id"], a["disposition"]) for a in body["attachments"]] == [
        (None, "image/png", None, "inline")
    ]
    assert not any("CharsetDecodeDefect" in d for d in body["defects"])  # an image has no charset


def test_two_named_text_parts_give_text(schema: Draft202012Validator) -> None:
    body = payload("named-text-parts.eml", schema)
    assert body["text"] == "First named part.\nSecond named part."
    assert [a["filename"] for a in body["attachments"]] == ["part1.txt", "part2.txt"]


def test_addresses_semicolons_groups_and_encoded_names(schema: Draft202012Validator) -> None:
    body = payload("addresses.eml", schema)
    assert body["from"] == {"name": "张三", "email": "zhang@example.org"}
    assert body["to"] == [
        {"name": "Bob", "email": "bob@example.net"},
        {"name": "", "email": "carol@example.net"},
        {"name": "Dee; Dum", "email": "dee@example.net"},
    ]
    assert [a["email"] for a in body["cc"]] == ["erin@example.net", "frank@example.net"]  # its ";" ends a group
    assert "headers: 1 address field(s) with ';' between addresses, read as ','" in body["defects"]


def test_attached_message_in_base64_and_a_partial_message(schema: Draft202012Validator) -> None:
    body = payload("attached-message-base64.eml", schema)
    assert body["text"] == "Outer text."
    forwarded, partial = body["attachments"]
    assert forwarded["content_type"] == "message/rfc822"
    assert base64.b64decode(forwarded["content"]).startswith(b"From: Bob <bob@example.net>\r\nSubject: Encoded inside")
    assert [m["subject"] for m in body["attached_messages"]] == ["Encoded inside"]
    assert partial["content_type"] == "message/partial"  # kept with its bytes, not summarised
    assert base64.b64decode(partial["content"]).endswith(b"first half")
    assert "body: an attached message/rfc822 in base64, decoded" in body["defects"]


def test_ascii_label_on_utf8_text(schema: Draft202012Validator) -> None:
    body = payload("ascii-label-on-utf8.eml", schema)
    assert body["text"] == "Envoyé depuis mon téléphone\n"  # not windows-1252 mojibake
    assert "body: charset 'us-ascii' on text that is UTF-8; read as UTF-8" in body["defects"]


def test_delivery_status_without_fields_is_text(schema: Draft202012Validator) -> None:
    raw = (
        b"From: postmaster@example.net\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=r\r\n"
        b"\r\n--r\r\nContent-Type: message/delivery-status\r\n\r\nYour message could not be delivered.\r\n--r--\r\n"
    )
    body = payload_of(raw)
    schema.validate(body)
    assert body["text"] is not None
    assert "Your message could not be delivered." in body["text"]
    assert body["report"]["recipients"] == []

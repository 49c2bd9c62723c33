"""Payload formats: each provider format read back by django-anymail's parser, plus the exact details.

The message below has what a format can get wrong: a non-ASCII subject and
display name, two To addresses and a Cc, text and HTML alternatives, an
inline image cited by Content-ID and a binary attachment that is not UTF-8.
Each provider format is fed, as Content-Type + body bytes, to the inbound view
of django-anymail (tests/anymail_check.py), and what it parses must be that message.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import sqlite3
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import Message
from email.parser import BytesParser
from email.policy import default
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from standardwebhooks.webhooks import Webhook
from werkzeug.formparser import parse_form_data

from inbound.config import PAYLOAD_FORMATS, StreamSettings, load_settings
from inbound.delivery.outbox import Delivery, Outbox
from inbound.delivery.signing import signed_headers, verify
from inbound.envelope import Envelope, Recipient
from inbound.processing.formats import FORMATS, Rendered, Source, render
from inbound.processing.formats import _shared as shared
from inbound.processing.formats._shared import json_body
from inbound.processing.parse import Address, parse_message

from .anymail_check import MAILGUN_KEY, AnymailWebhookValidationFailure, anymail_event, anymail_message
from .corpus import corpus_files, wire_bytes
from .fixtures import validator
from .harness import SECRET, config_problems

QUEUE_ID = "01JD0000000000000000000001"
DELIVERY_ID = f"{QUEUE_ID}-support"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))
PDF = b"%PDF-1.4\n\xe2\xe3\xcf\xd3\n" + bytes(range(255, -1, -1))
ENVELOPE = Envelope(
    queue_id=QUEUE_ID,
    mail_from="bounce@example.org",
    recipients=(Recipient("help+T42@in.test", "support", "T42"), Recipient("sales@in.test", "sales", None)),
    client_address="192.0.2.10:50123",
    helo="mail.example.org",
    tls=True,
    received_at="2026-11-22T10:00:00.000Z",
)


def b64(data: bytes) -> str:
    return base64.encodebytes(data).decode()


MESSAGE = (
    "Received: from mail.example.org ([192.0.2.10]) by mx.in.test\r\n"
    "From: =?utf-8?q?Z=C3=B6e_M=C3=BCller?= <zoe@example.org>\r\n"
    "To: Help Desk <help+T42@in.test>, other@example.net\r\n"
    "Cc: Carl <carl@example.org>\r\n"
    "Reply-To: replies@example.org\r\n"
    "Subject: =?utf-8?q?R=C3=A9sum=C3=A9_attached?=\r\n"
    "Date: Sun, 22 Nov 2026 11:00:00 +0100\r\n"
    "Message-ID: <m1@example.org>\r\n"
    "X-Custom: kept\r\n"
    "MIME-Version: 1.0\r\n"
    'Content-Type: multipart/mixed; boundary="outer"\r\n'
    "\r\n"
    "--outer\r\n"
    'Content-Type: multipart/related; boundary="related"\r\n'
    "\r\n"
    "--related\r\n"
    'Content-Type: multipart/alternative; boundary="alt"\r\n'
    "\r\n"
    "--alt\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "Here is my résumé.\r\n"
    "\r\n"
    "-- \r\n"
    "Zoë\r\n"
    "\r\n"
    "On Sat, 21 Nov 2026, Help wrote:\r\n"
    "> Send it?\r\n"
    "--alt\r\n"
    "Content-Type: text/html; charset=utf-8\r\n"
    "\r\n"
    '<p>Here is my résumé.</p><img src="cid:logo@example.org">\r\n'
    "--alt--\r\n"
    "--related\r\n"
    "Content-Type: image/png\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "Content-ID: <logo@example.org>\r\n"
    'Content-Disposition: inline; filename="logo.png"\r\n'
    "\r\n" + b64(PNG) + "--related--\r\n"
    "--outer\r\n"
    'Content-Type: application/pdf; name="résumé.pdf"\r\n'
    "Content-Transfer-Encoding: base64\r\n"
    "Content-Disposition: attachment; filename*=utf-8''r%C3%A9sum%C3%A9.pdf\r\n"
    "\r\n" + b64(PDF) + "--outer--\r\n"
).encode()
TEXT = (
    "Here is my résumé.\n\n-- \nZoë\n\nOn Sat, 21 Nov 2026, Help wrote:\n> Send it?"  # the last CRLF is the boundary's
)


def stream(payload_format: str, **options: Any) -> StreamSettings:
    if payload_format == "mailgun":
        options.setdefault("mailgun_signing_key", MAILGUN_KEY)
    return StreamSettings(
        "support", ("*@in.test",), "https://app.test/", SECRET, payload_format=payload_format, **options
    )


def rendered(payload_format: str, raw: bytes = MESSAGE, delivery_id: str = DELIVERY_ID, **options: Any) -> Rendered:
    return render(Source(parse_message(raw), ENVELOPE, stream(payload_format, **options), delivery_id, raw))


def form_fields(result: Rendered) -> dict[str, Message]:
    """A form-data body read with the stdlib alone: field name -> its part."""
    head = f"Content-Type: {result.content_type}\r\n\r\n".encode()
    form = BytesParser(policy=default).parsebytes(head + result.body)
    parts: dict[str, Message] = {}
    for part in form.iter_parts():
        name = part.get_param("name", header="content-disposition")
        assert isinstance(name, str)
        parts[name] = part
    return parts


def field(parts: dict[str, Message], name: str) -> bytes:
    payload = parts[name].get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload


def test_every_configurable_format_has_a_module() -> None:
    assert set(FORMATS) == set(PAYLOAD_FORMATS)


PROVIDER_CASES = [
    pytest.param("postmark", {}, id="postmark"),
    pytest.param("postmark", {"include_raw": True}, id="postmark-RawEmail"),
    pytest.param("mailgun", {}, id="mailgun"),
    pytest.param("mailgun", {"include_raw": True}, id="mailgun-body-mime"),
    pytest.param("sendgrid", {}, id="sendgrid"),
    pytest.param("sendgrid", {"sendgrid_raw": True}, id="sendgrid-raw"),
]


@pytest.mark.parametrize(("payload_format", "options"), PROVIDER_CASES)
def test_anymail_reads_the_message_we_sent(payload_format: str, options: dict[str, Any]) -> None:
    result = rendered(payload_format, **options)
    expected_type = "application/json" if payload_format == "postmark" else "multipart/form-data; boundary="
    assert result.content_type.startswith(expected_type)
    event = anymail_event(payload_format, result.content_type, result.body)
    message = event.message
    assert message is not None
    assert message.from_email is not None
    assert (message.from_email.display_name, message.from_email.addr_spec) == ("Zöe Müller", "zoe@example.org")
    assert [a.addr_spec for a in message.to] == ["help+T42@in.test", "other@example.net"]
    assert [a.addr_spec for a in message.cc] == ["carl@example.org"]
    assert message.subject == "Résumé attached"
    assert message.text is not None
    assert message.text.replace("\r\n", "\n") == TEXT
    assert message.html is not None
    assert message.html.strip() == '<p>Here is my résumé.</p><img src="cid:logo@example.org">'
    [attachment] = message.attachments
    assert (attachment.get_filename(), attachment.get_content_type()) == ("résumé.pdf", "application/pdf")
    assert attachment.get_content_bytes() == PDF
    inline = message.content_id_map["logo@example.org"]
    assert (inline.get_content_type(), inline.get_content_bytes()) == ("image/png", PNG)
    assert message.envelope_sender == "bounce@example.org"
    assert message.envelope_recipient == "help+T42@in.test"
    if payload_format != "sendgrid":  # SendGrid sends no reply-stripped text
        assert message.stripped_text == "Here is my résumé."


HEADER_CASES = [
    pytest.param(b"Subject: =?utf-8?q?Invoice=0D=0Ano._42?=\r\n", id="subject-with-crlf"),
    pytest.param(
        b"Subject: x\r\nX-Mailer: =?utf-8?q?a=0Ab?=\r\nSender: =?utf-8?q?a=0Ab?= <a@example.org>\r\n", id="lf"
    ),
    pytest.param(b"Subject: x\r\nTo: =?utf-8?q?Doe=2C_Jane?= <help+T42@in.test>\r\n", id="comma-in-a-name"),
]


@pytest.mark.parametrize("payload_format", ["postmark", "mailgun", "sendgrid"])
@pytest.mark.parametrize("headers", HEADER_CASES)
def test_anymail_reads_decoded_header_values_as_they_were_written(payload_format: str, headers: bytes) -> None:
    """A line break or a comma decoded from an encoded word neither breaks the receiver's parser nor adds an address."""
    raw = b"From: =?utf-8?q?M=C3=BCller=2C_Zo=C3=AB?= <zoe@example.org>\r\n" + headers + b"\r\nhi\r\n"
    message = message_of_anymail(payload_format, raw)
    assert message.from_email is not None
    assert (message.from_email.display_name, message.from_email.addr_spec) == ("Müller, Zoë", "zoe@example.org")
    if b"To:" in headers:
        assert [(a.display_name, a.addr_spec) for a in message.to] == [("Doe, Jane", "help+T42@in.test")]
    if payload_format != "sendgrid":  # SendGrid's subject is a form field, not a header
        assert message["Subject"] in ("Invoice no. 42", "x")
    if b"X-Mailer" in headers and payload_format != "sendgrid":
        assert (message["X-Mailer"], message["Sender"]) == ("a b", "a b <a@example.org>")


def test_postmark_fields_and_schema() -> None:
    result = rendered("postmark", include_raw=True)
    payload = json.loads(result.body)
    assert not list(validator("postmark-inbound.schema.json").iter_errors(payload))
    assert payload["FromFull"] == {"Email": "zoe@example.org", "Name": "Zöe Müller", "MailboxHash": ""}
    assert payload["To"] == "Help Desk <help+T42@in.test>, other@example.net"
    assert payload["ToFull"][0] == {"Email": "help+T42@in.test", "Name": "Help Desk", "MailboxHash": "T42"}
    assert payload["BccFull"] == []  # the stream's recipient is in To; sales@ (another stream) never shows
    assert (payload["OriginalRecipient"], payload["MailboxHash"]) == ("help+T42@in.test", "T42")
    assert (payload["MessageID"], payload["MessageStream"]) == (DELIVERY_ID, "support")
    assert payload["Date"] == "Sun, 22 Nov 2026 11:00:00 +0100"
    assert payload["ReplyTo"] == "replies@example.org"
    assert payload["Headers"][0] == {"Name": "Return-Path", "Value": "<bounce@example.org>"}
    names = [h["Name"] for h in payload["Headers"]]
    assert "Message-ID" in names
    assert "X-Custom" in names
    assert not {"From", "To", "Cc", "Subject", "Date", "Reply-To"} & set(names)
    pdf, png = sorted(payload["Attachments"], key=lambda a: a["ContentType"])
    assert (pdf["Name"], pdf["ContentLength"], "ContentID" in pdf) == ("résumé.pdf", len(PDF), False)
    assert (base64.b64decode(png["Content"]), png["ContentID"]) == (PNG, "logo@example.org")
    assert payload["RawEmail"] == MESSAGE.decode()
    assert "RawEmail" not in json.loads(rendered("postmark").body)


def test_postmark_bcc_lists_the_streams_recipients_that_the_headers_do_not_show() -> None:
    raw = b"From: a@example.org\r\nTo: someone@example.net\r\nSubject: x\r\n\r\nhi\r\n"
    payload = json.loads(rendered("postmark", raw).body)
    assert payload["BccFull"] == [{"Email": "help+T42@in.test", "Name": "", "MailboxHash": "T42"}]
    assert message_of_anymail("postmark", raw).bcc[0].addr_spec == "help+T42@in.test"


def message_of_anymail(payload_format: str, raw: bytes) -> Any:
    result = rendered(payload_format, raw)
    return anymail_message(payload_format, result.content_type, result.body)


def test_inbound_format_matches_its_schema_and_carries_the_raw_message_on_request() -> None:
    schema = validator("inbound-message.schema.json")
    plain, with_raw = json.loads(rendered("inbound").body), json.loads(rendered("inbound", include_raw=True).body)
    assert "raw" not in plain
    assert not list(schema.iter_errors(plain))
    assert not list(schema.iter_errors(with_raw))
    assert with_raw["raw"]["size"] == len(MESSAGE)
    assert base64.b64decode(with_raw["raw"]["content"]) == MESSAGE
    assert {k: v for k, v in with_raw.items() if k != "raw"} == plain


def test_mailgun_signature_and_fields() -> None:
    parts = form_fields(rendered("mailgun"))
    timestamp, token = field(parts, "timestamp").decode(), field(parts, "token").decode()
    assert int(timestamp) == int(datetime(2026, 11, 22, 10, tzinfo=UTC).timestamp())
    expected = hmac.new(MAILGUN_KEY.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    assert field(parts, "signature").decode() == expected
    assert field(parts, "recipient") == b"help+T42@in.test"
    assert field(parts, "sender") == b"bounce@example.org"
    assert field(parts, "attachment-count") == b"2"
    assert field(parts, "stripped-signature").decode() == "Zoë"
    assert json.loads(field(parts, "content-id-map")) == {"<logo@example.org>": "attachment-1"}
    assert ["Subject", "Résumé attached"] in json.loads(field(parts, "message-headers"))
    assert (field(parts, "attachment-2"), parts["attachment-2"].get_content_type()) == (PDF, "application/pdf")
    assert "body-mime" not in parts


def test_mailgun_content_id_map_lists_every_part_that_shares_a_content_id() -> None:
    part = b"--b\r\nContent-Type: image/png\r\nContent-ID: <logo@x>\r\nContent-Disposition: inline\r\n\r\n"
    raw = (
        b"From: a@example.org\r\nTo: help+T42@in.test\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/related; boundary=b\r\n\r\n--b\r\nContent-Type: text/html\r\n\r\n"
        b'<img src="cid:logo@x">\r\n' + part + b"AAA\r\n" + part + b"BBB\r\n--b--\r\n"
    )
    result = rendered("mailgun", raw)
    assert field(form_fields(result), "content-id-map") == b'{"<logo@x>": "attachment-1", "<logo@x>": "attachment-2"}'
    message = anymail_message("mailgun", result.content_type, result.body)
    images = [p for p in message.walk() if p.get_content_type() == "image/png"]
    assert [(p.is_inline(), p.get_content_bytes()) for p in images] == [(True, b"AAA"), (True, b"BBB")]
    assert message.attachments == []


def test_mailgun_post_signed_with_another_key_is_refused_by_the_receiver() -> None:
    result = rendered("mailgun", mailgun_signing_key="not-the-receivers-key")
    with pytest.raises(AnymailWebhookValidationFailure, match="incorrect signature"):
        anymail_event("mailgun", result.content_type, result.body)


def test_sendgrid_fields_and_raw_mode() -> None:
    parts = form_fields(rendered("sendgrid"))
    assert field(parts, "headers") == MESSAGE[: MESSAGE.index(b"\r\n\r\n") + 2]
    assert json.loads(field(parts, "envelope")) == {"to": ["help+T42@in.test"], "from": "bounce@example.org"}
    assert field(parts, "sender_ip") == b"192.0.2.10"
    assert json.loads(field(parts, "content-ids")) == {"logo@example.org": "attachment1"}
    info = json.loads(field(parts, "attachment-info"))
    assert info["attachment2"] == {"filename": "résumé.pdf", "name": "résumé.pdf", "type": "application/pdf"}
    assert field(parts, "attachment2") == PDF
    assert "spam_score" not in parts
    assert "email" not in parts
    raw_parts = form_fields(rendered("sendgrid", sendgrid_raw=True))
    assert field(raw_parts, "email") == MESSAGE
    assert not {"text", "html", "headers", "attachment1"} & set(raw_parts)


def test_unnamed_attachments_get_a_file_name_so_form_parsers_keep_them() -> None:
    raw = (
        b"From: a@example.org\r\nTo: help@in.test\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n'
        b"--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nAAEC\r\n--b--\r\n"
    )
    for payload_format in ("mailgun", "sendgrid"):
        [attachment] = message_of_anymail(payload_format, raw).attachments
        assert attachment.get_content_bytes() == b"\x00\x01\x02", payload_format


FILE_NAMES = [
    ("invoice\\", "invoice_"),
    ("100%22.pdf", "100_22.pdf"),
    ("x%0d%0A.pdf", "x_0d_0A.pdf"),
    ("100% off, 50%25.pdf", "100% off, 50%25.pdf"),
    ('a"b\tc', "a_b_c"),
]


@pytest.mark.parametrize("payload_format", ["mailgun", "sendgrid"])
@pytest.mark.parametrize(("sent", "read"), FILE_NAMES)
def test_a_file_name_a_form_part_cannot_hold_is_written_so_the_file_stays_a_file(
    payload_format: str, sent: str, read: str
) -> None:
    """urllib3 escapes only '"', CR and LF in filename="...": a trailing backslash escaped the closing quote."""
    disposition = "attachment; filename*=utf-8''" + quote(sent)
    raw = MESSAGE.replace(b"attachment; filename*=utf-8''r%C3%A9sum%C3%A9.pdf", disposition.encode())
    result = rendered(payload_format, raw)
    environ = {
        "REQUEST_METHOD": "POST",
        "CONTENT_TYPE": result.content_type,
        "CONTENT_LENGTH": str(len(result.body)),
        "wsgi.input": io.BytesIO(result.body),
    }
    _, _, files = parse_form_data(environ)
    pdf = [(f.filename, f.read()) for f in files.values() if f.content_type == "application/pdf"]
    for file in files.values():
        file.close()
    assert pdf == [(read, PDF)]
    [attachment] = message_of_anymail(payload_format, raw).attachments
    assert (attachment.get_filename(), attachment.get_content_bytes()) == (read, PDF)
    if payload_format == "sendgrid":  # the exact name is in attachment-info
        info = json.loads(field(form_fields(result), "attachment-info"))
        assert sent in [i["filename"] for i in info.values()]


@pytest.mark.parametrize("payload_format", [*PAYLOAD_FORMATS, "sendgrid-raw"])
def test_a_body_rebuilt_from_the_same_record_is_byte_identical(payload_format: str) -> None:
    options = {"sendgrid_raw": True} if payload_format == "sendgrid-raw" else {}
    name = payload_format.removesuffix("-raw")
    first, second = rendered(name, **options), rendered(name, **options)
    assert first == second
    other = rendered(name, delivery_id=f"{QUEUE_ID}-other", **options)
    assert (other.content_type == first.content_type) == (name in ("inbound", "postmark"))


def test_a_boundary_that_the_message_contains_is_skipped() -> None:
    first_choice = hashlib.sha256(f"{DELIVERY_ID}/0".encode()).hexdigest()[:40]
    assert first_choice in rendered("sendgrid").content_type
    raw = MESSAGE.replace(b"X-Custom: kept", b"X-Custom: --" + first_choice.encode())
    result = rendered("sendgrid", raw)
    assert first_choice not in result.content_type
    assert b"--" + first_choice.encode() in field(form_fields(result), "headers")


def test_signature_covers_the_exact_bytes_and_matches_the_reference_library() -> None:
    now = datetime.now(UTC)
    text = b'{"subject":"R\xc3\xa9sum\xc3\xa9"}'
    headers = signed_headers((SECRET,), DELIVERY_ID, text, "application/json", now)
    assert headers["webhook-signature"] == Webhook(SECRET).sign(DELIVERY_ID, now.replace(microsecond=0), text.decode())
    Webhook(SECRET).verify(text.decode(), headers)  # raises if the library disagrees
    form = rendered("mailgun")
    headers = signed_headers((SECRET,), DELIVERY_ID, form.body, form.content_type)
    assert headers["content-type"] == form.content_type
    assert verify(SECRET, form.body, headers)
    assert not verify(SECRET, form.body.replace(PDF[:8], b"%PDF-1.5"), headers)


def test_content_type_survives_the_outbox_and_an_old_outbox_gains_the_column(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    db = sqlite3.connect(path)  # the table as it was before payload formats
    db.execute(
        "CREATE TABLE deliveries (delivery_id TEXT PRIMARY KEY, stream TEXT NOT NULL, queue_id TEXT NOT NULL,"
        " generation INTEGER NOT NULL, payload BLOB, attempts INTEGER NOT NULL DEFAULT 0,"
        " steps INTEGER NOT NULL DEFAULT 0, due_at REAL NOT NULL, added_at REAL NOT NULL,"
        " done INTEGER NOT NULL DEFAULT 0, lease_owner TEXT, lease_until REAL NOT NULL DEFAULT 0)"
    )
    db.execute("INSERT INTO deliveries VALUES ('Q1-s', 's', 'Q1', 0, x'7b7d', 0, 0, 0, 0, 0, NULL, 0)")
    db.commit()
    db.close()
    outbox = Outbox(path)
    form = "multipart/form-data; boundary=x"
    outbox.add([Delivery("Q2-s", "s", "Q2", 0, b"--x--\r\n", 0, 0, 0.0, form)])
    claimed = outbox.claim("s", 10, "me", 60)
    assert [(d.delivery_id, d.content_type) for d in claimed] == [("Q1-s", "application/json"), ("Q2-s", form)]
    outbox.close()


CONFIG = f"""
[[streams]]
name = "support"
addresses = ["*@in.example.test"]
webhook_url = "https://app.example.com/inbound"
signing_secret = "{SECRET}"
"""


@pytest.mark.parametrize(
    ("extra", "key", "problem"),
    [
        ('payload_format = "mandrill"', "streams.support.payload_format", "must be one of 'inbound', 'postmark'"),
        (
            'payload_format = "mailgun"',
            "streams.support.mailgun_signing_key",
            'is required with payload_format = "mailgun"',
        ),
        ('mailgun_signing_key = "k"', "streams.support.mailgun_signing_key", 'needs payload_format = "mailgun"'),
        ("sendgrid_raw = true", "streams.support.sendgrid_raw", 'needs payload_format = "sendgrid"'),
        ('include_raw = "yes"', "streams.support.include_raw", "must be bool"),
    ],
)
def test_format_keys_are_checked(tmp_path: Path, extra: str, key: str, problem: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(CONFIG + extra + "\n")
    message = config_problems(path)
    assert f"bad.toml: {key}" in message
    assert problem in message


def test_format_keys_are_read(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text(CONFIG + 'payload_format = "mailgun"\nmailgun_signing_key = "k"\ninclude_raw = true\n')
    settings = load_settings(path, {}).stream("support")
    assert (settings.payload_format, settings.mailgun_signing_key, settings.include_raw) == ("mailgun", "k", True)
    path.write_text(CONFIG)
    assert load_settings(path, {}).stream("support").payload_format == "inbound"


def test_raw_email_parses_back_to_the_message() -> None:
    payload = json.loads(rendered("postmark", include_raw=True).body)
    assert message_from_bytes(payload["RawEmail"].encode())["Message-ID"] == "<m1@example.org>"


def test_raw_message_from_the_bus_and_past_retention(tmp_path: Path) -> None:
    from inbound.bus.embedded import EmbeddedBus
    from inbound.ids import new_queue_id, queue_id_time
    from inbound.ops.rawmessage import RawMessageNotFound, raw_message
    from inbound.records import RECEIVED, encode_received

    queue_id = new_queue_id()
    assert abs((queue_id_time(queue_id) or 0) - datetime.now(UTC).timestamp()) < 60
    bus = EmbeddedBus(tmp_path / "bus.db")
    try:
        bus.ensure_topics([RECEIVED])
        producer = bus.producer()
        producer.send(RECEIVED, encode_received(ENVELOPE, MESSAGE), key=queue_id.encode())
        producer.flush()
        assert raw_message(bus, None, f"{queue_id}-support") == MESSAGE
        assert raw_message(bus, 3600, queue_id) == MESSAGE
        with pytest.raises(RawMessageNotFound, match=f"{QUEUE_ID} was received at 2024-.*past bus.retention \\(60m\\)"):
            raw_message(bus, 3600, QUEUE_ID)
        with pytest.raises(RawMessageNotFound, match="no message with queue id"):
            raw_message(bus, None, QUEUE_ID)
    finally:
        bus.close()


def test_mailgun_without_attachments_is_urlencoded_as_mailgun_sends_it() -> None:
    raw = b"From: A <a@example.org>\r\nTo: help@in.test\r\nSubject: caf\xc3\xa9\r\n\r\nHello & bye=1\r\n"
    result = rendered("mailgun", raw, include_raw=True)
    assert result.content_type == "application/x-www-form-urlencoded"
    message = anymail_message("mailgun", result.content_type, result.body)  # body-mime: parsed from the raw message
    assert (message.subject, message.text) == ("café", "Hello & bye=1\n")
    message = message_of_anymail("mailgun", raw)  # the parsed fields
    assert (message.subject, message.text, message.attachments) == ("café", "Hello & bye=1\n", [])


@pytest.mark.parametrize("payload_format", ["inbound", "postmark"])
def test_a_json_body_is_what_the_stdlib_writes(payload_format: str) -> None:
    """orjson writes the JSON formats' bodies below ORJSON_BELOW: byte for byte the stdlib's compact form."""
    raws = [MESSAGE, *(wire_bytes(path) for path in corpus_files())]
    for raw in raws:
        body = render(Source(parse_message(raw), ENVELOPE, stream(payload_format, include_raw=True), DELIVERY_ID, raw))
        stdlib = json.dumps(json.loads(body.body), separators=(",", ":"), ensure_ascii=False).encode()
        assert body.body == stdlib


def test_json_body_answers_as_the_stdlib_does() -> None:
    """What orjson refuses goes to the stdlib: an int past 64 bits is written, a lone surrogate refused alike."""
    for payload in ({"size": 2**70}, {"text": '\u2028 \x7f \x00 "\\ ü 😀'}):
        assert json_body(payload, 100) == json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    with pytest.raises(UnicodeEncodeError):  # as the stdlib's output, encoded, refuses it
        json_body({"text": "an escaped byte left as \udc80"}, 100)


@pytest.fixture
def no_orjson(monkeypatch: pytest.MonkeyPatch) -> None:
    """orjson refused: a body it would write fails the test."""

    class Refused:
        @staticmethod
        def dumps(value: object) -> bytes:
            raise AssertionError("orjson used")

    monkeypatch.setattr(shared, "orjson", Refused)


@pytest.mark.usefixtures("no_orjson")
def test_a_big_message_is_written_by_the_stdlib() -> None:
    """Past ORJSON_BELOW orjson is not used: it cannot answer running out of memory (see _shared)."""
    assert json_body({"a": "ü"}, shared.ORJSON_BELOW) == '{"a":"ü"}'.encode()
    with pytest.raises(AssertionError, match="orjson used"):
        json_body({"a": "ü"}, shared.ORJSON_BELOW - 1)


@pytest.mark.usefixtures("no_orjson")
def test_a_small_message_whose_text_is_large_is_written_by_the_stdlib() -> None:
    """An HTML-only message's text is its layout, which may be larger than the message (htmltext.py)."""
    cells = "".join(f"<tr><td>{n}</td><td>{'w' * 300}</td></tr>" for n in range(1800))
    raw = b"From: a@example.org\r\nContent-Type: text/html\r\n\r\n<table>" + cells.encode() + b"</table>\r\n"
    source = Source(parse_message(raw), ENVELOPE, stream("inbound"), DELIVERY_ID, raw)
    assert len(raw) < shared.ORJSON_BELOW <= source.size
    assert json.loads(render(source).body)["text"] == source.parsed.text


@pytest.mark.parametrize("payload_format", sorted(FORMATS))
def test_every_corpus_message_renders(payload_format: str) -> None:
    """A message the parser reads must have a body in every format; RFC 6532 addresses (UTF-8) among them."""
    for path in corpus_files():
        raw = wire_bytes(path)
        render(Source(parse_message(raw), ENVELOPE, stream(payload_format, include_raw=True), DELIVERY_ID, raw))


def test_a_utf8_address_is_written_as_it_is_and_its_name_as_any_other() -> None:
    addresses = [Address("Märy Smith", "märy@exämple.net"), Address("", "zoë@exämple.net"), Address("Bob", "b@x.test")]
    assert shared.address_line(addresses) == (
        "=?utf-8?q?M=C3=A4ry_Smith?= <märy@exämple.net>, zoë@exämple.net, Bob <b@x.test>"
    )

"""One message, five streams, five formats: what reaches a real webhook receiver, and the raw message on request.

End to end: SMTP in, the real ``inbound serve``, the real test receiver. Each
POST must carry its format's content type and a valid signature over its
exact bytes, and django-anymail's inbound view must read the provider formats
back into the message that was sent.
"""

from __future__ import annotations

import base64
import json
import subprocess

from .anymail_check import MAILGUN_KEY, anymail_message
from .fixtures import Pipeline
from .harness import INBOUND, ROOT, SECRET, run_cli, send, wait_for
from .test_formats import MESSAGE, PDF, PNG

STREAMS = {  # stream name -> (payload_format, extra keys)
    "plain": ("inbound", "include_raw = true"),
    "pm": ("postmark", ""),
    "mg": ("mailgun", f'mailgun_signing_key = "{MAILGUN_KEY}"'),
    "sg": ("sendgrid", ""),
    "sgraw": ("sendgrid", "sendgrid_raw = true"),
}


def streams_toml(pipeline: Pipeline) -> str:
    return "".join(
        f"""
[[streams]]
name = "{name}"
addresses = ["{name}@in.test"]
webhook_url = "{pipeline.receiver.url("/" + name)}"
signing_secret = "{SECRET}"
payload_format = "{payload_format}"
{extra}
"""
        for name, (payload_format, extra) in STREAMS.items()
    )


def test_every_format_reaches_the_receiver_as_its_provider_sends_it(pipeline: Pipeline) -> None:
    from inbound.delivery.signing import verify

    config = pipeline.configure(streams_toml(pipeline))
    pipeline.start()
    queue_id = send(config, "bounce@example.org", [f"{name}@in.test" for name in STREAMS], MESSAGE)
    hits = {
        name: wait_for(lambda n=name: pipeline.receiver.on("/" + n), 60, f"the POST to {name}")[0] for name in STREAMS
    }

    for name, hit in hits.items():
        assert hit.headers["webhook-id"] == f"{queue_id}-{name}"
        assert verify(SECRET, hit.body, hit.headers), name
    assert hits["plain"].headers["content-type"] == hits["pm"].headers["content-type"] == "application/json"
    for name in ("mg", "sg", "sgraw"):
        assert hits[name].headers["content-type"].startswith("multipart/form-data; boundary="), name

    for name in ("pm", "mg", "sg", "sgraw"):
        payload_format = STREAMS[name][0]
        message = anymail_message(payload_format, hits[name].headers["content-type"], hits[name].body)
        assert message.from_email is not None
        assert message.from_email.addr_spec == "zoe@example.org", name
        assert message.subject == "Résumé attached", name
        assert message.envelope_recipient == f"{name}@in.test", name
        assert message.text is not None
        assert message.text.startswith("Here is my résumé."), name
        assert [a.get_content_bytes() for a in message.attachments] == [PDF], name
        assert message.content_id_map["logo@example.org"].get_content_bytes() == PNG, name

    # include_raw: the message as received, our Received: header on top; and the same bytes from the bus.
    raw = base64.b64decode(hits["plain"].json["raw"]["content"])
    assert raw.endswith(MESSAGE)
    assert raw.startswith(b"Received: ")
    assert hits["plain"].json["raw"]["size"] == len(raw)
    for message_id in (queue_id, f"{queue_id}-mg"):
        fetched = subprocess.run(
            [*INBOUND, "message", "raw", message_id, "--config", str(config)], capture_output=True, cwd=ROOT, check=True
        )
        assert fetched.stdout == raw
    missing = run_cli("message", "raw", "01JD0000000000000000000001", config=config, check=False)
    assert missing.returncode != 0
    assert "no message with queue id 01JD0000000000000000000001 on the bus" in missing.stderr

    # The activity log shows a form-data body by its fields.
    pipeline.wait_status(f"{queue_id}-mg", "delivered")
    shown = json.loads(run_cli("activity", "show", f"{queue_id}-mg", "--json", config=config).stdout)
    assert shown["payload"]["subject"] == "Résumé attached"
    assert shown["payload"]["attachment-2"] == f"<file 'résumé.pdf', application/pdf, {len(PDF)} bytes>"

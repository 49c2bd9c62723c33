"""Feed a POST exactly as it arrives (Content-Type + body bytes) to django-anymail's inbound view.

django-anymail is the best-known open-source parser of the Postmark, Mailgun
and SendGrid inbound webhooks; if it reads our POST into the message we sent,
a customer's code written against those providers reads it too. Django is
configured here in-process with the minimum the views need (no database, no
URLconf): a request from Django's RequestFactory goes through the view's own
validation (basic auth, Mailgun's signature) and its parser, and the
``inbound`` signal hands over the parsed message.
"""

from __future__ import annotations

import base64
import warnings
from typing import Any

import django
from django.conf import settings

BASIC_AUTH = "hook:secret-password"  # what a customer puts in the webhook URL, as anymail recommends
MAILGUN_KEY = "key-mailgun-signing-key-for-tests"

if not settings.configured:
    settings.configure(
        SECRET_KEY="tests-only",
        ALLOWED_HOSTS=["testserver"],
        ANYMAIL={"WEBHOOK_SECRET": BASIC_AUTH, "MAILGUN_WEBHOOK_SIGNING_KEY": MAILGUN_KEY},
        USE_TZ=True,
    )
    django.setup()

from anymail.exceptions import (  # noqa: E402 -- needs the settings above
    AnymailNotSupportedWarning,
    AnymailWebhookValidationFailure,
)
from anymail.inbound import AnymailInboundMessage  # noqa: E402
from anymail.signals import AnymailInboundEvent, inbound  # noqa: E402
from anymail.webhooks.mailgun import MailgunInboundWebhookView  # noqa: E402
from anymail.webhooks.postmark import PostmarkInboundWebhookView  # noqa: E402
from anymail.webhooks.sendgrid import SendGridInboundWebhookView  # noqa: E402
from django.test import RequestFactory  # noqa: E402

__all__ = ["AnymailWebhookValidationFailure", "anymail_event", "anymail_message"]

VIEWS: dict[str, Any] = {
    "postmark": PostmarkInboundWebhookView,
    "mailgun": MailgunInboundWebhookView,
    "sendgrid": SendGridInboundWebhookView,
}


def anymail_event(payload_format: str, content_type: str, body: bytes) -> AnymailInboundEvent:
    """The event anymail's *payload_format* inbound view makes of our POST; fails unless it answers 200."""
    events: list[AnymailInboundEvent] = []

    def receive(sender: object, event: AnymailInboundEvent, esp_name: str, **kwargs: object) -> None:
        events.append(event)

    auth = "Basic " + base64.b64encode(BASIC_AUTH.encode()).decode()
    request = RequestFactory().generic("POST", "/anymail/inbound/", body, content_type, HTTP_AUTHORIZATION=auth)
    inbound.connect(receive)
    try:
        with warnings.catch_warnings():
            # anymail no longer tests its SendGrid support against a live account; the parser is still there.
            warnings.simplefilter("ignore", AnymailNotSupportedWarning)
            response = VIEWS[payload_format].as_view()(request)
    finally:
        inbound.disconnect(receive)
    assert response.status_code == 200, response.content
    assert len(events) == 1
    return events[0]


def anymail_message(payload_format: str, content_type: str, body: bytes) -> AnymailInboundMessage:
    message = anymail_event(payload_format, content_type, body).message
    assert message is not None
    return message
